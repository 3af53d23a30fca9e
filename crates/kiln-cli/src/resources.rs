//! The parts of Cloud Foundry v3 resources the CLI reads. Lenient on
//! purpose: unknown fields are ignored and missing ones default, so the CLI
//! keeps working against a real Cloud Controller that sends more.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize)]
pub struct Page<T> {
    #[serde(default)]
    pub pagination: Pagination,
    #[serde(default = "Vec::new")]
    pub resources: Vec<T>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Pagination {
    pub next: Option<Link>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Link {
    pub href: String,
}

/// One entry of the v3 `errors` envelope (also used by jobs).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct CfError {
    pub code: i64,
    pub title: String,
    pub detail: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Job {
    pub state: String,
    pub errors: Vec<CfError>,
}

/// Anything with a guid and a name (orgs, spaces, domains).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Named {
    pub guid: String,
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Guid {
    pub guid: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct App {
    pub guid: String,
    pub name: String,
    /// `STARTED` or `STOPPED` (`kiln_model::AppState`).
    pub state: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Process {
    pub guid: String,
    #[serde(rename = "type")]
    pub process_type: String,
    pub command: Option<String>,
    pub instances: u32,
    pub memory_in_mb: u64,
    pub disk_in_mb: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ProcessStats {
    pub resources: Vec<InstanceStats>,
}

/// One instance in `GET /v3/processes/:guid/stats`; quotas and usage in bytes.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct InstanceStats {
    pub index: u32,
    pub state: String,
    pub uptime: u64,
    pub mem_quota: Option<u64>,
    pub disk_quota: Option<u64>,
    pub details: Option<String>,
    pub usage: Usage,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Usage {
    pub cpu: f64,
    pub mem: u64,
    pub disk: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Route {
    pub guid: String,
    pub host: String,
    pub path: String,
    pub url: String,
    pub destinations: Vec<Destination>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Destination {
    pub app: Guid,
}

/// `GET /v3/routes/:guid/destinations`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RouteDestinations {
    pub destinations: Vec<Destination>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Package {
    pub guid: String,
    pub state: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Build {
    pub guid: String,
    pub created_at: String,
    pub state: String,
    pub error: Option<String>,
    pub droplet: Option<Guid>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Droplet {
    pub guid: String,
    pub created_at: String,
    pub stack: Option<String>,
    pub buildpacks: Option<Vec<DropletBuildpack>>,
    pub process_types: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct DropletBuildpack {
    pub name: String,
    pub buildpack_name: Option<String>,
    pub detect_output: Option<String>,
    pub version: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Buildpack {
    pub guid: String,
    pub name: String,
    pub stack: Option<String>,
    pub position: u32,
    pub enabled: bool,
    pub locked: bool,
    pub state: String,
    pub filename: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cloud_controller_shapes_leniently() {
        let page: Page<Process> = serde_json::from_str(
            r#"{"pagination":{"total_results":1,"next":{"href":"http://api/v3/x?page=2"},"previous":null},
                "resources":[{"guid":"w","type":"web","command":null,"instances":1,"memory_in_mb":256,
                              "disk_in_mb":1024,"health_check":{"type":"port"},"links":{}}]}"#,
        )
        .unwrap();
        assert_eq!(page.pagination.next.unwrap().href, "http://api/v3/x?page=2");
        assert_eq!(page.resources[0].process_type, "web");
        assert_eq!(page.resources[0].command, None);

        // A DOWN instance carries no quotas and an empty usage.
        let stats: ProcessStats = serde_json::from_str(
            r#"{"resources":[{"type":"web","index":0,"state":"DOWN","uptime":0,"details":null,"usage":{}}]}"#,
        )
        .unwrap();
        assert_eq!(stats.resources[0].state, "DOWN");
        assert_eq!(stats.resources[0].mem_quota, None);

        let build: Build =
            serde_json::from_str(r#"{"guid":"b","state":"STAGING","error":null,"droplet":null}"#)
                .unwrap();
        assert!(build.droplet.is_none());
    }
}
