-- The dashboard's sign-ins, shared by a fleet's hubs so that any hub behind
-- a load balancer serves any signed-in browser. Session ids and used
-- sign-in challenges are kept as SHA-256: whoever reads the database
-- cannot take over a session.

CREATE TABLE desk_keys (
    name text PRIMARY KEY,
    key  bytea NOT NULL
);

CREATE TABLE desk_sessions (
    id_sha256  text PRIMARY KEY,
    principal  text NOT NULL,
    csrf       text NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX desk_sessions_expiry ON desk_sessions (expires_at);

CREATE TABLE desk_signins_used (
    challenge_sha256 text PRIMARY KEY,
    expires_at       timestamptz NOT NULL
);
CREATE INDEX desk_signins_used_expiry ON desk_signins_used (expires_at);

CREATE TABLE desk_challenges (
    session_sha256 text NOT NULL REFERENCES desk_sessions (id_sha256) ON DELETE CASCADE,
    value          text NOT NULL,
    principal      text NOT NULL,
    approval       text NOT NULL,
    decision       text NOT NULL,
    signed_at      text NOT NULL,
    expires_at     timestamptz NOT NULL,
    PRIMARY KEY (session_sha256, value)
);
