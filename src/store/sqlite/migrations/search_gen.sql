-- The indexer reads queued entries, makes their words away from the
-- writer, then writes the index. An entry queued again in between (a poll
-- changed it) must not leave the queue with the words read before it
-- changed: queueing an entry already queued counts one more change, and
-- the indexer takes a row off the queue only at the count it read.
ALTER TABLE search_pending ADD COLUMN gen INTEGER NOT NULL DEFAULT 0;
