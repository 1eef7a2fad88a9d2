-- Stowage metadata, PostgreSQL (Aurora PostgreSQL). Times are milliseconds since the Unix epoch.
-- Paths compare byte-wise (COLLATE "C"): folder queries rely on it.

CREATE TABLE repositories (
    repo_key      TEXT    PRIMARY KEY NOT NULL,
    rclass        TEXT    NOT NULL DEFAULT 'local',
    package_type  TEXT    NOT NULL DEFAULT 'generic',
    description   TEXT    NOT NULL DEFAULT '',
    config        TEXT    NOT NULL DEFAULT '{}',
    created_ms    BIGINT  NOT NULL
);

CREATE TABLE binaries (
    sha256      TEXT    PRIMARY KEY NOT NULL,
    sha1        TEXT    NOT NULL,
    md5         TEXT    NOT NULL,
    size        BIGINT  NOT NULL,
    created_ms  BIGINT  NOT NULL
);
CREATE INDEX binaries_sha1 ON binaries (sha1);
CREATE INDEX binaries_md5 ON binaries (md5);

CREATE TABLE artifacts (
    id           BIGSERIAL PRIMARY KEY,
    repo_key     TEXT    NOT NULL REFERENCES repositories (repo_key),
    path         TEXT    COLLATE "C" NOT NULL,
    sha256       TEXT    NOT NULL REFERENCES binaries (sha256),
    size         BIGINT  NOT NULL,
    created_ms   BIGINT  NOT NULL,
    created_by   TEXT    NOT NULL,
    modified_ms  BIGINT  NOT NULL,
    modified_by  TEXT    NOT NULL,
    UNIQUE (repo_key, path)
);
CREATE INDEX artifacts_sha256 ON artifacts (sha256);

CREATE TABLE artifact_properties (
    artifact_id  BIGINT  NOT NULL REFERENCES artifacts (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    value        TEXT    NOT NULL,
    PRIMARY KEY (artifact_id, name, value)
);
CREATE INDEX artifact_properties_name_value ON artifact_properties (name, value);

-- Deleted artifacts, restorable until the trash is emptied or their retention ends.
CREATE TABLE trash (
    id           BIGSERIAL PRIMARY KEY,
    repo_key     TEXT    NOT NULL REFERENCES repositories (repo_key),
    path         TEXT    COLLATE "C" NOT NULL,
    sha256       TEXT    NOT NULL REFERENCES binaries (sha256),
    size         BIGINT  NOT NULL,
    created_ms   BIGINT  NOT NULL,
    created_by   TEXT    NOT NULL,
    properties   TEXT    NOT NULL DEFAULT '[]',
    deleted_ms   BIGINT  NOT NULL,
    deleted_by   TEXT    NOT NULL,
    UNIQUE (repo_key, path)
);
CREATE INDEX trash_sha256 ON trash (sha256);
CREATE INDEX trash_deleted_ms ON trash (deleted_ms);

-- API tokens, stored as the SHA-256 of the secret.
CREATE TABLE tokens (
    name          TEXT    PRIMARY KEY NOT NULL,
    token_sha256  TEXT    NOT NULL,
    created_ms    BIGINT  NOT NULL
);
