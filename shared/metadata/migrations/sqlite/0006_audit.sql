-- The audit trail: who changed what, when, from where, never a secret. Each entry carries the
-- hash of the one before and its own (SHA-256 over the previous hash and every field), so an
-- entry edited, inserted or removed anywhere but at the end breaks the chain
-- (`stowage audit verify`).

CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY NOT NULL,
    at_ms      INTEGER NOT NULL,
    node       TEXT    NOT NULL,
    actor      TEXT    NOT NULL,
    source     TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    target     TEXT    NOT NULL,
    detail     TEXT    NOT NULL,
    prev_hash  TEXT    NOT NULL,
    hash       TEXT    NOT NULL
);
