-- Schema version 1. Timestamps are Unix seconds (UTC).

-- One row per subscription, with its polling state: a failing feed is data
-- (status, error, count, next attempt), never a crash.
CREATE TABLE feed (
    id              INTEGER PRIMARY KEY,
    url             TEXT    NOT NULL UNIQUE,
    title           TEXT,
    interval_secs   INTEGER,
    origin          TEXT    NOT NULL CHECK (origin IN ('config', 'cli', 'opml')),
    site_title      TEXT,
    site_url        TEXT,
    etag            TEXT,
    last_modified   TEXT,
    next_check_at   INTEGER NOT NULL,
    last_checked_at INTEGER,
    last_success_at INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    error_count     INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL
);
CREATE INDEX feed_next_check ON feed (next_check_at);

CREATE TABLE feed_tag (
    feed_id INTEGER NOT NULL REFERENCES feed (id) ON DELETE CASCADE,
    tag     TEXT    NOT NULL,
    PRIMARY KEY (feed_id, tag)
) WITHOUT ROWID;
CREATE INDEX feed_tag_tag ON feed_tag (tag);

-- A story as served. `uid` is its public id, fixed when first seen.
CREATE TABLE entry (
    id            INTEGER PRIMARY KEY,
    uid           TEXT    NOT NULL UNIQUE,
    title         TEXT,
    link          TEXT,
    content_html  TEXT,
    authors       TEXT    NOT NULL DEFAULT '[]',
    categories    TEXT    NOT NULL DEFAULT '[]',
    enclosures    TEXT    NOT NULL DEFAULT '[]',
    published_at  INTEGER,
    updated_at    INTEGER NOT NULL,
    first_seen_at INTEGER NOT NULL,
    -- Output order: the published time, but never later than first seen, so
    -- a feed that post-dates its items cannot pin them to the top.
    sort_at       INTEGER NOT NULL,
    content_hash  TEXT    NOT NULL
);
CREATE INDEX entry_sort ON entry (sort_at DESC, id DESC);

-- Which feed carried which entry, under which per-feed key. Seeing the same
-- (feed, key) again finds the same entry instead of creating a second one.
CREATE TABLE entry_source (
    feed_id       INTEGER NOT NULL REFERENCES feed (id) ON DELETE CASCADE,
    entry_key     TEXT    NOT NULL,
    entry_id      INTEGER NOT NULL REFERENCES entry (id) ON DELETE CASCADE,
    link          TEXT,
    first_seen_at INTEGER NOT NULL,
    PRIMARY KEY (feed_id, entry_key)
);
CREATE INDEX entry_source_entry ON entry_source (entry_id);

-- Small counters; `entries_rev` moves whenever anything an output shows
-- changes, so rendered outputs can be cached and validated by it.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('entries_rev', 0), ('entries_changed_at', 0);
