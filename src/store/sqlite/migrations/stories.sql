-- One story is one entry, wherever its copies come from (issue 14).
-- A story (`entry`) is a group of copies (`entry_source`, one per feed
-- item). Deciding whether two copies are one story needs each copy's own
-- listing, and an update must be compared with that copy's last version,
-- not with whichever copy wrote the story last.
ALTER TABLE entry_source ADD COLUMN title TEXT;
ALTER TABLE entry_source ADD COLUMN published_at INTEGER;
ALTER TABLE entry_source ADD COLUMN content_hash TEXT;

-- Every copy's text analysis, not one per story: when A ~ B and B ~ C, C
-- must still find the story after A and B merged, so a story keeps the
-- prints of all its members (`origin`: the entry whose article it was;
-- `site`: the host its page was on, NULL for prints stored before, whose
-- origin is still their entry).
CREATE TABLE entry_print_new (
    id        INTEGER PRIMARY KEY,
    entry_id  INTEGER NOT NULL REFERENCES entry (id) ON DELETE CASCADE,
    origin    INTEGER NOT NULL,
    site      TEXT,
    version   INTEGER NOT NULL,
    words     INTEGER NOT NULL,
    simhash   INTEGER NOT NULL,
    minhash   BLOB    NOT NULL,
    published INTEGER
);
INSERT INTO entry_print_new (entry_id, origin, version, words, simhash, minhash, published)
    SELECT entry_id, entry_id, version, words, simhash, minhash, published FROM entry_print;
DROP TABLE entry_print;
ALTER TABLE entry_print_new RENAME TO entry_print;
CREATE INDEX entry_print_entry ON entry_print (entry_id);

-- The one-time re-examination of stories stored before this version: the
-- next entry id to examine while it runs; `dedup_pass_done_at` once done.
INSERT INTO meta (key, value) VALUES ('dedup_pass_next', 0);
