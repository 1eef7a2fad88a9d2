-- The checksums a deploy declared (X-Checksum-*, or a checksum file deployed after it):
-- Artifactory's originalChecksums. NULL where none was declared.
ALTER TABLE artifacts ADD COLUMN original_sha1 TEXT;
ALTER TABLE artifacts ADD COLUMN original_md5 TEXT;
ALTER TABLE artifacts ADD COLUMN original_sha256 TEXT;
