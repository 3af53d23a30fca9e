-- Tasks (`cf run-task`), each run as a BBS Task in the cf-tasks domain, and
-- audit events (`cf events`), written in the transaction of the change they
-- describe.
CREATE TABLE tasks (
    guid TEXT PRIMARY KEY,
    app_guid TEXT NOT NULL,
    name TEXT NOT NULL,
    command TEXT NOT NULL,
    state TEXT NOT NULL,
    memory_in_mb INTEGER NOT NULL,
    disk_in_mb INTEGER NOT NULL,
    droplet_guid TEXT NOT NULL,
    sequence_id INTEGER NOT NULL,
    failure_reason TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    UNIQUE (app_guid, sequence_id)
);
CREATE INDEX tasks_app_guid ON tasks (app_guid);
CREATE TABLE audit_events (
    guid TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    actor_guid TEXT,
    actor_type TEXT,
    actor_name TEXT,
    target_guid TEXT,
    target_type TEXT,
    target_name TEXT,
    space_guid TEXT,
    organization_guid TEXT,
    data TEXT NOT NULL,
    -- Set for events recorded from the scheduler's reports (crashes), so
    -- one report recorded twice (after a restart) is one event.
    dedup_key TEXT UNIQUE,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX audit_events_target_guid ON audit_events (target_guid);
CREATE INDEX audit_events_type ON audit_events (type);
