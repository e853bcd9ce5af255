-- Rotating OAuth refresh tokens (Pennylane, Visma eAccounting): the newest one per Airflow connection,
-- encrypted (Fernet), swapped atomically (compare-and-swap on the hash of the one it replaces). The
-- connection keeps the token the customer authorised with; this table keeps every rotation after it.
CREATE TABLE tillflow.oauth_tokens (
    conn_id       text        PRIMARY KEY,
    token_enc     bytea       NOT NULL,
    token_sha256  text        NOT NULL,
    rotations     integer     NOT NULL DEFAULT 1,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
