-- A record is one dead letter, however many consumers refused it (issue 17): keyed by where
-- it is in the log, with every consumer that refused it in `consumers` (`consumer` stays the
-- first of them, `reason` the first reason). Rows kept per consumer until now are merged.
ALTER TABLE dead_letters ADD COLUMN consumers text[] NOT NULL DEFAULT '{}';

UPDATE dead_letters d SET consumers = merged.consumers
FROM (
    SELECT min(id) AS id, array_agg(consumer ORDER BY id) AS consumers
    FROM dead_letters GROUP BY log_epoch, topic, log_partition, log_offset
) merged
WHERE d.id = merged.id;

DELETE FROM dead_letters WHERE consumers = '{}';

DO $$
DECLARE name text;
BEGIN
    SELECT conname INTO name FROM pg_constraint
    WHERE conrelid = 'dead_letters'::regclass AND contype = 'u';
    EXECUTE format('ALTER TABLE dead_letters DROP CONSTRAINT %I', name);
END $$;

ALTER TABLE dead_letters ADD CONSTRAINT dead_letters_once UNIQUE (log_epoch, topic, log_partition, log_offset);
