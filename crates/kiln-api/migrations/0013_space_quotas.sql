-- Space quotas (Cloud Controller's space_quota_definitions): an org's
-- named limits (apps, services, routes as CC presents them; null =
-- unlimited) in one JSON column, the name unique in its org;
-- space_quota_assignments gives a space at most one (guid = the space's).
CREATE TABLE space_quotas (
    guid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    organization_guid TEXT NOT NULL,
    limits TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    UNIQUE (organization_guid, name)
);
CREATE INDEX space_quotas_org ON space_quotas (organization_guid);
CREATE TABLE space_quota_assignments (
    guid TEXT PRIMARY KEY,
    quota_guid TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX space_quota_assignments_quota ON space_quota_assignments (quota_guid);
