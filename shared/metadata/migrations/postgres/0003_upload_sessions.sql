-- Presigned upload sessions: a client sends its bytes straight to object storage, then
-- completes the session; until then (or until it expires) the session is kept here, so any
-- node can complete, abort or clean it up.

CREATE TABLE upload_sessions (
    id                   VARCHAR(64)  PRIMARY KEY NOT NULL,
    repo                 TEXT         NOT NULL,
    path                 TEXT         NOT NULL,
    sha256               VARCHAR(64)  NOT NULL,
    size                 BIGINT       NOT NULL,
    multipart_upload_id  TEXT,
    created_by           TEXT         NOT NULL,
    created_ms           BIGINT       NOT NULL,
    expires_ms           BIGINT       NOT NULL
);
CREATE INDEX upload_sessions_expires ON upload_sessions (expires_ms);
