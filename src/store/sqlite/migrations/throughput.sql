-- The scheduler asks for the most overdue feeds in the order
-- (next_check_at, last_checked_at, id). An index in that order lets it read
-- the first few rows and stop; with only (status, next_check_at) SQLite
-- sorted every due feed on each call, which with thousands of feeds due
-- (a first start, a restart after downtime) cost more than the polls.
DROP INDEX feed_due;
CREATE INDEX feed_due ON feed (status, next_check_at, last_checked_at);

-- The search index merges its segments four at a time by default; eight
-- at a time rewrites each indexed term fewer times as entries arrive.
-- Measured on 100,000 entries in batches of 2,000: index CPU -17%, a
-- one-word search +15% (still well under a millisecond).
INSERT INTO entry_fts (entry_fts, rank) VALUES ('automerge', 8);
