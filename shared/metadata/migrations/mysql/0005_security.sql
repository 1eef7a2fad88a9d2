-- Access control: users, groups, permission targets and access tokens. Passwords are stored
-- as argon2id PHC strings, tokens as the SHA-256 of their secret (a token is shown once).
-- A permission target is kept whole, as the JSON of Artifactory's v2 permission API: they are
-- few, read together and evaluated in memory.

CREATE TABLE users (
    name           VARCHAR(255)  PRIMARY KEY NOT NULL,
    email          VARCHAR(255)  NOT NULL DEFAULT '',
    password_hash  VARCHAR(255),
    admin          BIGINT        NOT NULL DEFAULT 0,
    disabled       BIGINT        NOT NULL DEFAULT 0,
    created_ms     BIGINT        NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE user_groups (
    name         VARCHAR(255)  PRIMARY KEY NOT NULL,
    description  VARCHAR(1024) NOT NULL DEFAULT '',
    auto_join    BIGINT        NOT NULL DEFAULT 0,
    created_ms   BIGINT        NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE group_members (
    group_name  VARCHAR(255) NOT NULL,
    user_name   VARCHAR(255) NOT NULL,
    PRIMARY KEY (group_name, user_name),
    FOREIGN KEY (group_name) REFERENCES user_groups (name) ON DELETE CASCADE,
    FOREIGN KEY (user_name) REFERENCES users (name) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE permission_targets (
    name        VARCHAR(255)  PRIMARY KEY NOT NULL,
    body        MEDIUMTEXT    NOT NULL,
    created_ms  BIGINT        NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE access_tokens (
    id            CHAR(32)      CHARACTER SET ascii PRIMARY KEY NOT NULL,
    user_name     VARCHAR(255)  NOT NULL,
    token_sha256  CHAR(64)      CHARACTER SET ascii NOT NULL UNIQUE,
    scope         VARCHAR(1024) NOT NULL,
    description   VARCHAR(1024) NOT NULL DEFAULT '',
    created_ms    BIGINT        NOT NULL,
    expires_ms    BIGINT,
    revoked       BIGINT        NOT NULL DEFAULT 0,
    INDEX access_tokens_user (user_name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
