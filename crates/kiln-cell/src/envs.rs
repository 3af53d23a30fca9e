//! The environment of a container process, as Diego's rep and executor
//! build it: defaults (`PATH`, `USER`, `HOME`), then the definition's env,
//! then the run action's env, then — for LRP instances — the per-instance
//! variables, which win because the cell alone knows them: `PORT` is the
//! port the app listens on inside its namespace (8080, as on Diego),
//! `CF_INSTANCE_PORT`/`CF_INSTANCE_ADDR` the host side that maps to it,
//! `CF_INSTANCE_INTERNAL_IP` the container's own address. A later entry replaces an earlier one of the
//! same name, keeping the first position.

use kiln_model::bbs::EnvVar;

/// What the cell knows about one LRP instance.
#[derive(Debug, Clone)]
pub struct InstanceEnv<'a> {
    pub instance_guid: &'a str,
    pub index: u32,
    /// The cell's address (`CF_INSTANCE_IP`).
    pub address: &'a str,
    /// The host port mapped to `container_port`.
    pub port: u16,
    /// The container's address on the cell network.
    pub internal_ip: &'a str,
    /// `$PORT`: where the app listens inside.
    pub container_port: u16,
}

fn defaults() -> Vec<(String, String)> {
    vec![
        ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
        ("USER".into(), "vcap".into()),
        ("HOME".into(), "/home/vcap".into()),
    ]
}

/// `NAME=value` strings for a process.
pub fn build(definition: &[EnvVar], run: &[EnvVar], instance: Option<&InstanceEnv>) -> Vec<String> {
    let mut vars = defaults();
    let mut set = |name: &str, value: String| match vars.iter_mut().find(|(n, _)| n == name) {
        Some(slot) => slot.1 = value,
        None => vars.push((name.to_string(), value)),
    };
    for e in definition.iter().chain(run) {
        set(&e.name, e.value.clone());
    }
    if let Some(i) = instance {
        let port = i.port.to_string();
        let inside = i.container_port.to_string();
        let ports =
            serde_json::json!([{"external": i.port, "internal": i.container_port}]).to_string();
        set("PORT", inside.clone());
        set("VCAP_APP_PORT", inside);
        set("INSTANCE_GUID", i.instance_guid.into());
        set("INSTANCE_INDEX", i.index.to_string());
        set("CF_INSTANCE_GUID", i.instance_guid.into());
        set("CF_INSTANCE_INDEX", i.index.to_string());
        set("CF_INSTANCE_IP", i.address.into());
        set("CF_INSTANCE_INTERNAL_IP", i.internal_ip.into());
        set("CF_INSTANCE_PORT", port.clone());
        set("CF_INSTANCE_ADDR", format!("{}:{port}", i.address));
        set("CF_INSTANCE_PORTS", ports);
    }
    vars.into_iter().map(|(n, v)| format!("{n}={v}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_sources_win_and_instance_vars_win_last() {
        let definition = [EnvVar::new("LANG", "C"), EnvVar::new("PORT", "8080")];
        let run = [
            EnvVar::new("LANG", "en_US.UTF-8"),
            EnvVar::new("PATH", "/x"),
        ];
        let instance = InstanceEnv {
            instance_guid: "ig-1",
            index: 2,
            address: "127.0.0.1",
            port: 61001,
            internal_ip: "10.254.0.2",
            container_port: 8080,
        };
        let env = build(&definition, &run, Some(&instance));
        let get = |name: &str| {
            let prefix = format!("{name}=");
            let hits: Vec<_> = env.iter().filter(|e| e.starts_with(&prefix)).collect();
            assert_eq!(hits.len(), 1, "{name} once");
            hits[0][prefix.len()..].to_string()
        };
        assert_eq!(get("LANG"), "en_US.UTF-8");
        assert_eq!(get("PATH"), "/x");
        assert_eq!(get("PORT"), "8080");
        assert_eq!(get("VCAP_APP_PORT"), "8080");
        assert_eq!(get("CF_INSTANCE_PORT"), "61001");
        assert_eq!(get("CF_INSTANCE_ADDR"), "127.0.0.1:61001");
        assert_eq!(get("CF_INSTANCE_IP"), "127.0.0.1");
        assert_eq!(get("CF_INSTANCE_INTERNAL_IP"), "10.254.0.2");
        assert_eq!(get("CF_INSTANCE_INDEX"), "2");
        assert_eq!(
            get("CF_INSTANCE_PORTS"),
            r#"[{"external":61001,"internal":8080}]"#
        );
        assert_eq!(get("USER"), "vcap");

        let task_env = build(&[], &[], None);
        assert_eq!(
            task_env,
            [
                "PATH=/usr/local/bin:/usr/bin:/bin",
                "USER=vcap",
                "HOME=/home/vcap"
            ]
        );
    }
}
