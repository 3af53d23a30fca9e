//! Who may see and change what: the one place that decides (Cloud
//! Controller's `lib/cloud_controller/permissions.rb`, and the route policy
//! its controllers each spell out). Fetchers narrow lists with
//! [`Permissions::readable_spaces`] / [`Permissions::readable_orgs`] in SQL;
//! `auth::authorize` checks every `/v3` route against [`policy`] before its
//! handler runs; actions ask the `can_*` questions for rules that need the
//! request body (who may grant a role).

use crate::context::{Ctx, CurrentUser};
use crate::db::{self, App, Cond, Role, Route, Space};
use crate::error::{ApiError, ApiResult};
use std::collections::BTreeSet;

pub const ADMIN_SCOPE: &str = "cloud_controller.admin";
pub const ADMIN_READ_ONLY_SCOPE: &str = "cloud_controller.admin_read_only";

/// Space roles that read their space's things (CC's
/// ROLES_FOR_SPACE_READING; org managers read their orgs' spaces too).
const SPACE_READERS: [&str; 4] = [
    "space_developer",
    "space_manager",
    "space_auditor",
    "space_supporter",
];

/// A caller's standing across the whole platform, from its token's scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    Admin,
    AdminReadOnly,
    None,
}

/// What one caller may see and change: its global standing and its roles,
/// read once per request.
#[derive(Debug, Clone)]
pub struct Permissions {
    pub user_guid: String,
    pub global: Global,
    roles: Vec<Role>,
    /// Spaces it reads (its space roles' spaces and its managed orgs'
    /// spaces); meaningless for admins, who read all.
    spaces: Vec<String>,
    /// Orgs it reads (any org role, or a space role in the org).
    orgs: Vec<String>,
}

