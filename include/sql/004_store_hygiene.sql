-- Store hygiene: raw landing deduplicated by a unique key (not check-then-insert), indexes for the
-- retention the tillflow_maintenance DAG runs (no table-wide deletes per batch any more).

DELETE FROM tillflow.raw_landing r
 USING tillflow.raw_landing keep
 WHERE r.account_id = keep.account_id AND r.flow = keep.flow AND r.window_start = keep.window_start
   AND r.window_end = keep.window_end AND r.sha256 = keep.sha256 AND r.id > keep.id;
CREATE UNIQUE INDEX raw_landing_once ON tillflow.raw_landing (account_id, flow, window_start, window_end, sha256);
DROP INDEX IF EXISTS tillflow.raw_landing_account_window;  -- the unique index serves the same lookups

CREATE INDEX raw_landing_fetched_at ON tillflow.raw_landing (fetched_at);
CREATE INDEX batches_created_at ON tillflow.batches (created_at);
CREATE INDEX activity_started_at ON tillflow.activity (started_at);
CREATE INDEX rejects_created_at ON tillflow.rejects (created_at);
