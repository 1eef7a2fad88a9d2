-- Stowage metadata, MySQL 8 / Aurora MySQL (MariaDB 10.11 in tests). Times are milliseconds
-- since the Unix epoch. Paths compare byte-wise (utf8mb4_bin): folder queries rely on it.
-- InnoDB keys are limited to 3072 bytes, so (repo_key, path) is made unique through a stored
-- hash of both, and paths are indexed by a prefix for range scans.

CREATE TABLE repositories (
    repo_key      VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY NOT NULL,
    rclass        VARCHAR(32)  NOT NULL,
    package_type  VARCHAR(64)  NOT NULL,
    description   TEXT         NOT NULL,
    config        TEXT         NOT NULL,
    created_ms    BIGINT       NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE binaries (
    sha256      CHAR(64)  CHARACTER SET ascii PRIMARY KEY NOT NULL,
    sha1        CHAR(40)  CHARACTER SET ascii NOT NULL,
    md5         CHAR(32)  CHARACTER SET ascii NOT NULL,
    size        BIGINT    NOT NULL,
    created_ms  BIGINT    NOT NULL,
    INDEX binaries_sha1 (sha1),
    INDEX binaries_md5 (md5)
) ENGINE = InnoDB;

CREATE TABLE artifacts (
    id           BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
    repo_key     VARCHAR(64)   CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    path         VARCHAR(1024) NOT NULL,
    path_key     BINARY(32)    AS (UNHEX(SHA2(CONCAT(repo_key, '/', path), 256))) STORED,
    sha256       CHAR(64)      CHARACTER SET ascii NOT NULL,
    size         BIGINT        NOT NULL,
    created_ms   BIGINT        NOT NULL,
    created_by   VARCHAR(255)  NOT NULL,
    modified_ms  BIGINT        NOT NULL,
    modified_by  VARCHAR(255)  NOT NULL,
    UNIQUE KEY artifacts_path (path_key),
    INDEX artifacts_repo_path (repo_key, path(700)),
    INDEX artifacts_sha256 (sha256),
    FOREIGN KEY (repo_key) REFERENCES repositories (repo_key),
    FOREIGN KEY (sha256) REFERENCES binaries (sha256)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE artifact_properties (
    artifact_id  BIGINT        NOT NULL,
    name         VARCHAR(255)  NOT NULL,
    value        VARCHAR(255)  NOT NULL,
    PRIMARY KEY (artifact_id, name, value),
    INDEX artifact_properties_name_value (name, value),
    FOREIGN KEY (artifact_id) REFERENCES artifacts (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Deleted artifacts, restorable until the trash is emptied or their retention ends.
CREATE TABLE trash (
    id           BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
    repo_key     VARCHAR(64)   CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    path         VARCHAR(1024) NOT NULL,
    path_key     BINARY(32)    AS (UNHEX(SHA2(CONCAT(repo_key, '/', path), 256))) STORED,
    sha256       CHAR(64)      CHARACTER SET ascii NOT NULL,
    size         BIGINT        NOT NULL,
    created_ms   BIGINT        NOT NULL,
    created_by   VARCHAR(255)  NOT NULL,
    properties   TEXT          NOT NULL,
    deleted_ms   BIGINT        NOT NULL,
    deleted_by   VARCHAR(255)  NOT NULL,
    UNIQUE KEY trash_path (path_key),
    INDEX trash_repo_path (repo_key, path(700)),
    INDEX trash_sha256 (sha256),
    INDEX trash_deleted_ms (deleted_ms),
    FOREIGN KEY (repo_key) REFERENCES repositories (repo_key),
    FOREIGN KEY (sha256) REFERENCES binaries (sha256)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- API tokens, stored as the SHA-256 of the secret.
CREATE TABLE tokens (
    name          VARCHAR(64)  PRIMARY KEY NOT NULL,
    token_sha256  CHAR(64)     CHARACTER SET ascii NOT NULL,
    created_ms    BIGINT       NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
