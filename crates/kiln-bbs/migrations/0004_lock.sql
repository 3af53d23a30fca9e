-- The BBS lock (Locket's role): one row naming the node whose BBS is
-- active, the URL its BBS server answers on (standbys forward there), and
-- when its lease ends on the database's clock (unix milliseconds).
CREATE TABLE bbs_lock (
    id         INTEGER PRIMARY KEY NOT NULL,
    owner      TEXT NOT NULL,
    url        TEXT NOT NULL,
    expires_ms INTEGER NOT NULL
);
INSERT INTO bbs_lock (id, owner, url, expires_ms) VALUES (1, '', '', 0);

-- Secrets every node of a cluster must agree on (the API's token signing
-- key, the BBS's key): the first node to start writes them, the others
-- read them. A row named `mutex:<what>` is a cluster-wide mutex instead
-- (locked FOR UPDATE while one node does <what>).
CREATE TABLE cluster_secrets (
    name  TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
