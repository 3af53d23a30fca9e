//! The YAML documents buildpacks and apps use to name process types and
//! their start commands: `deps/<i>/launch.yml`, the output of `bin/release`
//! (`default_process_types`), the app's `Procfile`, and the buildpack's
//! `deps/<i>/config.yml` (its name and version).

use kiln_model::staging::BuildpackSidecar;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Process type → start command.
pub type ProcessTypes = BTreeMap<String, String>;

#[derive(Debug, thiserror::Error)]
#[error("invalid YAML: {0}")]
pub struct YamlError(String);

#[derive(Debug, Default, Deserialize)]
struct LaunchYml {
    #[serde(default)]
    processes: Vec<LaunchProcess>,
}

#[derive(Debug, Deserialize)]
struct LaunchProcess {
    #[serde(rename = "type")]
    process_type: String,
    #[serde(default)]
    command: String,
    #[serde(default)]
    platforms: Platforms,
    #[serde(default)]
    limits: Limits,
}

#[derive(Debug, Default, Deserialize)]
struct Limits {
    /// MB; 0 or absent means none of its own.
    #[serde(default)]
    memory: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
struct Platforms {
    #[serde(default)]
    cloudfoundry: CloudFoundryPlatform,
}

#[derive(Debug, Default, Deserialize)]
struct CloudFoundryPlatform {
    #[serde(default)]
    sidecar_for: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Release {
    #[serde(default)]
    default_process_types: Option<BTreeMap<String, Scalar>>,
}

/// A YAML scalar taken as text: deserializing into `String` keeps a plain
/// scalar's source text (`1.10` stays `1.10`, `8080` is a command too);
/// `null` is empty.
type Scalar = Option<String>;

fn parse<T: for<'de> Deserialize<'de> + Default>(text: &str) -> Result<T, YamlError> {
    // An empty document (or one that is only comments) means "nothing".
    if text
        .lines()
        .all(|line| line.trim().is_empty() || line.trim_start().starts_with('#'))
    {
        return Ok(T::default());
    }
    serde_saphyr::from_str::<Option<T>>(text)
        .map(Option::unwrap_or_default)
        .map_err(|error| YamlError(error.to_string()))
}

fn into_process_types(map: Option<BTreeMap<String, Scalar>>) -> ProcessTypes {
    map.unwrap_or_default()
        .into_iter()
        .map(|(process_type, command)| (process_type, command.unwrap_or_default()))
        .collect()
}

/// Sidecars a `launch.yml` declares: its processes with
/// `platforms.cloudfoundry.sidecar_for`, named by their type.
pub fn sidecars_from_launch_yml(text: &str) -> Result<Vec<BuildpackSidecar>, YamlError> {
    let launch: LaunchYml = parse(text)?;
    Ok(launch
        .processes
        .into_iter()
        .filter(|process| !process.platforms.cloudfoundry.sidecar_for.is_empty())
        .map(|process| BuildpackSidecar {
            name: process.process_type,
            process_types: process.platforms.cloudfoundry.sidecar_for,
            command: process.command,
            memory: process.limits.memory.filter(|&mb| mb > 0),
        })
        .collect())
}

/// Process types a `launch.yml` declares. Sidecar entries
/// (`platforms.cloudfoundry.sidecar_for`) are left out: see
/// [`sidecars_from_launch_yml`].
pub fn from_launch_yml(text: &str) -> Result<ProcessTypes, YamlError> {
    let launch: LaunchYml = parse(text)?;
    Ok(launch
        .processes
        .into_iter()
        .filter(|process| process.platforms.cloudfoundry.sidecar_for.is_empty())
        .map(|process| (process.process_type, process.command))
        .collect())
}

/// `default_process_types` of `bin/release` output.
pub fn from_release(text: &str) -> Result<ProcessTypes, YamlError> {
    let release: Release = parse(text)?;
    Ok(into_process_types(release.default_process_types))
}

/// A `Procfile`: a YAML map of process type to command.
pub fn from_procfile(text: &str) -> Result<ProcessTypes, YamlError> {
    let map: BTreeMap<String, Scalar> = parse(text)?;
    Ok(into_process_types(Some(map)))
}

/// What a buildpack says about itself in `deps/<i>/config.yml`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BuildpackConfig {
    pub name: Option<String>,
    pub version: Option<String>,
    /// Replaces `bash -c` in front of the start command at launch.
    pub entrypoint_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawBuildpackConfig {
    #[serde(default)]
    name: Scalar,
    #[serde(default)]
    version: Scalar,
    #[serde(default)]
    config: Option<RawEntrypointConfig>,
}

#[derive(Debug, Default, Deserialize)]
struct RawEntrypointConfig {
    #[serde(default)]
    entrypoint_prefix: Option<String>,
}

/// Parse a `config.yml`; unreadable ones count as empty, as in Cloud
/// Foundry (the metadata is informative only).
pub fn buildpack_config(text: &str) -> BuildpackConfig {
    let raw: RawBuildpackConfig = parse(text).unwrap_or_default();
    BuildpackConfig {
        name: raw.name,
        version: raw.version,
        entrypoint_prefix: raw.config.and_then(|config| config.entrypoint_prefix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(pairs: &[(&str, &str)]) -> ProcessTypes {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn procfiles() {
        for (text, expected) in [
            (
                "web: bundle exec rackup -p $PORT\n",
                types(&[("web", "bundle exec rackup -p $PORT")]),
            ),
            (
                "web: ./server --port=$PORT\nworker: ./work 'a b'\n",
                types(&[("web", "./server --port=$PORT"), ("worker", "./work 'a b'")]),
            ),
            ("", types(&[])),
            ("# nothing\n\n", types(&[])),
            ("web: 8080\n", types(&[("web", "8080")])),
            (
                "web: 1.10\nworker: true\nclock: ~\n",
                types(&[("web", "1.10"), ("worker", "true"), ("clock", "")]),
            ),
        ] {
            assert_eq!(from_procfile(text).unwrap(), expected, "{text:?}");
        }
        assert!(from_procfile("web: [unclosed\n").is_err());
        assert!(from_procfile("- just\n- a list\n").is_err());
    }

    #[test]
    fn release_output() {
        for (text, expected) in [
            (
                "---\ndefault_process_types:\n  web: node server.js\n  worker: node w.js\n",
                types(&[("web", "node server.js"), ("worker", "node w.js")]),
            ),
            (
                "---\naddons: []\nconfig_vars: {}\ndefault_process_types:\n",
                types(&[]),
            ),
            ("--- {}\n", types(&[])),
            ("", types(&[])),
        ] {
            assert_eq!(from_release(text).unwrap(), expected, "{text:?}");
        }
        assert!(from_release("default_process_types: [\n").is_err());
    }

    #[test]
    fn launch_yml_leaves_out_sidecars() {
        let text = "processes:\n\
            - type: web\n  command: ./web\n\
            - type: proxy\n  command: ./proxy\n  platforms:\n    cloudfoundry:\n      sidecar_for: [web]\n\
            - type: worker\n  command: ./worker\n";
        assert_eq!(
            from_launch_yml(text).unwrap(),
            types(&[("web", "./web"), ("worker", "./worker")])
        );
    }

    #[test]
    fn launch_yml_sidecars_have_their_targets_and_memory() {
        let text = "processes:\n\
            - type: web\n  command: ./web\n\
            - type: proxy\n  command: ./proxy --fast\n  limits:\n    memory: 64\n  platforms:\n    cloudfoundry:\n      sidecar_for: [web, worker]\n\
            - type: agent\n  command: ./agent\n  platforms:\n    cloudfoundry:\n      sidecar_for: [web]\n";
        assert_eq!(
            sidecars_from_launch_yml(text).unwrap(),
            [
                BuildpackSidecar {
                    name: "proxy".into(),
                    process_types: vec!["web".into(), "worker".into()],
                    command: "./proxy --fast".into(),
                    memory: Some(64),
                },
                BuildpackSidecar {
                    name: "agent".into(),
                    process_types: vec!["web".into()],
                    command: "./agent".into(),
                    memory: None,
                },
            ]
        );
        assert!(sidecars_from_launch_yml("processes: {\n").is_err());
    }

    #[test]
    fn buildpack_config_is_lenient() {
        let config = buildpack_config(
            "name: ruby\nversion: 1.2.3\nconfig:\n  entrypoint_prefix: tini --\nextra: 1\n",
        );
        assert_eq!(config.name.as_deref(), Some("ruby"));
        assert_eq!(config.version.as_deref(), Some("1.2.3"));
        assert_eq!(config.entrypoint_prefix.as_deref(), Some("tini --"));
        assert_eq!(
            buildpack_config("name: go\nversion: 1.20\n")
                .version
                .as_deref(),
            Some("1.20")
        );
        assert!(buildpack_config("name: [broken").name.is_none());
    }
}
