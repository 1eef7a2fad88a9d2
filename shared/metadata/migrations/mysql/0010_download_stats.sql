-- Download statistics per artifact, written in batches (never one write per download). Rows
-- go with their artifact (deleted with it; ids are never reused).
CREATE TABLE download_stats (
    artifact_id  BIGINT        NOT NULL PRIMARY KEY,
    downloads    BIGINT        NOT NULL,
    last_ms      BIGINT        NOT NULL,
    last_by      VARCHAR(255)  NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
