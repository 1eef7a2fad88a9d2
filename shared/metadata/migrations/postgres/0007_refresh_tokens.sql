-- Refreshable access tokens: the SHA-256 of the refresh token that may replace this one (once).
ALTER TABLE access_tokens ADD COLUMN refresh_sha256 TEXT;
CREATE UNIQUE INDEX access_tokens_refresh ON access_tokens (refresh_sha256);
