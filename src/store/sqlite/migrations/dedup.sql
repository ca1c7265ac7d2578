-- One story, one entry, across feeds.
-- The URL keys (`pipeline::dedup::url_key`) an entry is found under: its
-- link, and once its article is fetched, the final URL and canonical URL.
CREATE TABLE entry_url (
    url_key  TEXT    NOT NULL,
    entry_id INTEGER NOT NULL REFERENCES entry (id) ON DELETE CASCADE,
    PRIMARY KEY (url_key, entry_id)
) WITHOUT ROWID;
CREATE INDEX entry_url_entry ON entry_url (entry_id);

-- Near-duplicate analysis of an entry's article text, with the version of
-- the analysis that produced it (other versions are not comparable).
CREATE TABLE entry_print (
    entry_id  INTEGER PRIMARY KEY REFERENCES entry (id) ON DELETE CASCADE,
    version   INTEGER NOT NULL,
    words     INTEGER NOT NULL,
    simhash   INTEGER NOT NULL,
    minhash   BLOB    NOT NULL,
    published INTEGER
);
-- Locality-sensitive keys: entries sharing one are candidates.
CREATE TABLE entry_lsh (
    lsh_key  INTEGER NOT NULL,
    entry_id INTEGER NOT NULL REFERENCES entry (id) ON DELETE CASCADE,
    PRIMARY KEY (lsh_key, entry_id)
) WITHOUT ROWID;
CREATE INDEX entry_lsh_entry ON entry_lsh (entry_id);
