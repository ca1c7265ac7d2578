-- Polite, self-healing polling: feed status, confirmed moves, schedule
-- reasons, learned intervals and hints, and per-host Retry-After blocks.
ALTER TABLE feed ADD COLUMN status TEXT NOT NULL DEFAULT 'active'
    CHECK (status IN ('active', 'paused', 'gone'));
-- Where the feed is fetched from after a confirmed permanent redirect.
ALTER TABLE feed ADD COLUMN fetch_url TEXT;
-- A permanent redirect seen but not yet confirmed, and how many polls in a
-- row showed it.
ALTER TABLE feed ADD COLUMN redirect_url TEXT;
ALTER TABLE feed ADD COLUMN redirect_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE feed ADD COLUMN interval_secs_current INTEGER;
ALTER TABLE feed ADD COLUMN schedule_reason TEXT;
ALTER TABLE feed ADD COLUMN learned_interval_secs INTEGER;
ALTER TABLE feed ADD COLUMN hints TEXT;

DROP INDEX feed_next_check;
CREATE INDEX feed_due ON feed (status, next_check_at);

-- A host that answered 429: no request to it before `until`.
CREATE TABLE host_block (
    host  TEXT    PRIMARY KEY,
    until INTEGER NOT NULL
) WITHOUT ROWID;
