-- Retention and status: tombstones of purged entries, and a compact
-- per-day poll history for the status page.

-- An entry purged by retention, so the next poll of its feed does not
-- bring it back. The key is stored as a 16-byte hash (fixed-key SipHash
-- of the feed's entry key), not as text: a tombstone costs ~40 bytes
-- whatever the key's length. `seen_at` moves whenever the feed still
-- carries the entry, so a tombstone expires only once the entry has left
-- the feed's document for `[retention] tombstone_max_age`.
CREATE TABLE tombstone (
    feed_id  INTEGER NOT NULL REFERENCES feed (id) ON DELETE CASCADE,
    key_hash BLOB    NOT NULL,
    seen_at  INTEGER NOT NULL,
    PRIMARY KEY (feed_id, key_hash)
) WITHOUT ROWID;
CREATE INDEX tombstone_seen ON tombstone (seen_at);

-- Polls per feed and UTC day (days since 1970-01-01), written in the
-- poll's own transaction; housekeeping keeps the last few weeks.
CREATE TABLE feed_day (
    feed_id      INTEGER NOT NULL REFERENCES feed (id) ON DELETE CASCADE,
    day          INTEGER NOT NULL,
    polls        INTEGER NOT NULL DEFAULT 0,
    not_modified INTEGER NOT NULL DEFAULT 0,
    errors       INTEGER NOT NULL DEFAULT 0,
    new_entries  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (feed_id, day)
) WITHOUT ROWID;
CREATE INDEX feed_day_day ON feed_day (day);
