-- The checksums a deploy declared (X-Checksum-*, or a checksum file deployed after it):
-- Artifactory's originalChecksums. NULL where none was declared.
ALTER TABLE artifacts ADD COLUMN original_sha1 CHAR(40) CHARACTER SET ascii NULL;
ALTER TABLE artifacts ADD COLUMN original_md5 CHAR(32) CHARACTER SET ascii NULL;
ALTER TABLE artifacts ADD COLUMN original_sha256 CHAR(64) CHARACTER SET ascii NULL;
