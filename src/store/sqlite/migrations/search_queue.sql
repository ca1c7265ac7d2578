-- Entries waiting to be (re)indexed for search. The poll path only queues
-- an entry here; the search indexer (see `indexer`) indexes the queue in
-- batches, after polls while the writer has time to spare. `reindex` is 0
-- while the index has never held the entry: a contentless-delete index
-- records a delete even for a row it never had, so those skip it.
CREATE TABLE search_pending (
    entry_id INTEGER PRIMARY KEY REFERENCES entry (id) ON DELETE CASCADE,
    reindex  INTEGER NOT NULL
);
-- What a search shows also changes when the indexer catches up, without
-- the entries changing: `?q=` outputs are versioned by these as well as
-- by `entries_rev`.
INSERT INTO meta (key, value) VALUES ('search_rev', 0), ('search_changed_at', 0);
