-- The ledger outbox: one row per posting (an entry, or the reversal of one), claimed before the call.
-- States: claimed → sent → confirmed; sent → unknown (the answer was lost) → reconciled (found at the
-- target by its posting key) or back to claimed (certainly absent); failed (refused for good).
-- A source event that changes after posting gets a reversal plus a new revision, never an edit;
-- superseded marks a revision whose reversal is confirmed (or that was never sent).
CREATE TABLE tillflow.outbox (
    id              bigserial   PRIMARY KEY,
    account_id      bigint      NOT NULL REFERENCES tillflow.accounts (id) ON DELETE CASCADE,
    flow            text        NOT NULL,
    event_key       text        NOT NULL,               -- the source event, e.g. order:123
    revision        integer     NOT NULL,               -- 1, 2, …: a new one when the event changes
    posting_key     text        NOT NULL,               -- deterministic; written to the target's piece_number
    kind            text        NOT NULL CHECK (kind IN ('entry', 'reversal')),
    reverses_id     bigint      REFERENCES tillflow.outbox (id),
    reversed_by_id  bigint      REFERENCES tillflow.outbox (id),
    payload         jsonb       NOT NULL,
    payload_hash    text        NOT NULL,
    state           text        NOT NULL DEFAULT 'claimed'
                    CHECK (state IN ('claimed', 'sent', 'confirmed', 'unknown', 'reconciled', 'failed', 'superseded')),
    target_ref      text,                               -- the target's own id of the posted entry
    attempts        integer     NOT NULL DEFAULT 0,
    error           text        NOT NULL DEFAULT '',
    claimed_by      text,                               -- the run that last worked on it
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, flow, posting_key)
);
CREATE INDEX outbox_due ON tillflow.outbox (account_id, flow, id) WHERE state IN ('claimed', 'unknown');
CREATE INDEX outbox_event ON tillflow.outbox (account_id, flow, event_key, revision);
