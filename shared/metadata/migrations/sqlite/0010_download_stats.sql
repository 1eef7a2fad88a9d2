-- Download statistics per artifact, written in batches (never one write per download). Rows
-- go with their artifact (deleted with it; ids are never reused).
CREATE TABLE download_stats (
    artifact_id  INTEGER PRIMARY KEY NOT NULL,
    downloads    INTEGER NOT NULL,
    last_ms      INTEGER NOT NULL,
    last_by      TEXT    NOT NULL
);
