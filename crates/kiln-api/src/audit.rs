//! Audit events (Cloud Controller's `Event` and its repositories): who did
//! what to which resource, written with the change they describe (callers
//! pass the transaction's connection). Request bodies are censored as
//! Cloud Controller censors them: environment variables, commands and
//! credentials never reach `data`.

use crate::context::{CurrentUser, REQUEST_USER};
use crate::db::{self, App, AuditEvent, Space, Val};
use crate::error::ApiResult;
use crate::util;
use kiln_store::{Executor, Pool};
use serde_json::{Value, json};

/// Cloud Controller's event type strings (`repositories/event_types.rb`).
pub mod types {
    pub const APP_CREATE: &str = "audit.app.create";
    pub const APP_UPDATE: &str = "audit.app.update";
    pub const APP_DELETE_REQUEST: &str = "audit.app.delete-request";
    pub const APP_START: &str = "audit.app.start";
    pub const APP_STOP: &str = "audit.app.stop";
    pub const APP_RESTART: &str = "audit.app.restart";
    pub const APP_MAP_ROUTE: &str = "audit.app.map-route";
    pub const APP_UNMAP_ROUTE: &str = "audit.app.unmap-route";
    pub const APP_DROPLET_MAPPED: &str = "audit.app.droplet.mapped";
    pub const APP_DROPLET_CREATE: &str = "audit.app.droplet.create";
    pub const APP_DROPLET_DOWNLOAD: &str = "audit.app.droplet.download";
    pub const APP_BUILD_CREATE: &str = "audit.app.build.create";
    pub const APP_PACKAGE_CREATE: &str = "audit.app.package.create";
    pub const APP_PACKAGE_UPLOAD: &str = "audit.app.package.upload";
    pub const APP_PROCESS_UPDATE: &str = "audit.app.process.update";
    pub const APP_PROCESS_SCALE: &str = "audit.app.process.scale";
    pub const APP_PROCESS_CRASH: &str = "audit.app.process.crash";
    pub const APP_TASK_CREATE: &str = "audit.app.task.create";
    pub const APP_TASK_CANCEL: &str = "audit.app.task.cancel";
    pub const APP_DEPLOYMENT_CREATE: &str = "audit.app.deployment.create";
    pub const APP_DEPLOYMENT_CANCEL: &str = "audit.app.deployment.cancel";
    pub const APP_DEPLOYMENT_CONTINUE: &str = "audit.app.deployment.continue";
    pub const SPACE_CREATE: &str = "audit.space.create";
    pub const SPACE_UPDATE: &str = "audit.space.update";
    pub const SPACE_DELETE_REQUEST: &str = "audit.space.delete-request";
    pub const ORGANIZATION_CREATE: &str = "audit.organization.create";
    pub const ORGANIZATION_UPDATE: &str = "audit.organization.update";
    pub const ORGANIZATION_DELETE_REQUEST: &str = "audit.organization.delete-request";
    pub const USER_PROVIDED_SERVICE_INSTANCE_CREATE: &str =
        "audit.user_provided_service_instance.create";
    pub const USER_PROVIDED_SERVICE_INSTANCE_UPDATE: &str =
        "audit.user_provided_service_instance.update";
    pub const USER_PROVIDED_SERVICE_INSTANCE_DELETE: &str =
        "audit.user_provided_service_instance.delete";
    pub const SERVICE_BINDING_CREATE: &str = "audit.service_binding.create";
    pub const SERVICE_BINDING_DELETE: &str = "audit.service_binding.delete";
    pub const SPACE_QUOTA_CREATE: &str = "audit.space_quota.create";
    pub const SPACE_QUOTA_UPDATE: &str = "audit.space_quota.update";
    pub const SPACE_QUOTA_DELETE: &str = "audit.space_quota.delete";
    pub const SPACE_QUOTA_APPLY: &str = "audit.space_quota.apply";
    pub const SPACE_QUOTA_REMOVE: &str = "audit.space_quota.remove";
}

/// What Cloud Controller shows in place of a censored value.
pub const PRIVATE_DATA_HIDDEN: &str = "[PRIVATE DATA HIDDEN]";

/// Request keys whose values never reach an event (CC's `CENSORED_FIELDS`,
/// and the secrets of bindings and users).
const CENSORED: &[&str] = &[
    "environment_variables",
    "environment_json",
    "encrypted_environment_json",
    "env",
    "var",
    "command",
    "docker_credentials",
    "credentials",
    "password",
];

/// A request body as an event may keep it: every censored key, at any
/// depth, replaced by [`PRIVATE_DATA_HIDDEN`].
pub fn censor(request: Value) -> Value {
    match request {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    if CENSORED.contains(&k.as_str()) {
                        (k, json!(PRIVATE_DATA_HIDDEN))
                    } else {
                        (k, censor(v))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(censor).collect()),
        other => other,
    }
}

/// Who did it: a user, a process (crashes), or the system.
#[derive(Debug, Clone)]
pub struct Actor {
    pub guid: String,
    pub kind: &'static str,
    pub name: String,
}

impl Actor {
    /// The caller of the request being served, else the system (CC's
    /// `SYSTEM_ACTOR_HASH`).
    pub fn current() -> Actor {
        REQUEST_USER
            .try_with(Actor::user)
            .unwrap_or_else(|_| Actor::system())
    }

