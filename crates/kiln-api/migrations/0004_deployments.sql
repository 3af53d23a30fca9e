-- Deployments (rolling and canary replacements of an app's web process)
-- and revisions (the droplet and environment of each deploy).
CREATE TABLE deployments (
    guid TEXT PRIMARY KEY,
    app_guid TEXT NOT NULL,
    state TEXT NOT NULL,
    status_reason TEXT NOT NULL,
    strategy TEXT NOT NULL,
    max_in_flight INTEGER NOT NULL,
    continued INTEGER NOT NULL,
    droplet_guid TEXT NOT NULL,
    previous_droplet_guid TEXT,
    revision_guid TEXT,
    process_guid TEXT NOT NULL,
    old_version TEXT NOT NULL,
    new_version TEXT NOT NULL,
    target_instances INTEGER NOT NULL,
    old_instances INTEGER NOT NULL,
    new_instances INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX deployments_app_guid ON deployments (app_guid);
CREATE TABLE revisions (
    guid TEXT PRIMARY KEY,
    app_guid TEXT NOT NULL,
    version INTEGER NOT NULL,
    droplet_guid TEXT NOT NULL,
    environment_variables TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    UNIQUE (app_guid, version)
);
