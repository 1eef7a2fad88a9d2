-- Cluster coordination: leased locks (also the primary-node lease) and node membership.
-- A lock whose lease has expired belongs to nobody; a node that died stops renewing.

CREATE TABLE locks (
    name        VARCHAR(255)  CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY NOT NULL,
    owner       VARCHAR(255)  NOT NULL,
    expires_ms  BIGINT        NOT NULL
) ENGINE = InnoDB;

CREATE TABLE nodes (
    id            VARCHAR(255)  PRIMARY KEY NOT NULL,
    address       VARCHAR(255)  NOT NULL,
    version       VARCHAR(64)   NOT NULL,
    started_ms    BIGINT        NOT NULL,
    heartbeat_ms  BIGINT        NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Runs of cluster-wide tasks (garbage collection, balancing): who ran what, and when.
CREATE TABLE task_runs (
    id           BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
    task         VARCHAR(64)   NOT NULL,
    node         VARCHAR(255)  NOT NULL,
    started_ms   BIGINT        NOT NULL,
    finished_ms  BIGINT,
    outcome      TEXT,
    INDEX task_runs_started (task, started_ms)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