    pub fn user(u: &CurrentUser) -> Actor {
        // CC names a user actor by email; Kiln's users may have none.
        let name = if u.email.is_empty() {
            u.name.clone()
        } else {
            u.email.clone()
        };
        Actor {
            guid: u.guid.clone(),
            kind: "user",
            name,
        }
    }

    pub fn system() -> Actor {
        Actor {
            guid: "system".into(),
            kind: "system",
            name: "system".into(),
        }
    }

    /// A process's own events (crashes): named by its type.
    pub fn process(guid: &str, process_type: &str) -> Actor {
        Actor {
            guid: guid.into(),
            kind: "process",
            name: process_type.into(),
        }
    }
}

/// What it was done to.
#[derive(Debug, Clone)]
pub struct Target {
    pub guid: String,
    pub kind: &'static str,
    pub name: String,
}

/// One event to record.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: &'static str,
    pub actor: Actor,
    pub target: Target,
    pub space_guid: Option<String>,
    pub organization_guid: Option<String>,
    pub data: Value,
    /// Identifies an event recorded from a report that may arrive twice.
    pub dedup_key: Option<String>,
}

impl Event {
    pub fn with_dedup_key(mut self, key: String) -> Event {
        self.dedup_key = Some(key);
        self
    }

    pub fn by(mut self, actor: Actor) -> Event {
        self.actor = actor;
        self
    }
}

/// An event about an app, by the current actor, in the app's space and org.
pub async fn app_event(
    pool: &Pool,
    app: &App,
    kind: &'static str,
    data: Value,
) -> ApiResult<Event> {
    let org = space_org(pool, &app.space_guid).await?;
    Ok(Event {
        kind,
        actor: Actor::current(),
        target: Target {
            guid: app.guid.clone(),
            kind: "app",
            name: app.name.clone(),
        },
        space_guid: Some(app.space_guid.clone()),
        organization_guid: org,
        data,
        dedup_key: None,
    })
}

/// An event about a space (`target` the space itself).
pub fn space_event(space: &Space, kind: &'static str, data: Value) -> Event {
    Event {
        kind,
        actor: Actor::current(),
        target: Target {
            guid: space.guid.clone(),
            kind: "space",
            name: space.name.clone(),
        },
        space_guid: Some(space.guid.clone()),
        organization_guid: Some(space.organization_guid.clone()),
        data,
        dedup_key: None,
    }
}

/// An event about an organization.
pub fn org_event(guid: &str, name: &str, kind: &'static str, data: Value) -> Event {
    Event {
        kind,
        actor: Actor::current(),
        target: Target {
            guid: guid.into(),
            kind: "organization",
            name: name.into(),
        },
        space_guid: None,
        organization_guid: Some(guid.into()),
        data,
        dedup_key: None,
    }
}

/// An event about a thing in a space that is neither an app nor the space
/// (a service instance, a binding): `target` as CC names its actee.
pub async fn in_space_event(
    pool: &Pool,
    space_guid: &str,
    kind: &'static str,
    target: Target,
    data: Value,
) -> ApiResult<Event> {
    let org = space_org(pool, space_guid).await?;
    Ok(Event {
        kind,
        actor: Actor::current(),
        target,
        space_guid: Some(space_guid.to_string()),
        organization_guid: org,
        data,
        dedup_key: None,
    })
}

async fn space_org(pool: &Pool, space_guid: &str) -> ApiResult<Option<String>> {
    Ok(db::find::<Space>(pool, space_guid)
        .await?
        .map(|s| s.organization_guid))
}

/// Writes the event, its data censored whoever built it; false when its
/// dedup key was recorded before.
pub async fn record<'e>(exec: impl Executor<'e>, e: Event) -> ApiResult<bool> {
    let now = util::now();
    let values = vec![
        ("guid", util::new_guid().into()),
        ("type", e.kind.into()),
        ("actor_guid", e.actor.guid.into()),
        ("actor_type", e.actor.kind.into()),
        ("actor_name", e.actor.name.into()),
        ("target_guid", e.target.guid.into()),
        ("target_type", e.target.kind.into()),
        ("target_name", e.target.name.into()),
        ("space_guid", e.space_guid.into()),
        ("organization_guid", e.organization_guid.into()),
        ("data", db::json_text(&censor(e.data))),
        ("dedup_key", Val::from(e.dedup_key)),
        ("created_at", now.as_str().into()),
        ("updated_at", now.into()),
    ];
    db::insert_if_absent::<AuditEvent>(exec, values).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_censored_at_any_depth() {
        let request = json!({
            "name": "a",
            "environment_variables": {"SECRET": "s"},
            "lifecycle": {"data": {"buildpacks": ["b"]}},
            "processes": [{"type": "web", "command": "run --password=p"}],
            "credentials": {"password": "p"},
        });
        let censored = censor(request);
        assert_eq!(
            censored,
            json!({
                "name": "a",
                "environment_variables": PRIVATE_DATA_HIDDEN,
                "lifecycle": {"data": {"buildpacks": ["b"]}},
                "processes": [{"type": "web", "command": PRIVATE_DATA_HIDDEN}],
                "credentials": PRIVATE_DATA_HIDDEN,
            })
        );
        assert!(!censored.to_string().contains("run --password"));
    }
}
