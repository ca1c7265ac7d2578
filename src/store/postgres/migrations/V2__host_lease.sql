-- Which node of a cluster may send a host requests: one at a time, until
-- `expires_at`, so the per-host limits each node keeps in memory hold for
-- the whole cluster. Times are milliseconds of the database's clock (not
-- the nodes'), since they are compared across nodes.
CREATE TABLE host_lease (
    -- As the politeness limits key it: the URL's host, lowercased.
    host       TEXT   PRIMARY KEY,
    -- The holding node's id; '' once it handed the host back.
    node       TEXT   NOT NULL,
    -- The lease's end: a node that dies or loses the database holds the
    -- host no longer than this (a node starts a request only while its
    -- lease covers the whole request).
    expires_at BIGINT NOT NULL,
    -- When the holding node took the host: after its tenure it claims no
    -- more work for it, finishes what it holds, and hands it back.
    taken_at   BIGINT NOT NULL,
    -- No request before this (the spacing after the last node's last
    -- request, or a 429's block), for whichever node takes the host next.
    next_start BIGINT NOT NULL DEFAULT 0
);
