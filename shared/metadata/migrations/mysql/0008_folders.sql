-- Folders as entries of their own (Artifactory's): created explicitly (PUT /repo/a/b/) or
-- implicitly by a deploy below them, with their own times and properties, kept when the files
-- below them go. `parent` (the path up to the last slash, '' at the root) is derived from the
-- path, so a folder's children are one indexed lookup each in folders and artifacts.

ALTER TABLE artifacts ADD COLUMN parent VARCHAR(1024) AS (
    SUBSTRING(path, 1, CHAR_LENGTH(path) - CHAR_LENGTH(SUBSTRING_INDEX(path, '/', -1)) - 1)
) STORED;
CREATE INDEX artifacts_parent ON artifacts (repo_key, parent(700));

CREATE TABLE folders (
    id           BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
    repo_key     VARCHAR(64)   CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    path         VARCHAR(1024) NOT NULL,
    path_key     BINARY(32)    AS (UNHEX(SHA2(CONCAT(repo_key, '/', path), 256))) STORED,
    parent       VARCHAR(1024) AS (
        SUBSTRING(path, 1, CHAR_LENGTH(path) - CHAR_LENGTH(SUBSTRING_INDEX(path, '/', -1)) - 1)
    ) STORED,
    created_ms   BIGINT        NOT NULL,
    created_by   VARCHAR(255)  NOT NULL,
    modified_ms  BIGINT        NOT NULL,
    modified_by  VARCHAR(255)  NOT NULL,
    UNIQUE KEY folders_path (path_key),
    INDEX folders_repo_path (repo_key, path(700)),
    INDEX folders_parent (repo_key, parent(700)),
    FOREIGN KEY (repo_key) REFERENCES repositories (repo_key)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE folder_properties (
    folder_id  BIGINT        NOT NULL,
    name       VARCHAR(255)  NOT NULL,
    value      VARCHAR(255)  NOT NULL,
    PRIMARY KEY (folder_id, name, value),
    INDEX folder_properties_name_value (name, value),
    FOREIGN KEY (folder_id) REFERENCES folders (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The folders the artifacts recorded so far imply, each with its earliest file's creation.
INSERT INTO folders (repo_key, path, created_ms, created_by, modified_ms, modified_by)
WITH RECURSIVE up (repo_key, path, created_ms, created_by) AS (
    SELECT repo_key, CAST(parent AS CHAR(1024)), created_ms, created_by
    FROM artifacts WHERE parent <> ''
    UNION
    SELECT repo_key,
           SUBSTRING(path, 1, CHAR_LENGTH(path) - CHAR_LENGTH(SUBSTRING_INDEX(path, '/', -1)) - 1),
           created_ms, created_by
    FROM up WHERE LOCATE('/', path) > 0
)
SELECT repo_key, path, MIN(created_ms), MIN(created_by), MIN(created_ms), MIN(created_by)
FROM up GROUP BY repo_key, path;
