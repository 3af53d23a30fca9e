-- Private domains (Cloud Controller's private_domains): a domain an
-- organization owns, seen and used only by that org and the orgs it is
-- shared with. A domain with no owner is a shared domain, as before.
-- `internal` is an INTEGER 0/1 flag (CC's internal shared domains).
ALTER TABLE domains ADD COLUMN owning_organization_guid TEXT;
ALTER TABLE domains ADD COLUMN internal INTEGER NOT NULL DEFAULT 0;
CREATE INDEX domains_by_owner ON domains (owning_organization_guid);
-- The orgs a private domain is shared with (CC's
-- organizations_private_domains).
CREATE TABLE domain_shared_organizations (
    domain_guid TEXT NOT NULL,
    organization_guid TEXT NOT NULL,
    created_at TEXT NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (domain_guid, organization_guid)
);
CREATE INDEX domain_shared_organizations_by_org ON domain_shared_organizations (organization_guid);
-- A space's `ssh` feature (CC's spaces.allow_ssh, on by default). Kiln runs
-- no SSH proxy, so it is kept and shown only.
ALTER TABLE spaces ADD COLUMN allow_ssh INTEGER NOT NULL DEFAULT 1;
