-- Presigned upload sessions: a client sends its bytes straight to object storage, then
-- completes the session; until then (or until it expires) the session is kept here, so any
-- node can complete, abort or clean it up.

CREATE TABLE upload_sessions (
    id                   VARCHAR(64)   CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY NOT NULL,
    repo                 VARCHAR(255)  NOT NULL,
    path                 TEXT          NOT NULL,
    sha256               VARCHAR(64)   CHARACTER SET ascii NOT NULL,
    size                 BIGINT        NOT NULL,
    multipart_upload_id  TEXT,
    created_by           VARCHAR(255)  NOT NULL,
    created_ms           BIGINT        NOT NULL,
    expires_ms           BIGINT        NOT NULL,
    INDEX upload_sessions_expires (expires_ms)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
