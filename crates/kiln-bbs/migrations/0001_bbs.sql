-- Diego's BBS tables. Definitions are kept as JSON blobs, as Diego keeps its
-- run info as one encoded column; what the BBS filters on is in columns.
CREATE TABLE tasks (
    task_guid      TEXT PRIMARY KEY NOT NULL,
    domain         TEXT NOT NULL,
    definition     TEXT NOT NULL,
    state          TEXT NOT NULL,
    cell_id        TEXT NOT NULL DEFAULT '',
    result         TEXT NOT NULL DEFAULT '',
    failed         INTEGER NOT NULL DEFAULT 0,
    failure_reason TEXT NOT NULL DEFAULT '',
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX tasks_by_domain ON tasks (domain);
CREATE INDEX tasks_by_cell ON tasks (cell_id);

CREATE TABLE desired_lrps (
    process_guid TEXT PRIMARY KEY NOT NULL,
    domain       TEXT NOT NULL,
    instances    INTEGER NOT NULL,
    definition   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX desired_lrps_by_domain ON desired_lrps (domain);

CREATE TABLE actual_lrps (
    process_guid    TEXT NOT NULL,
    instance_index  INTEGER NOT NULL,
    domain          TEXT NOT NULL,
    state           TEXT NOT NULL,
    instance_guid   TEXT NOT NULL DEFAULT '',
    cell_id         TEXT NOT NULL DEFAULT '',
    net_info        TEXT NOT NULL DEFAULT '',
    crash_count     INTEGER NOT NULL DEFAULT 0,
    crash_reason    TEXT NOT NULL DEFAULT '',
    placement_error TEXT NOT NULL DEFAULT '',
    since           INTEGER NOT NULL,
    PRIMARY KEY (process_guid, instance_index)
);
CREATE INDEX actual_lrps_by_cell ON actual_lrps (cell_id);
