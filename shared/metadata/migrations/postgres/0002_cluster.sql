-- Cluster coordination: leased locks (also the primary-node lease) and node membership.
-- A lock whose lease has expired belongs to nobody; a node that died stops renewing.

CREATE TABLE locks (
    name        TEXT    PRIMARY KEY NOT NULL,
    owner       TEXT    NOT NULL,
    expires_ms  BIGINT  NOT NULL
);

CREATE TABLE nodes (
    id            TEXT    PRIMARY KEY NOT NULL,
    address       TEXT    NOT NULL,
    version       TEXT    NOT NULL,
    started_ms    BIGINT  NOT NULL,
    heartbeat_ms  BIGINT  NOT NULL
);

-- Runs of cluster-wide tasks (garbage collection, balancing): who ran what, and when.
CREATE TABLE task_runs (
    id           BIGSERIAL PRIMARY KEY,
    task         TEXT    NOT NULL,
    node         TEXT    NOT NULL,
    started_ms   BIGINT  NOT NULL,
    finished_ms  BIGINT,
    outcome      TEXT
);
CREATE INDEX task_runs_started ON task_runs (task, started_ms);
