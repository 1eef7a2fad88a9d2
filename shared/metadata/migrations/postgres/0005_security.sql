-- Access control: users, groups, permission targets and access tokens. Passwords are stored
-- as argon2id PHC strings, tokens as the SHA-256 of their secret (a token is shown once).
-- A permission target is kept whole, as the JSON of Artifactory's v2 permission API: they are
-- few, read together and evaluated in memory.

CREATE TABLE users (
    name           TEXT    PRIMARY KEY NOT NULL,
    email          TEXT    NOT NULL DEFAULT '',
    password_hash  TEXT,
    admin          BIGINT   NOT NULL DEFAULT 0,
    disabled       BIGINT   NOT NULL DEFAULT 0,
    created_ms     BIGINT NOT NULL
);

CREATE TABLE user_groups (
    name         TEXT    PRIMARY KEY NOT NULL,
    description  TEXT    NOT NULL DEFAULT '',
    auto_join    BIGINT   NOT NULL DEFAULT 0,
    created_ms   BIGINT NOT NULL
);

CREATE TABLE group_members (
    group_name  TEXT NOT NULL REFERENCES user_groups (name) ON DELETE CASCADE,
    user_name   TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    PRIMARY KEY (group_name, user_name)
);

CREATE TABLE permission_targets (
    name        TEXT    PRIMARY KEY NOT NULL,
    body        TEXT    NOT NULL,
    created_ms  BIGINT NOT NULL
);

CREATE TABLE access_tokens (
    id            TEXT    PRIMARY KEY NOT NULL,
    user_name     TEXT    NOT NULL,
    token_sha256  TEXT    NOT NULL UNIQUE,
    scope         TEXT    NOT NULL,
    description   TEXT    NOT NULL DEFAULT '',
    created_ms    BIGINT NOT NULL,
    expires_ms    BIGINT,
    revoked       BIGINT   NOT NULL DEFAULT 0
);
CREATE INDEX access_tokens_user ON access_tokens (user_name);
