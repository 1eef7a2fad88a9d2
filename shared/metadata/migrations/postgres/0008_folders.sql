-- Folders as entries of their own (Artifactory's): created explicitly (PUT /repo/a/b/) or
-- implicitly by a deploy below them, with their own times and properties, kept when the files
-- below them go. `parent` (the path up to the last slash, '' at the root) is derived from the
-- path, so a folder's children are one indexed lookup each in folders and artifacts.

ALTER TABLE artifacts ADD COLUMN parent TEXT COLLATE "C"
    GENERATED ALWAYS AS (regexp_replace(path, '/?[^/]*$', '')) STORED;
CREATE INDEX artifacts_parent ON artifacts (repo_key, parent, path);

CREATE TABLE folders (
    id           BIGSERIAL PRIMARY KEY,
    repo_key     TEXT    NOT NULL REFERENCES repositories (repo_key),
    path         TEXT    COLLATE "C" NOT NULL,
    parent       TEXT    COLLATE "C"
        GENERATED ALWAYS AS (regexp_replace(path, '/?[^/]*$', '')) STORED,
    created_ms   BIGINT  NOT NULL,
    created_by   TEXT    NOT NULL,
    modified_ms  BIGINT  NOT NULL,
    modified_by  TEXT    NOT NULL,
    UNIQUE (repo_key, path)
);
CREATE INDEX folders_parent ON folders (repo_key, parent, path);

CREATE TABLE folder_properties (
    folder_id  BIGINT  NOT NULL REFERENCES folders (id) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    PRIMARY KEY (folder_id, name, value)
);
CREATE INDEX folder_properties_name_value ON folder_properties (name, value);

-- The folders the artifacts recorded so far imply, each with its earliest file's creation.
INSERT INTO folders (repo_key, path, created_ms, created_by, modified_ms, modified_by)
WITH RECURSIVE up (repo_key, path, created_ms, created_by) AS (
    SELECT repo_key, parent, created_ms, created_by FROM artifacts WHERE parent <> ''
    UNION
    SELECT repo_key, regexp_replace(path, '/?[^/]*$', ''), created_ms, created_by
    FROM up WHERE strpos(path, '/') > 0
)
SELECT repo_key, path, MIN(created_ms), MIN(created_by), MIN(created_ms), MIN(created_by)
FROM up GROUP BY repo_key, path;
