-- The shared approval queue. Each proxy keeps its own ledger; the columns
-- *_instance name the proxy whose ledger holds a record, *_record its seq
-- there.

CREATE TABLE approvals (
    id               text PRIMARY KEY,
    kind             text NOT NULL,
    status           text NOT NULL,
    app              text NOT NULL,
    action           text NOT NULL,
    created_at       timestamptz NOT NULL, -- microseconds; the exact instant is in data
    expires_at       timestamptz NOT NULL,
    token_id         text NOT NULL DEFAULT '',
    -- The approval as JSON, byte for byte what approvals.Approval encodes
    -- (bytea, not jsonb: jsonb refuses the \u0000 a held body may carry).
    -- Its consumed_record and uses are not kept here: the columns below
    -- own them, since Consume and UseOverride change them by conditional
    -- updates that must not rewrite the document.
    data             bytea NOT NULL,
    request_instance text NOT NULL,
    request_record   bigint NOT NULL,
    max_uses         integer NOT NULL DEFAULT 0,
    uses             integer NOT NULL DEFAULT 0,
    -- Set by Consume's claim, before its record exists; consumed_record
    -- once the record is written (NULL in between, or if that write-back
    -- failed). consumed_claim is the claim's nonce.
    consumed_instance text,
    consumed_token    text,
    consumed_claim    text,
    consumed_record   bigint,
    consumed_at       timestamptz,
    -- The last change: its nonce tells a commit whose answer was lost
    -- from one that did not happen; changed_at feeds Watch's poll.
    last_change      text NOT NULL,
    last_instance    text NOT NULL,
    last_record      bigint NOT NULL,
    changed_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (uses >= 0),
    CHECK ((consumed_instance IS NULL) = (consumed_claim IS NULL)
       AND (consumed_token IS NULL) = (consumed_claim IS NULL))
);

-- The desk's lists by status, oldest first.
CREATE INDEX approvals_status_created ON approvals (status, created_at, id);
-- Expiry sweeps and the pending queue read only what is stored pending.
CREATE INDEX approvals_pending_expiry ON approvals (expires_at) WHERE status = 'pending';
-- Watch's poll for changes a notification missed.
CREATE INDEX approvals_changed ON approvals (changed_at);

-- Every token that let a request through: a second guard beside
-- approvals.consumed_*, as in the embedded store.
CREATE TABLE tokens_used (
    token_id    text PRIMARY KEY,
    approval_id text NOT NULL REFERENCES approvals (id),
    instance    text NOT NULL,
    claim       text NOT NULL,
    record      bigint,
    used_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Each passkey's highest signature counter, raised in the transaction of
-- the decision that shows it.
CREATE TABLE passkey_counters (
    credential_id text PRIMARY KEY,
    counter       bigint NOT NULL CHECK (counter >= 0 AND counter <= 4294967295),
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
