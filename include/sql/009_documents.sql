-- CCV SalesPOS → Visma eAccounting: the canonical copy of outgoing documents (orders), keyed per account,
-- flow and document key; delivered create-if-absent (tillflow.object_delivery remembers the target's id).
CREATE TABLE tillflow.documents (
    account_id    bigint      NOT NULL REFERENCES tillflow.accounts (id) ON DELETE CASCADE,
    flow          text        NOT NULL,
    doc_key       text        NOT NULL,                 -- order:<number>
    payload       jsonb       NOT NULL,
    payload_hash  text        NOT NULL,
    run_id        text,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, flow, doc_key)
);
