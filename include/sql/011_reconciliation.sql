-- Reconciliation: per account and business day, what tillflow holds from the POS (its canonical copy)
-- against what the target holds (read back from the target's API). One row per account, day and check;
-- drift beyond one cent is an alert (mail to the integration's owners) and an activity row ('drift').
CREATE TABLE tillflow.reconciliation (
    id             bigserial     PRIMARY KEY,
    run_id         text          NOT NULL,             -- the reconcile run (DAG run id, or cli__<timestamp>)
    account_id     bigint        NOT NULL REFERENCES tillflow.accounts (id) ON DELETE CASCADE,
    integration    text          NOT NULL,
    kind           text          NOT NULL,             -- revenue | ledger: what was compared
    business_date  date          NOT NULL,
    pos_total      numeric(14,2) NOT NULL,             -- tillflow's canonical total for the day
    target_total   numeric(14,2) NOT NULL,             -- what the target holds for the day
    diff           numeric(14,2) NOT NULL,             -- target − POS
    status         text          NOT NULL CHECK (status IN ('ok', 'drift', 'explained')),
    detail         text          NOT NULL DEFAULT '',
    checked_at     timestamptz   NOT NULL DEFAULT now(),
    UNIQUE (run_id, account_id, kind, business_date)
);
CREATE INDEX reconciliation_account_day ON tillflow.reconciliation (account_id, business_date, checked_at DESC);
CREATE INDEX reconciliation_drift ON tillflow.reconciliation (checked_at) WHERE status = 'drift';

-- The activity log takes a reconcile row per account and run: status 'drift' joins the statuses the
-- constraint allows, whatever other migrations added to it (the list is extended, never rewritten).
DO $$
DECLARE
    def text;
BEGIN
    SELECT pg_get_constraintdef(oid) INTO def FROM pg_constraint
     WHERE conrelid = 'tillflow.activity'::regclass AND conname = 'activity_status_check';
    IF def IS NOT NULL AND position('''drift''' IN def) = 0 AND position('ARRAY[' IN def) > 0 THEN
        ALTER TABLE tillflow.activity DROP CONSTRAINT activity_status_check;
        EXECUTE 'ALTER TABLE tillflow.activity ADD CONSTRAINT activity_status_check '
                || replace(def, 'ARRAY[', 'ARRAY[''drift''::text, ');
    END IF;
END $$;
