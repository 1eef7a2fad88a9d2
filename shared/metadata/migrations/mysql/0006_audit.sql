-- The audit trail: who changed what, when, from where, never a secret. Each entry carries the
-- hash of the one before and its own (SHA-256 over the previous hash and every field), so an
-- entry edited, inserted or removed anywhere but at the end breaks the chain
-- (`stowage audit verify`).

CREATE TABLE audit_log (
    seq        BIGINT        PRIMARY KEY NOT NULL,
    at_ms      BIGINT        NOT NULL,
    node       VARCHAR(255)  NOT NULL,
    actor      VARCHAR(255)  NOT NULL,
    source     VARCHAR(255)  NOT NULL,
    action     VARCHAR(64)   NOT NULL,
    target     TEXT          NOT NULL,
    detail     TEXT          NOT NULL,
    prev_hash  CHAR(64)      CHARACTER SET ascii NOT NULL,
    hash       CHAR(64)      CHARACTER SET ascii NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
