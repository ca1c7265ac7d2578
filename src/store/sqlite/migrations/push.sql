-- Push delivery state: per named output and target (a webhook or ntfy
-- URL), the entries delivered so far. Entries are delivered in id order,
-- so one id says which: every entry of the output up to it has gone (or
-- predates the target, which starts at the newest entry when first seen).
CREATE TABLE push_target (
    output TEXT NOT NULL,
    target TEXT NOT NULL,
    delivered_id INTEGER NOT NULL,
    -- Failed attempts in a row at the next batch, and when to try again.
    attempts INTEGER NOT NULL DEFAULT 0,
    retry_at INTEGER,
    last_error TEXT,
    PRIMARY KEY (output, target)
) WITHOUT ROWID;
