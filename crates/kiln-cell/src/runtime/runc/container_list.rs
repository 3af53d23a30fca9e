//! `runc list`: every container under this cell's state root.

use super::RuncRuntime;
use crate::runtime::RuntimeError;
use serde::Deserialize;

#[derive(Deserialize)]
struct ListedContainer {
    id: String,
}

pub(super) async fn list(runtime: &RuncRuntime) -> Result<Vec<String>, RuntimeError> {
    // A root that was never created holds no containers.
    if !runtime.root.exists() {
        return Ok(Vec::new());
    }
    // runc reads the root's entries, then each one's state: a container
    // deleted in between fails the whole listing. Such a race is brief.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match runtime.run_verb("list", "-", &["--format", "json"]).await {
            Ok(out) => return parse(&out),
            Err(e) if attempt < 5 => {
                tracing::debug!(error = %e, attempt, "runc list raced a deletion; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => return Err(RuntimeError::List(e.to_string())),
        }
    }
}

fn parse(out: &str) -> Result<Vec<String>, RuntimeError> {
    let trimmed = out.trim();
    // runc prints `null` when there are none.
    if trimmed.is_empty() || trimmed == "null" {
        return Ok(Vec::new());
    }
    let listed: Vec<ListedContainer> =
        serde_json::from_str(trimmed).map_err(|e| RuntimeError::List(e.to_string()))?;
    Ok(listed.into_iter().map(|c| c.id).collect())
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_runc_list_json() {
        assert!(parse("null\n").unwrap().is_empty());
        assert!(parse("").unwrap().is_empty());
        let out = r#"[{"ociVersion":"1.0.2","id":"a-1","pid":12,"status":"running","bundle":"/b","rootfs":"/r","created":"2024-01-01T00:00:00Z","owner":"root"}]"#;
        assert_eq!(parse(out).unwrap(), ["a-1"]);
        assert!(parse("garbage").is_err());
    }
}
