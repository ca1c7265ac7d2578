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

-- The nodes of the cluster, as each says every second or so: how many
-- hosts it holds with a backlog (work queued for them). Hosts with a
-- backlog are shared out evenly: a node over its share stops claiming
-- for the extra ones and hands them back; one at or over it takes no
-- more of them. A node gone quiet for 5 s is not counted; a node that
-- stops cleanly removes its row.
CREATE TABLE cluster_node (
    node    TEXT   PRIMARY KEY,
    seen_at BIGINT NOT NULL,
    backlog BIGINT NOT NULL DEFAULT 0
);
