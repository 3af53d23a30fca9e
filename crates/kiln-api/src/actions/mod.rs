//! Actions: every change of state the API makes, one function each, with
//! no HTTP in them (Cloud Controller's `app/actions`). They take request
//! messages, check what needs the database, write through `db` (several
//! rows in one transaction) and tell the BBS through `diego`.

pub mod app_features;
pub mod apps;
pub mod bootstrap;
pub mod buildpacks;
pub mod builds;
pub mod custom_buildpacks;
pub mod deployments;
pub mod domains;
pub mod droplets;
pub mod jobs;
pub mod manifest;
pub mod metadata;
pub mod packages;
pub mod processes;
pub mod quotas;
pub mod roles;
pub mod routes;
pub mod service_bindings;
pub mod service_instances;
pub mod settings;
pub mod sidecars;
pub mod space_features;
pub mod space_quotas;
pub mod spaces;
pub mod tasks;
pub mod users;
