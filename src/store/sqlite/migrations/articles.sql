-- Full text: one row per entry whose article page is to be fetched and
-- cleaned, with its state (pending → done | failed) and the result.
CREATE TABLE article (
    entry_id        INTEGER PRIMARY KEY REFERENCES entry (id) ON DELETE CASCADE,
    feed_id         INTEGER NOT NULL REFERENCES feed (id) ON DELETE CASCADE,
    url             TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'done', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    final_url       TEXT,
    canonical_url   TEXT,
    html            TEXT,
    text            TEXT,
    word_count      INTEGER,
    -- 1 when the article says more than the feed and replaces its content
    -- in the outputs.
    used            INTEGER NOT NULL DEFAULT 0,
    fetched_at      INTEGER
);
CREATE INDEX article_due ON article (status, next_attempt_at);
CREATE INDEX article_feed ON article (feed_id);
