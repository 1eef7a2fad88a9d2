-- The cluster eventual queue (cluster-s3-storage-v3 and the other cluster templates): which
-- node's queue disk holds a copy of a binary not yet at the object store. A row is written
-- once the copy is fsynced there, before the upload is acknowledged, and removed when the
-- object store confirmed the binary (or the node found its copy gone). Who uploads a binary,
-- and under what lease, is a lock named `queue:<sha256>` in `locks`.
CREATE TABLE queue_copies (
    sha256     TEXT    NOT NULL,
    node       TEXT    NOT NULL,
    size       BIGINT  NOT NULL,
    queued_ms  BIGINT  NOT NULL,
    PRIMARY KEY (sha256, node)
);
CREATE INDEX queue_copies_node ON queue_copies (node);

-- A node's zone, so that copies of a queued binary go to other zones first.
ALTER TABLE nodes ADD COLUMN zone TEXT NOT NULL DEFAULT '';
