-- MplusKASSA → Shiftbase: clock times (canonical timesheets keyed by the POS shift number), the delivery
-- memory of updated objects, and import notifications sent once a day per address and problem.
CREATE TABLE tillflow.timesheets (
    account_id       bigint      NOT NULL REFERENCES tillflow.accounts (id) ON DELETE CASCADE,
    shift_number     text        NOT NULL,                 -- the POS's own key: open → closed → corrected
    employee_number  text        NOT NULL,
    user_id          text        NOT NULL,                 -- the mapped Shiftbase user
    branch_number    text        NOT NULL,
    business_date    date        NOT NULL,
    cost_center      text,
    department       text        NOT NULL,                 -- a department id, or 'auto' (resolved at delivery)
    clock_in         timestamptz NOT NULL,
    clock_out        timestamptz,                          -- NULL while the shift is open
    ended            boolean     NOT NULL,
    payload_hash     text        NOT NULL,
    run_id           text,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, shift_number)
);
CREATE INDEX timesheets_account_day ON tillflow.timesheets (account_id, business_date);

ALTER TABLE tillflow.object_delivery DROP CONSTRAINT IF EXISTS object_delivery_status_check;
ALTER TABLE tillflow.object_delivery ADD CONSTRAINT object_delivery_status_check
    CHECK (status IN ('created', 'updated', 'exists', 'failed'));

CREATE TABLE tillflow.notifications (
    account_id     bigint      NOT NULL REFERENCES tillflow.accounts (id) ON DELETE CASCADE,
    address        text        NOT NULL,
    problem        text        NOT NULL,                   -- a stable key: 'unmapped employee 1005', 'call failed'…
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    last_sent_at   timestamptz NOT NULL DEFAULT now(),
    cleared_at     timestamptz,                            -- the run after it went away; it comes back as new
    PRIMARY KEY (account_id, address, problem)
);
