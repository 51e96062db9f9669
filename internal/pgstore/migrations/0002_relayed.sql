-- Decisions and override requests a hub took for the fleet. The hub keeps
-- no ledger, so it decides nothing itself: it queues what an approver
-- posted, and a proxy takes it (the one holding the request first), checks
-- it against its own principals, records it in its own ledger as if it had
-- been posted there, and writes the answer back for the hub to give.

CREATE TABLE relayed (
    id               bigserial PRIMARY KEY,
    kind             text NOT NULL CHECK (kind IN ('decision', 'override')),
    approval_id      text,        -- a decision's approval; NULL for an override request
    body             bytea NOT NULL, -- the JSON the approver posted, as posted
    hub              text NOT NULL,  -- which hub took it
    submitted_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    claimed_instance text,
    claimed_at       timestamptz,
    result           bytea,          -- the proxy's answer (pgstore.RelayResult as JSON)
    done_at          timestamptz,
    CHECK ((kind = 'decision') = (approval_id IS NOT NULL)),
    CHECK ((claimed_instance IS NULL) = (claimed_at IS NULL)),
    CHECK ((result IS NULL) = (done_at IS NULL))
);

-- What the proxies look for: the rows not answered yet.
CREATE INDEX relayed_open ON relayed (id) WHERE done_at IS NULL;
