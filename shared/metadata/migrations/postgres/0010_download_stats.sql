-- Download statistics per artifact, written in batches (never one write per download). Rows
-- go with their artifact (deleted with it; ids are never reused).
CREATE TABLE download_stats (
    artifact_id  BIGINT PRIMARY KEY NOT NULL,
    downloads    BIGINT NOT NULL,
    last_ms      BIGINT NOT NULL,
    last_by      TEXT    NOT NULL
);
