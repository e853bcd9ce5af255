-- Kassatellen → Eitje: what a source lists (every POS revenue group, with or without sales), so the
-- mapping gate can name what is unmapped (CLI, activity log, health view) and the CLI can show it.
CREATE TABLE tillflow.source_items (
    account_id  bigint      NOT NULL REFERENCES tillflow.accounts (id) ON DELETE CASCADE,
    kind        text        NOT NULL,                  -- revenue_group, location, employee…
    key         text        NOT NULL,
    name        text        NOT NULL DEFAULT '',
    seen_at     timestamptz NOT NULL DEFAULT now(),    -- the last time the source listed it
    PRIMARY KEY (account_id, kind, key)
);
