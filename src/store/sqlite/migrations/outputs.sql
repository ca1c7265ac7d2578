-- Full-text search over entries for `?q=`. Contentless (the text lives in
-- `entry`/`article`), with delete support so updates can replace rows; the
-- rowid is the entry id. Bodies are indexed as plain text by the store.
-- `detail = none` keeps no positions: `?q=`
-- only asks whether every word occurs, and that roughly halves the index's
-- size and its cost on the poll path.
CREATE VIRTUAL TABLE entry_fts USING fts5(
    title, body,
    content = '', contentless_delete = 1, detail = none,
    tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TRIGGER entry_fts_delete AFTER DELETE ON entry BEGIN
    DELETE FROM entry_fts WHERE rowid = old.id;
END;
-- Entries stored before search existed are indexed with their markup; the
-- tags are harmless tokens and the next update replaces the row.
INSERT INTO entry_fts (rowid, title, body)
    SELECT id, coalesce(title, ''), coalesce(content_html, '') FROM entry;
