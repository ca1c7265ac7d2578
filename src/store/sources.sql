-- `entry_source` without a rowid: its primary key (feed, entry key) is how
-- every poll looks an entry up, so the row now lives in that B-tree
-- instead of a rowid table plus a separate key index. One B-tree fewer to
-- write for every new entry, and the lookup no longer hops from the key
-- index to the table. Rows are small (two keys, a link, a time).
CREATE TABLE entry_source_new (
    feed_id       INTEGER NOT NULL REFERENCES feed (id) ON DELETE CASCADE,
    entry_key     TEXT    NOT NULL,
    entry_id      INTEGER NOT NULL REFERENCES entry (id) ON DELETE CASCADE,
    link          TEXT,
    first_seen_at INTEGER NOT NULL,
    PRIMARY KEY (feed_id, entry_key)
) WITHOUT ROWID;
INSERT INTO entry_source_new (feed_id, entry_key, entry_id, link, first_seen_at)
    SELECT feed_id, entry_key, entry_id, link, first_seen_at FROM entry_source;
DROP TABLE entry_source;
ALTER TABLE entry_source_new RENAME TO entry_source;
CREATE INDEX entry_source_entry ON entry_source (entry_id);
