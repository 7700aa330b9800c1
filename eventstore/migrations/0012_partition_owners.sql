-- Who owns a partition of a consumer's work, per log epoch (issue 13, fencing). A replica
-- that is assigned a partition claims it: the generation grows by one with every claim.
-- Every ledger and offset write of that partition checks, in its own transaction, that
-- the writer's generation is still the latest, so a replica that lost the partition
-- (killed, or paused past its session timeout and resumed) can no longer write for it.
CREATE TABLE partition_owners (
    consumer        text    NOT NULL,
    log_epoch       text    NOT NULL,
    log_partition   integer NOT NULL,
    generation      bigint  NOT NULL,
    owner           text    NOT NULL,
    claimed_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, log_epoch, log_partition)
);

-- A model call runs under a lease: its `started` row names the holder and how long its claim
-- lasts (renewed while the call runs). Another replica calls the model for the same key only
-- once the lease has run out, so two replicas never both call it; a tool's `started` row has
-- no lease (a write whose outcome is unknown is never run again).
ALTER TABLE effects ADD COLUMN lease_until timestamptz;
