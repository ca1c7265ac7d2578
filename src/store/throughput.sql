-- The scheduler asks for the most overdue feeds in the order
-- (next_check_at, last_checked_at, id). An index in that order lets it read
-- the first few rows and stop; with only (status, next_check_at) SQLite
-- sorted every due feed on each call, which with thousands of feeds due
-- (a first start, a restart after downtime) cost more than the polls.
DROP INDEX feed_due;
CREATE INDEX feed_due ON feed (status, next_check_at, last_checked_at);

-- The search index collects a batch's terms in memory before writing them
-- as one segment: 8 MiB instead of FTS5's 1 MiB holds a whole group commit
-- of polls, so a batch is one segment rather than several that must be
-- merged again at once.
INSERT INTO entry_fts (entry_fts, rank) VALUES ('hashsize', 8388608);
