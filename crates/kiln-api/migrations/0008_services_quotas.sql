-- User-provided service instances (Cloud Controller's
-- service_instances with is_gateway_service false): credentials and tags
-- are JSON text; a name is unique in its space. The last operation is kept
-- as CC presents it (a user-provided one always succeeded).
CREATE TABLE service_instances (
    guid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    space_guid TEXT NOT NULL,
    credentials TEXT NOT NULL,
    syslog_drain_url TEXT,
    route_service_url TEXT,
    tags TEXT NOT NULL,
    last_operation_type TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    UNIQUE (space_guid, name)
);
CREATE INDEX service_instances_space ON service_instances (space_guid);
-- App credential bindings. As in CC a binding carries its own copy of the
-- instance's credentials and syslog drain (an instance update rewrites
-- them), and an app binds an instance once.
CREATE TABLE service_bindings (
    guid TEXT PRIMARY KEY,
    name TEXT,
    type TEXT NOT NULL,
    app_guid TEXT NOT NULL,
    service_instance_guid TEXT NOT NULL,
    credentials TEXT NOT NULL,
    syslog_drain_url TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    UNIQUE (app_guid, service_instance_guid)
);
CREATE INDEX service_bindings_app ON service_bindings (app_guid);
CREATE INDEX service_bindings_instance ON service_bindings (service_instance_guid);
-- Organization quotas (CC's quota_definitions): the limits as CC presents
-- them (apps, services, routes, domains; null = unlimited) in one JSON
-- column; each org's quota in organization_quota_assignments (guid = the
-- org's guid), so an org has exactly one.
CREATE TABLE organization_quotas (
    guid TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    limits TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE organization_quota_assignments (
    guid TEXT PRIMARY KEY,
    quota_guid TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX organization_quota_assignments_quota ON organization_quota_assignments (quota_guid);
