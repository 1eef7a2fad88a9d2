-- Stowage metadata, SQLite (the embedded default). Times are milliseconds since the Unix epoch.
-- Paths compare byte-wise (BINARY collation): folder queries rely on it.

CREATE TABLE repositories (
    repo_key      TEXT    PRIMARY KEY NOT NULL,
    rclass        TEXT    NOT NULL DEFAULT 'local',
    package_type  TEXT    NOT NULL DEFAULT 'generic',
    description   TEXT    NOT NULL DEFAULT '',
    config        TEXT    NOT NULL DEFAULT '{}',
    created_ms    INTEGER NOT NULL
);

CREATE TABLE binaries (
    sha256      TEXT    PRIMARY KEY NOT NULL,
    sha1        TEXT    NOT NULL,
    md5         TEXT    NOT NULL,
    size        INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL
);
CREATE INDEX binaries_sha1 ON binaries (sha1);
CREATE INDEX binaries_md5 ON binaries (md5);

CREATE TABLE artifacts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    repo_key     TEXT    NOT NULL REFERENCES repositories (repo_key),
    path         TEXT    NOT NULL,
    sha256       TEXT    NOT NULL REFERENCES binaries (sha256),
    size         INTEGER NOT NULL,
    created_ms   INTEGER NOT NULL,
    created_by   TEXT    NOT NULL,
    modified_ms  INTEGER NOT NULL,
    modified_by  TEXT    NOT NULL,
    UNIQUE (repo_key, path)
);
CREATE INDEX artifacts_sha256 ON artifacts (sha256);

CREATE TABLE artifact_properties (
    artifact_id  INTEGER NOT NULL REFERENCES artifacts (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    value        TEXT    NOT NULL,
    PRIMARY KEY (artifact_id, name, value)
);
CREATE INDEX artifact_properties_name_value ON artifact_properties (name, value);

-- Deleted artifacts, restorable until the trash is emptied or their retention ends.
CREATE TABLE trash (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    repo_key     TEXT    NOT NULL REFERENCES repositories (repo_key),
    path         TEXT    NOT NULL,
    sha256       TEXT    NOT NULL REFERENCES binaries (sha256),
    size         INTEGER NOT NULL,
    created_ms   INTEGER NOT NULL,
    created_by   TEXT    NOT NULL,
    properties   TEXT    NOT NULL DEFAULT '[]',
    deleted_ms   INTEGER NOT NULL,
    deleted_by   TEXT    NOT NULL,
    UNIQUE (repo_key, path)
);
CREATE INDEX trash_sha256 ON trash (sha256);
CREATE INDEX trash_deleted_ms ON trash (deleted_ms);

-- API tokens, stored as the SHA-256 of the secret.
CREATE TABLE tokens (
    name          TEXT    PRIMARY KEY NOT NULL,
    token_sha256  TEXT    NOT NULL,
    created_ms    INTEGER NOT NULL
);
