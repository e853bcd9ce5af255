-- Platform: state per account and flow, sharded runs, delivery memory of the target's own ids,
-- create-if-absent deliveries. Applied once by tillflow.store.migrate.

-- accounts.status becomes the worst status over the account's flows (flow_state is the truth)
ALTER TABLE tillflow.accounts DROP CONSTRAINT IF EXISTS accounts_status_check;
UPDATE tillflow.accounts SET status = 'failing' WHERE status = 'error';
ALTER TABLE tillflow.accounts ADD CONSTRAINT accounts_status_check
    CHECK (status IN ('ok', 'needs_mapping', 'auth_failed', 'failing', 'paused'));

-- One row per account and flow: one flow's status never overwrites another's.
CREATE TABLE tillflow.flow_state (
    account_id        bigint      NOT NULL REFERENCES tillflow.accounts (id) ON DELETE CASCADE,
    flow              text        NOT NULL,
    status            text        NOT NULL DEFAULT 'ok'
                      CHECK (status IN ('ok', 'needs_mapping', 'auth_failed', 'failing', 'paused')),
    status_detail     text        NOT NULL DEFAULT '',
    last_success_at   timestamptz,                      -- when the last successful run finished
    last_due_at       timestamptz,                      -- the due time that run served (catch-up: never twice)
    last_window_start date,
    last_window_end   date,
    last_run_id       text,
    cursor            jsonb,                            -- where a source pages by cursor
    backfill_due_at   timestamptz,                      -- activation backfill: when it becomes due
    backfill_done_at  timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, flow)
);

-- The activity row doubles as the run's work list: plan writes one 'pending' row per account and flow
-- with its shard; a shard (and its retry) runs the rows of its shard that did not finish.
ALTER TABLE tillflow.activity DROP CONSTRAINT IF EXISTS activity_status_check;
ALTER TABLE tillflow.activity ADD CONSTRAINT activity_status_check
    CHECK (status IN ('pending', 'running', 'success', 'failed', 'needs_mapping', 'skipped', 'partial'));
ALTER TABLE tillflow.activity
    ADD COLUMN shard          integer,
    ADD COLUMN mode           text,
    ADD COLUMN force_delivery boolean NOT NULL DEFAULT false,
    ADD COLUMN due_at         timestamptz,
    ADD COLUMN retryable      boolean NOT NULL DEFAULT true,   -- false: a permanent error, a retry would not help
    ADD COLUMN failed         integer NOT NULL DEFAULT 0;      -- rows the target refused
CREATE INDEX activity_run_shard ON tillflow.activity (run_id, shard);

-- keyed upsert remembers the target's own id per row (a team day, a timesheet…)
ALTER TABLE tillflow.delivery_state ADD COLUMN target_id text;

-- create-if-absent deliveries (orders, products by SKU): what exists at the target, under which id
CREATE TABLE tillflow.object_delivery (
    account_id    bigint      NOT NULL REFERENCES tillflow.accounts (id) ON DELETE CASCADE,
    flow          text        NOT NULL,
    object_key    text        NOT NULL,
    payload_hash  text        NOT NULL,
    target_id     text,
    status        text        NOT NULL CHECK (status IN ('created', 'exists', 'failed')),
    detail        text        NOT NULL DEFAULT '',
    attempts      integer     NOT NULL DEFAULT 1,
    run_id        text,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, flow, object_key)
);
