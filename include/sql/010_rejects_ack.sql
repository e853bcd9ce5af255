-- Rejects can be acknowledged from the health view: an acknowledged reject is kept (with who and when)
-- but no longer counts as open.
ALTER TABLE tillflow.rejects
    ADD COLUMN acknowledged_at timestamptz,
    ADD COLUMN acknowledged_by text;
CREATE INDEX rejects_open ON tillflow.rejects (account_id, flow) WHERE acknowledged_at IS NULL;