impl Permissions {
    /// Reads the caller's roles (and, for an org manager, its orgs' spaces).
    pub async fn of(ctx: &Ctx, user: &CurrentUser) -> ApiResult<Permissions> {
        let global = if user.scopes.iter().any(|s| s == ADMIN_SCOPE) {
            Global::Admin
        } else if user.scopes.iter().any(|s| s == ADMIN_READ_ONLY_SCOPE) {
            Global::AdminReadOnly
        } else {
            Global::None
        };
        let roles: Vec<Role> = if global == Global::Admin {
            Vec::new()
        } else {
            db::where_eq(&ctx.pool, "user_guid", &user.guid).await?
        };
        let managed: Vec<String> = roles
            .iter()
            .filter(|r| r.r#type == "organization_manager")
            .map(|r| r.organization_guid.clone())
            .collect();
        let mut spaces: BTreeSet<String> = roles
            .iter()
            .filter(|r| SPACE_READERS.contains(&r.r#type.as_str()))
            .filter_map(|r| r.space_guid.clone())
            .collect();
        if !managed.is_empty() {
            let in_managed: Vec<Space> =
                db::list(&ctx.pool, &[Cond::In("organization_guid", managed)]).await?;
            spaces.extend(in_managed.into_iter().map(|s| s.guid));
        }
        let orgs: BTreeSet<String> = roles.iter().map(|r| r.organization_guid.clone()).collect();
        Ok(Permissions {
            user_guid: user.guid.clone(),
            global,
            roles,
            spaces: spaces.into_iter().collect(),
            orgs: orgs.into_iter().collect(),
        })
    }

    pub fn is_admin(&self) -> bool {
        self.global == Global::Admin
    }

    fn reads_all(&self) -> bool {
        self.global != Global::None
    }

    /// The spaces whose things this caller lists; `None`: every space.
    pub fn readable_spaces(&self) -> Option<Vec<String>> {
        (!self.reads_all()).then(|| self.spaces.clone())
    }

    /// The orgs this caller lists; `None`: every org.
    pub fn readable_orgs(&self) -> Option<Vec<String>> {
        (!self.reads_all()).then(|| self.orgs.clone())
    }

    fn has(&self, kind: &str, scope_guid: &str) -> bool {
        self.roles
            .iter()
            .any(|r| r.r#type == kind && r.scope_guid == scope_guid)
    }

    pub fn can_read_space(&self, space: &str) -> bool {
        self.reads_all() || self.spaces.iter().any(|s| s == space)
    }

    pub fn can_read_org(&self, org: &str) -> bool {
        self.reads_all() || self.orgs.iter().any(|o| o == org)
    }

    /// Space developers change what is in their space.
    pub fn can_write_space(&self, space: &str) -> bool {
        self.is_admin() || self.has("space_developer", space)
    }

    /// Developers and supporters start, stop, restart, scale and stage.
    pub fn can_operate_space(&self, space: &str) -> bool {
        self.can_write_space(space) || self.has("space_supporter", space)
    }

    /// Environment variables are secrets: admins (read-only too) and
    /// developers only (CC's ROLES_FOR_SPACE_SECRETS_READING).
    pub fn can_read_secrets(&self, space: &str) -> bool {
        self.reads_all() || self.has("space_developer", space)
    }

    pub fn can_manage_org(&self, org: &str) -> bool {
        self.is_admin() || self.has("organization_manager", org)
    }

    pub fn can_manage_space(&self, space: &str, org: &str) -> bool {
        self.can_manage_org(org) || self.has("space_manager", space)
    }

    /// A private domain is seen by who reads its org or an org it is
    /// shared with; a shared domain by everyone (CC's
    /// `readable_org_ids_for_domains`).
    pub fn can_read_domain(&self, owner: Option<&str>, shared: &[String]) -> bool {
        match owner {
            None => true,
            Some(org) => self.can_read_org(org) || shared.iter().any(|s| self.can_read_org(s)),
        }
    }

    /// Shared domains are changed by admins, private ones by their org's
    /// managers too (CC's `can_write_to_active_org`).
    pub fn can_write_domain(&self, owner: Option<&str>) -> bool {
        owner.map_or(self.is_admin(), |org| self.can_manage_org(org))
    }

    /// The orgs this caller manages; `None`: it reads every org's things.
    pub fn managed_orgs(&self) -> Option<Vec<String>> {
        (!self.reads_all()).then(|| {
            self.roles
                .iter()
                .filter(|r| r.r#type == "organization_manager")
                .map(|r| r.organization_guid.clone())
                .collect()
        })
    }

    /// A space quota is seen by who reads a space it is applied to, and
    /// by its org's managers (CC's `readable_space_quota_guids`).
    pub fn can_read_space_quota(&self, org: &str, spaces: &[String]) -> bool {
        self.reads_all()
            || self.can_manage_org(org)
            || spaces.iter().any(|s| self.can_read_space(s))
    }

    /// Who may grant or revoke a role (CC's RoleCreate/RoleDelete rules):
    /// admins any; org managers any role in their org; space managers the
    /// space roles of their space.
    pub fn can_grant(&self, org: &str, space: Option<&str>) -> bool {
        match space {
            None => self.can_manage_org(org),
            Some(space) => self.can_manage_space(space, org),
        }
    }
}

/// What a route's path parameter, or its body's relationship, names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Org,
    Space,
    App,
    Process,
    Package,
    Build,
    Droplet,
    Route,
    Deployment,
    Revision,
    Role,
    Task,
    AuditEvent,
    ServiceInstance,
    ServiceBinding,
    Sidecar,
}

impl Kind {
    /// The name in `<Resource> not found`.
    pub fn resource(self) -> &'static str {
        match self {
            Kind::Org => "Organization",
            Kind::Space => "Space",
            Kind::App => "App",
            Kind::Process => "Process",
            Kind::Package => "Package",
            Kind::Build => "Build",
            Kind::Droplet => "Droplet",
            Kind::Route => "Route",
            Kind::Deployment => "Deployment",
            Kind::Revision => "Revision",
            Kind::Role => "Role",
            Kind::Task => "Task",
            Kind::AuditEvent => "Event",
            Kind::ServiceInstance => "Service instance",
            Kind::ServiceBinding => "Service credential binding",
            Kind::Sidecar => "Sidecar",
        }
    }
}

/// Where in a route the checked resource is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The first path parameter.
    Path(Kind),
    /// A JSON pointer into the request body (a create's relationship).
    Body(Kind, &'static str),
    /// Nothing: the rule is global, or the list is narrowed by its fetcher.
    None,
}

/// What the caller needs on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any valid token (lists narrow themselves; shared things).
    Token,
    Read,
    /// Space developer (or admin).
    Write,
    /// Developer or supporter.
    Operate,
    /// Environment variables.
    Secrets,
    /// Space manager, its org's manager, or admin.
    ManageSpace,
    /// Org manager or admin.
    ManageOrg,
    /// Admin only.
    Admin,
}

/// One route's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub target: Target,
    pub need: Need,
}

const fn rule(target: Target, need: Need) -> Option<Policy> {
    Some(Policy { target, need })
}

/// The rule of every authenticated route, by method and route template. A
/// route not named here is refused to all but admins, so a new endpoint
/// cannot skip the check (and the table test fails until it is added).
pub fn policy(method: &str, route: &str) -> Option<Policy> {
    use Kind::*;
    use Need::*;
    use Target::{Body, None as Nothing, Path as P};
    match (method, route) {
        ("GET", "/v3/organizations") => rule(Nothing, Token),
        // Admins, or anyone while the user_org_creation flag is on (its
        // handler asks).
        ("POST", "/v3/organizations") => rule(Nothing, Token),
        ("GET", "/v3/organizations/{guid}")
        | ("GET", "/v3/organizations/{guid}/domains")
        | ("GET", "/v3/organizations/{guid}/domains/default") => rule(P(Org), Read),
        ("PATCH", "/v3/organizations/{guid}") => rule(P(Org), ManageOrg),
        ("DELETE", "/v3/organizations/{guid}") => rule(P(Org), Admin),
        ("GET", "/v3/spaces") => rule(Nothing, Token),
        ("POST", "/v3/spaces") => rule(
            Body(Org, "/relationships/organization/data/guid"),
            ManageOrg,
        ),
        ("GET", "/v3/spaces/{guid}")
        | ("GET", "/v3/spaces/{guid}/features")
        | ("GET", "/v3/spaces/{guid}/features/{name}") => rule(P(Space), Read),
        // CC's can_update_active_space: space and org managers.
        ("PATCH", "/v3/spaces/{guid}/features/{name}") => rule(P(Space), ManageSpace),
        ("PATCH", "/v3/spaces/{guid}") => rule(P(Space), ManageSpace),
        ("DELETE", "/v3/spaces/{guid}") => rule(P(Space), ManageOrg),
        ("POST", "/v3/spaces/{guid}/manifest_diff")
        | ("POST", "/v3/spaces/{guid}/actions/apply_manifest") => rule(P(Space), Write),
        // A private domain is for its org's managers; shared ones for
        // admins (the handler asks when the body names no org).
        ("POST", "/v3/domains") => rule(
            Body(Org, "/relationships/organization/data/guid"),
            ManageOrg,
        ),
        // Who sees a private domain depends on its owner and the orgs it
        // is shared with: the fetchers and actions ask this module.
        ("DELETE", "/v3/domains/{guid}")
        | ("PATCH", "/v3/domains/{guid}")
        | ("GET", "/v3/domains/{guid}/relationships/shared_organizations")
        | ("POST", "/v3/domains/{guid}/relationships/shared_organizations")
        | ("DELETE", "/v3/domains/{guid}/relationships/shared_organizations/{org_guid}") => {
            rule(Nothing, Token)
        }
        ("GET", "/v3/domains")
        | ("GET", "/v3/domains/{guid}")
        | ("GET", "/v3/stacks")
        | ("GET", "/v3/stacks/{guid}")
        | ("GET", "/v3/jobs/{guid}")
        | ("GET", "/v3/feature_flags")
        | ("GET", "/v3/buildpacks")
        | ("GET", "/v3/buildpacks/{guid}")
        | ("POST", "/v3/resource_matches") => rule(Nothing, Token),
        ("POST", "/v3/buildpacks")
        | ("POST", "/v3/buildpacks/{guid}/upload")
        | ("PATCH", "/v3/buildpacks/{guid}")
        | ("DELETE", "/v3/buildpacks/{guid}") => rule(Nothing, Admin),
        ("GET", "/v3/apps/{guid}/features")
        | ("GET", "/v3/apps/{guid}/features/{name}")
        | ("GET", "/v3/apps/{guid}/ssh_enabled") => rule(P(App), Read),
        ("PATCH", "/v3/apps/{guid}/features/{name}") => rule(P(App), Write),
        ("GET", "/v3/deployments") => rule(Nothing, Token),
        ("POST", "/v3/deployments") => rule(Body(App, "/relationships/app/data/guid"), Operate),
        ("GET", "/v3/deployments/{guid}") => rule(P(Deployment), Read),
        ("POST", "/v3/deployments/{guid}/actions/cancel")
        | ("POST", "/v3/deployments/{guid}/actions/continue") => rule(P(Deployment), Operate),
        ("GET", "/v3/revisions/{guid}") => rule(P(Revision), Read),
        ("GET", "/v3/revisions/{guid}/environment_variables") => rule(P(Revision), Secrets),
        ("GET", "/v3/apps") => rule(Nothing, Token),
        ("POST", "/v3/apps") => rule(Body(Space, "/relationships/space/data/guid"), Write),
        ("GET", "/v3/apps/{guid}")
        | ("GET", "/v3/apps/{guid}/relationships/current_droplet")
        | ("GET", "/v3/apps/{guid}/droplets/current")
        | ("GET", "/v3/apps/{guid}/processes")
        | ("GET", "/v3/apps/{guid}/processes/{ptype}")
        | ("GET", "/v3/apps/{guid}/routes")
        | ("GET", "/v3/apps/{guid}/packages")
        | ("GET", "/v3/apps/{guid}/droplets")
        | ("GET", "/v3/apps/{guid}/builds")
        | ("GET", "/v3/apps/{guid}/revisions")
        | ("GET", "/api/v1/read/{source_id}") => rule(P(App), Read),
        ("PATCH", "/v3/apps/{guid}")
        | ("DELETE", "/v3/apps/{guid}")
        | ("PATCH", "/v3/apps/{guid}/relationships/current_droplet")
        | ("PATCH", "/v3/apps/{guid}/environment_variables") => rule(P(App), Write),
        ("POST", "/v3/apps/{guid}/actions/start")
        | ("POST", "/v3/apps/{guid}/actions/stop")
        | ("POST", "/v3/apps/{guid}/actions/restart")
        | ("POST", "/v3/apps/{guid}/processes/{ptype}/actions/scale") => rule(P(App), Operate),
        ("GET", "/v3/apps/{guid}/env") | ("GET", "/v3/apps/{guid}/environment_variables") => {
            rule(P(App), Secrets)
        }
        ("GET", "/v3/processes") => rule(Nothing, Token),
        ("GET", "/v3/processes/{guid}")
        | ("GET", "/v3/processes/{guid}/stats")
        | ("GET", "/v3/processes/{guid}/sidecars") => rule(P(Process), Read),
        ("PATCH", "/v3/processes/{guid}") => rule(P(Process), Write),
        ("POST", "/v3/processes/{guid}/actions/scale") => rule(P(Process), Operate),
        ("GET", "/v3/packages") => rule(Nothing, Token),
        ("POST", "/v3/packages") => rule(Body(App, "/relationships/app/data/guid"), Write),
        ("GET", "/v3/packages/{guid}") | ("GET", "/v3/packages/{guid}/droplets") => {
            rule(P(Package), Read)
        }
        ("POST", "/v3/packages/{guid}/upload") => rule(P(Package), Write),
        ("GET", "/v3/builds") | ("GET", "/v3/droplets") => rule(Nothing, Token),
        ("POST", "/v3/builds") => rule(Body(Package, "/package/guid"), Operate),
        ("GET", "/v3/builds/{guid}") => rule(P(Build), Read),
        ("GET", "/v3/droplets/{guid}") => rule(P(Droplet), Read),
        // Droplets by hand: made and uploaded by the app's developers,
        // downloaded by who reads the space's secrets (a droplet holds the
        // app's code).
        ("POST", "/v3/droplets") => rule(Body(App, "/relationships/app/data/guid"), Write),
        ("POST", "/v3/droplets/{guid}/upload") => rule(P(Droplet), Write),
        ("GET", "/v3/droplets/{guid}/download") => rule(P(Droplet), Secrets),
        ("GET", "/v3/routes") => rule(Nothing, Token),
        ("POST", "/v3/routes") => rule(Body(Space, "/relationships/space/data/guid"), Write),
        ("GET", "/v3/routes/{guid}") | ("GET", "/v3/routes/{guid}/destinations") => {
            rule(P(Route), Read)
        }
        ("DELETE", "/v3/routes/{guid}")
        | ("POST", "/v3/routes/{guid}/destinations")
        | ("DELETE", "/v3/routes/{guid}/destinations/{dguid}") => rule(P(Route), Write),
        // Labels and annotations, settings, usage (issue 14).
        ("PATCH", "/v3/packages/{guid}") => rule(P(Package), Write),
        ("PATCH", "/v3/builds/{guid}") => rule(P(Build), Write),
        ("PATCH", "/v3/droplets/{guid}") => rule(P(Droplet), Write),
        ("PATCH", "/v3/routes/{guid}") => rule(P(Route), Write),
        ("PATCH", "/v3/deployments/{guid}") => rule(P(Deployment), Write),
        ("PATCH", "/v3/revisions/{guid}") => rule(P(Revision), Write),
        ("PATCH", "/v3/tasks/{guid}") => rule(P(Task), Write),
        ("PATCH", "/v3/stacks/{guid}")
        | ("PATCH", "/v3/users/{guid}")
        | ("PATCH", "/v3/feature_flags/{name}")
        | ("PATCH", "/v3/environment_variable_groups/{name}")
        | ("GET", "/v3/info/usage_summary") => rule(Nothing, Admin),
        ("GET", "/v3/feature_flags/{name}") | ("GET", "/v3/environment_variable_groups/{name}") => {
            rule(Nothing, Token)
        }
        ("GET", "/v3/organizations/{guid}/usage_summary") => rule(P(Org), Read),
        ("GET", "/v3/domains/{guid}/route_reservations") => rule(Nothing, Token),
        ("GET", "/v3/packages/{guid}/download") => rule(P(Package), Secrets),
        ("GET", "/v3/apps/{guid}/revisions/deployed") => rule(P(App), Read),
        ("GET", "/v3/apps/{guid}/manifest") => rule(P(App), Secrets),
        ("POST", "/v3/apps/{guid}/actions/clear_buildpack_cache") => rule(P(App), Write),
        // Users: CC's and UAA's. Who may see a user, and who may grant or
        // revoke a role, depends on more than the route: the fetchers and
        // actions ask this module.
        ("GET", "/v3/users") | ("GET", "/v3/users/{guid}") => rule(Nothing, Token),
        ("POST", "/v3/users") | ("DELETE", "/v3/users/{guid}") => rule(Nothing, Admin),
        ("GET", "/v3/roles") | ("POST", "/v3/roles") => rule(Nothing, Token),
        ("GET", "/v3/roles/{guid}") | ("DELETE", "/v3/roles/{guid}") => rule(P(Role), Read),
        ("GET", "/v3/tasks") | ("GET", "/v3/audit_events") => rule(Nothing, Token),
        ("GET", "/v3/apps/{guid}/tasks") => rule(P(App), Read),
        ("POST", "/v3/apps/{guid}/tasks") => rule(P(App), Write),
        ("GET", "/v3/tasks/{guid}") => rule(P(Task), Read),
        ("POST", "/v3/tasks/{guid}/actions/cancel") | ("PUT", "/v3/tasks/{guid}/cancel") => {
            rule(P(Task), Write)
        }
        ("GET", "/v3/audit_events/{guid}") => rule(P(AuditEvent), Read),
        // Services: user-provided instances in a space, and their app
        // bindings (in the app's space). Credentials are secrets.
        ("GET", "/v3/service_instances") | ("GET", "/v3/service_credential_bindings") => {
            rule(Nothing, Token)
        }
        ("POST", "/v3/service_instances") => {
            rule(Body(Space, "/relationships/space/data/guid"), Write)
        }
        ("GET", "/v3/service_instances/{guid}") => rule(P(ServiceInstance), Read),
        ("PATCH", "/v3/service_instances/{guid}") | ("DELETE", "/v3/service_instances/{guid}") => {
            rule(P(ServiceInstance), Write)
        }
        ("GET", "/v3/service_instances/{guid}/credentials") => rule(P(ServiceInstance), Secrets),
        ("POST", "/v3/service_credential_bindings") => {
            rule(Body(App, "/relationships/app/data/guid"), Write)
        }
        // `details` is a 404 to who may not read secrets (CC's words): its
        // handler asks.
        ("GET", "/v3/service_credential_bindings/{guid}")
        | ("GET", "/v3/service_credential_bindings/{guid}/details")
        | ("GET", "/v3/service_credential_bindings/{guid}/parameters") => {
            rule(P(ServiceBinding), Read)
        }
        ("DELETE", "/v3/service_credential_bindings/{guid}") => rule(P(ServiceBinding), Write),
        // Quotas: anyone reads them (each shows only the orgs the caller
        // sees); admins make, change and apply them.
        ("GET", "/v3/organization_quotas") | ("GET", "/v3/organization_quotas/{guid}") => {
            rule(Nothing, Token)
        }
        ("POST", "/v3/organization_quotas")
        | ("PATCH", "/v3/organization_quotas/{guid}")
        | ("DELETE", "/v3/organization_quotas/{guid}")
        | ("POST", "/v3/organization_quotas/{guid}/relationships/organizations") => {
            rule(Nothing, Admin)
        }
        // Space quotas: org managers of the quota's org (and admins) make
        // and change them; who sees one depends on the spaces it is on, so
        // the fetchers and actions ask this module (404 unseen, 403 seen).
        ("POST", "/v3/space_quotas") => rule(
            Body(Org, "/relationships/organization/data/guid"),
            ManageOrg,
        ),
        ("GET", "/v3/space_quotas")
        | ("GET", "/v3/space_quotas/{guid}")
        | ("PATCH", "/v3/space_quotas/{guid}")
        | ("DELETE", "/v3/space_quotas/{guid}")
        | ("POST", "/v3/space_quotas/{guid}/relationships/spaces")
        | ("DELETE", "/v3/space_quotas/{guid}/relationships/spaces/{space_guid}") => {
            rule(Nothing, Token)
        }
        // Sidecars: read with the app, changed by its space's developers.
        ("GET", "/v3/apps/{guid}/sidecars") => rule(P(App), Read),
        ("POST", "/v3/apps/{guid}/sidecars") => rule(P(App), Write),
        ("GET", "/v3/sidecars/{guid}") => rule(P(Sidecar), Read),
        ("PATCH", "/v3/sidecars/{guid}") | ("DELETE", "/v3/sidecars/{guid}") => {
            rule(P(Sidecar), Write)
        }
        ("POST", "/Users") => rule(Nothing, Admin),
        ("PUT", "/Users/{guid}/password") => rule(Nothing, Token),
        _ => None,
    }
}

/// The org and (for space-scoped things) space a resource is in; `None`
/// when it does not exist (its handler answers that).
pub async fn owner(
    ctx: &Ctx,
    kind: Kind,
    guid: &str,
) -> ApiResult<Option<(String, Option<String>)>> {
    let space_of_app = |app: Option<App>| app.map(|a| a.space_guid);
    let space = match kind {
        Kind::Org => {
            return Ok(db::find::<db::Organization>(&ctx.pool, guid)
                .await?
                .map(|o| (o.guid, None)));
        }
        Kind::Role => {
            return Ok(db::find::<Role>(&ctx.pool, guid)
                .await?
                .map(|r| (r.organization_guid, r.space_guid)));
        }
        Kind::AuditEvent => {
            // An org's own events (a space created, say) have no space.
            return Ok(db::find::<db::AuditEvent>(&ctx.pool, guid)
                .await?
                .and_then(|e| Some((e.organization_guid?, e.space_guid))));
        }
        Kind::Task => {
            app_space(
                ctx,
                db::find::<db::Task>(&ctx.pool, guid)
                    .await?
                    .map(|t| t.app_guid),
            )
            .await?
        }
        Kind::ServiceInstance => db::find::<db::ServiceInstance>(&ctx.pool, guid)
            .await?
            .map(|si| si.space_guid),
        Kind::ServiceBinding => {
            app_space(
                ctx,
                db::find::<db::ServiceBinding>(&ctx.pool, guid)
                    .await?
                    .map(|b| b.app_guid),
            )
            .await?
        }
        Kind::Sidecar => {
            app_space(
                ctx,
                db::find::<db::Sidecar>(&ctx.pool, guid)
                    .await?
                    .map(|s| s.app_guid),
            )
            .await?
        }
        Kind::Space => Some(guid.to_string()),
        Kind::App => space_of_app(db::find::<App>(&ctx.pool, guid).await?),
        Kind::Route => db::find::<Route>(&ctx.pool, guid)
            .await?
            .map(|r| r.space_guid),
        Kind::Process => {
            app_space(
                ctx,
                db::find::<db::Process>(&ctx.pool, guid)
                    .await?
                    .map(|p| p.app_guid),
            )
            .await?
        }
        Kind::Package => {
            app_space(
                ctx,
                db::find::<db::Package>(&ctx.pool, guid)
                    .await?
                    .map(|p| p.app_guid),
            )
            .await?
        }
        Kind::Build => {
            app_space(
                ctx,
                db::find::<db::Build>(&ctx.pool, guid)
                    .await?
                    .map(|p| p.app_guid),
            )
            .await?
        }
        Kind::Droplet => {
            app_space(
                ctx,
                db::find::<db::Droplet>(&ctx.pool, guid)
                    .await?
                    .map(|p| p.app_guid),
            )
            .await?
        }
        Kind::Deployment => {
            app_space(
                ctx,
                db::find::<db::Deployment>(&ctx.pool, guid)
                    .await?
                    .map(|p| p.app_guid),
            )
            .await?
        }
        Kind::Revision => {
            app_space(
                ctx,
                db::find::<db::Revision>(&ctx.pool, guid)
                    .await?
                    .map(|p| p.app_guid),
            )
            .await?
        }
    };
    let Some(space) = space else {
        return Ok(None);
    };
    Ok(db::find::<Space>(&ctx.pool, &space)
        .await?
        .map(|s| (s.organization_guid, Some(s.guid))))
}

async fn app_space(ctx: &Ctx, app_guid: Option<String>) -> ApiResult<Option<String>> {
    let Some(app_guid) = app_guid else {
        return Ok(None);
    };
    Ok(db::find::<App>(&ctx.pool, &app_guid)
        .await?
        .map(|a| a.space_guid))
}

/// Checks `need` on a resource in `org` (and `space`): 404 in the
/// resource's words when the caller may not see it, 403 CF-NotAuthorized
/// when it sees it but may not do this.
pub fn check(
    perms: &Permissions,
    need: Need,
    kind: Kind,
    org: &str,
    space: Option<&str>,
) -> ApiResult<()> {
    let visible = match space {
        Some(s) => perms.can_read_space(s),
        // A role in a space is seen by who sees the space; an org by its
        // members.
        None => perms.can_read_org(org),
    };
    if !visible {
        return Err(ApiError::not_found(kind.resource()));
    }
    let allowed = match (need, space) {
        (Need::Token | Need::Read, _) => true,
        (Need::Admin, _) => perms.is_admin(),
        (Need::ManageOrg, _) => perms.can_manage_org(org),
        (Need::ManageSpace, Some(s)) => perms.can_manage_space(s, org),
        (Need::Write, Some(s)) => perms.can_write_space(s),
        (Need::Operate, Some(s)) => perms.can_operate_space(s),
        (Need::Secrets, Some(s)) => perms.can_read_secrets(s),
        // A space need on an org-level thing: only an admin has it.
        (_, None) => perms.is_admin(),
    };
    if allowed {
        Ok(())
    } else {
        Err(ApiError::not_authorized())
    }
}

/// Checks a rule without a target (global ones).
pub fn check_global(perms: &Permissions, need: Need) -> ApiResult<()> {
    match need {
        Need::Admin if !perms.is_admin() => Err(ApiError::not_authorized()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(global: Global) -> Permissions {
        Permissions {
            user_guid: "u".into(),
            global,
            roles: Vec::new(),
            spaces: Vec::new(),
            orgs: Vec::new(),
        }
    }

    #[test]
    fn admin_read_only_reads_everything_and_changes_nothing() {
        let ro = caller(Global::AdminReadOnly);
        assert_eq!(ro.readable_spaces(), None);
        assert_eq!(ro.readable_orgs(), None);
        for need in [Need::Read, Need::Secrets] {
            assert!(check(&ro, need, Kind::App, "o", Some("s")).is_ok());
        }
        for need in [
            Need::Write,
            Need::Operate,
            Need::ManageSpace,
            Need::ManageOrg,
            Need::Admin,
        ] {
            let e = check(&ro, need, Kind::App, "o", Some("s")).unwrap_err();
            assert!(
                matches!(e, ApiError::Cf { code: 10003, .. }),
                "{need:?}: {e}"
            );
        }
        assert!(check_global(&ro, Need::Admin).is_err());
        assert!(!ro.can_grant("o", None));
    }

    #[test]
    fn no_role_sees_nothing() {
        let nobody = caller(Global::None);
        assert_eq!(nobody.readable_spaces(), Some(Vec::new()));
        let e = check(&nobody, Need::Read, Kind::Route, "o", Some("s")).unwrap_err();
        assert_eq!(e.to_string(), "CF-ResourceNotFound: Route not found");
    }
}
