-- How many times garbage collection has begun removing binaries. A deploy reads it (with
-- whether a collection holds its removal lock now) before it stores its bytes, and again under
-- the binary's lock before it records them: when no collection ran in between, none can have
-- removed those bytes, and the store need not be asked whether they are still there.

CREATE TABLE gc_state (
    id    INTEGER  PRIMARY KEY NOT NULL,
    runs  BIGINT   NOT NULL
);

INSERT INTO gc_state (id, runs) VALUES (1, 0);
