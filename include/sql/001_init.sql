-- tillflow schema, version 1: accounts, mappings, raw landing, canonical revenue, rejects,
-- activity log, delivery state. Applied once by tillflow.store.migrate (recorded in schema_migrations).

CREATE TABLE tillflow.accounts (
    id              bigserial PRIMARY KEY,
    integration     text        NOT NULL,               -- dag id, e.g. ajour_to_planday
    account_key     text        NOT NULL,               -- the customer's key within the integration
    name            text        NOT NULL,
    conn_id         text        NOT NULL,               -- Airflow connection holding the credentials
    target_conn_id  text,                               -- Airflow connection of the target (if separate)
    settings        jsonb       NOT NULL DEFAULT '{}',  -- tillflow.specs.AccountSettings
    status          text        NOT NULL DEFAULT 'ok'
                    CHECK (status IN ('ok', 'needs_mapping', 'auth_failed', 'error')),
    status_detail   text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (integration, account_key),
    CHECK (account_key ~ '^[a-z0-9][a-z0-9_-]{0,62}$')
);

CREATE TABLE tillflow.mappings (
    account_id  bigint NOT NULL REFERENCES tillflow.accounts (id) ON DELETE CASCADE,
    kind        text   NOT NULL,                        -- location, revenue_group, employee…
    source_key  text   NOT NULL,
    target_key  text,                                   -- NULL = explicitly inactive
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, kind, source_key)
);

-- Every fetched payload, immutable, so a mapping change can be replayed without calling the POS.
CREATE TABLE tillflow.raw_landing (
    id            bigserial PRIMARY KEY,
    account_id    bigint      NOT NULL REFERENCES tillflow.accounts (id) ON DELETE CASCADE,
    source        text        NOT NULL,
    flow          text        NOT NULL,
    window_start  date        NOT NULL,
    window_end    date        NOT NULL,
    request       jsonb       NOT NULL,                 -- method, path, params: masked, no credentials
    content_type  text        NOT NULL,
    body_gz       bytea       NOT NULL,
    sha256        text        NOT NULL,
    run_id        text,
    fetched_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX raw_landing_account_window ON tillflow.raw_landing (account_id, flow, window_start, window_end);

-- Canonical revenue at target level: what the target should show per key, day (and hour).
-- No foreign key on purpose: PostgreSQL checks one per inserted row, which halves bulk-load speed
-- (bench/). Store.upsert_revenue_many checks a batch's account ids in one query instead, and the
-- trigger below deletes an account's revenue with the account.
CREATE TABLE tillflow.revenue (
    account_id     bigint        NOT NULL,
    target_key     text          NOT NULL,
    business_date  date          NOT NULL,
    hour           smallint      NOT NULL DEFAULT -1,   -- -1 = the whole day
    amount         numeric(14,2) NOT NULL,
    origin         text          NOT NULL CHECK (origin IN ('integration', 'manual', 'excel')),
    run_id         text,
    updated_at     timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, target_key, business_date, hour)
);

CREATE FUNCTION tillflow.delete_account_revenue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM tillflow.revenue r USING old_accounts o WHERE r.account_id = o.id;
    RETURN NULL;
END $$;
CREATE TRIGGER accounts_delete_revenue AFTER DELETE ON tillflow.accounts
    REFERENCING OLD TABLE AS old_accounts FOR EACH STATEMENT EXECUTE FUNCTION tillflow.delete_account_revenue();

-- What was last sent to the target for each canonical row.
CREATE TABLE tillflow.delivery_state (
    account_id     bigint        NOT NULL REFERENCES tillflow.accounts (id) ON DELETE CASCADE,
    target_key     text          NOT NULL,
    business_date  date          NOT NULL,
    hour           smallint      NOT NULL DEFAULT -1,
    amount         numeric(14,2) NOT NULL,
    status         text          NOT NULL CHECK (status IN ('delivered', 'skipped', 'failed')),
    detail         text          NOT NULL DEFAULT '',
    attempts       integer       NOT NULL DEFAULT 1,
    run_id         text,
    updated_at     timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, target_key, business_date, hour)
);

-- The hand-off from map to upsert: one batch of mapped rows per account and run (small XComs: ids only).
CREATE TABLE tillflow.batches (
    id            bigserial PRIMARY KEY,
    account_id    bigint      NOT NULL REFERENCES tillflow.accounts (id) ON DELETE CASCADE,
    flow          text        NOT NULL,
    run_id        text,
    window_start  date        NOT NULL,
    window_end    date        NOT NULL,
    rows          jsonb       NOT NULL,                 -- [[target_key, date, hour, amount], ...]
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tillflow.rejects (
    id          bigserial PRIMARY KEY,
    account_id  bigint      NOT NULL REFERENCES tillflow.accounts (id) ON DELETE CASCADE,
    flow        text        NOT NULL,
    landing_id  bigint      REFERENCES tillflow.raw_landing (id) ON DELETE SET NULL,
    ref         text        NOT NULL DEFAULT '',
    reason      text        NOT NULL,
    payload     jsonb       NOT NULL,
    run_id      text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX rejects_once ON tillflow.rejects (account_id, flow, landing_id, ref, reason) NULLS NOT DISTINCT;

-- One row per account per run and flow: what support reads when a customer asks "why is Tuesday empty".
CREATE TABLE tillflow.activity (
    id            bigserial PRIMARY KEY,
    dag_id        text        NOT NULL,
    run_id        text        NOT NULL,
    account_id    bigint      NOT NULL REFERENCES tillflow.accounts (id) ON DELETE CASCADE,
    flow          text        NOT NULL,
    window_start  date,
    window_end    date,
    status        text        NOT NULL DEFAULT 'running'
                  CHECK (status IN ('running', 'success', 'failed', 'needs_mapping', 'skipped', 'partial')),
    fetched       integer     NOT NULL DEFAULT 0,
    upserted      integer     NOT NULL DEFAULT 0,
    unchanged     integer     NOT NULL DEFAULT 0,
    kept          integer     NOT NULL DEFAULT 0,      -- existing values the write mode kept
    rejected      integer     NOT NULL DEFAULT 0,
    delivered     integer     NOT NULL DEFAULT 0,
    skipped       integer     NOT NULL DEFAULT 0,      -- declined by the target (e.g. Planday 409)
    retries       integer     NOT NULL DEFAULT 0,      -- HTTP retries spent
    detail        text        NOT NULL DEFAULT '',
    error         text        NOT NULL DEFAULT '',
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    UNIQUE (run_id, account_id, flow)
);
CREATE INDEX activity_account_time ON tillflow.activity (account_id, started_at DESC);
