//! Environment the lifecycle derives for what it runs: `DATABASE_URL` from
//! `VCAP_SERVICES` (builder and launcher) and the instance fields the
//! launcher adds to `VCAP_APPLICATION`.

use serde_json::Value;

/// The first `credentials.uri` in `VCAP_SERVICES` with a database scheme,
/// with `mysql` spelt `mysql2` and `postgresql` spelt `postgres`, as
/// buildpackapplifecycle's `databaseuri` does.
pub fn database_url(vcap_services: &str) -> Option<String> {
    let services: Value = serde_json::from_str(vcap_services).ok()?;
    let instances = services
        .as_object()?
        .values()
        .filter_map(Value::as_array)
        .flatten();
    for instance in instances {
        let Some(uri) = instance
            .get("credentials")
            .and_then(|credentials| credentials.get("uri"))
            .and_then(Value::as_str)
        else {
            continue;
        };
        let Some((scheme, rest)) = uri.split_once("://") else {
            continue;
        };
        let scheme = match scheme {
            "mysql" | "mysql2" => "mysql2",
            "postgres" | "postgresql" => "postgres",
            _ => continue,
        };
        return Some(format!("{scheme}://{rest}"));
    }
    None
}

/// `VCAP_APPLICATION` with `host`, `instance_id`, `instance_index` and
/// `port` added (the last two as numbers, and only when they are numbers).
/// `None` when the input is not a JSON object, which is then left alone.
pub fn vcap_application(
    vcap_application: &str,
    instance_guid: &str,
    instance_index: Option<&str>,
    port: Option<&str>,
) -> Option<String> {
    let Value::Object(mut fields) = serde_json::from_str(vcap_application).ok()? else {
        return None;
    };
    fields.insert("host".into(), "0.0.0.0".into());
    fields.insert("instance_id".into(), instance_guid.into());
    if let Some(index) = instance_index.and_then(|index| index.parse::<i64>().ok()) {
        fields.insert("instance_index".into(), index.into());
    }
    if let Some(port) = port.and_then(|port| port.parse::<i64>().ok()) {
        fields.insert("port".into(), port.into());
    }
    Some(Value::Object(fields).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_picks_the_first_database_uri() {
        for (services, expected) in [
            ("{}", None),
            ("not json", None),
            (
                r#"{"elephantsql":[{"credentials":{"uri":"postgresql://u:p@db:5432/x"}}]}"#,
                Some("postgres://u:p@db:5432/x"),
            ),
            (
                r#"{"a":[{"credentials":{"uri":"redis://r"}},{"credentials":{"uri":"mysql://u@m/db"}}]}"#,
                Some("mysql2://u@m/db"),
            ),
            (r#"{"a":[{"credentials":{"url":"mysql://u@m/db"}}]}"#, None),
        ] {
            assert_eq!(database_url(services).as_deref(), expected, "{services}");
        }
    }

    #[test]
    fn vcap_application_gains_instance_fields() {
        let rewritten = vcap_application(
            r#"{"application_name":"hello","limits":{"mem":256}}"#,
            "guid-1",
            Some("2"),
            Some("61001"),
        )
        .unwrap();
        let value: Value = serde_json::from_str(&rewritten).unwrap();
        assert_eq!(value["application_name"], "hello");
        assert_eq!(value["limits"]["mem"], 256);
        assert_eq!(value["host"], "0.0.0.0");
        assert_eq!(value["instance_id"], "guid-1");
        assert_eq!(value["instance_index"], 2);
        assert_eq!(value["port"], 61001);

        let without_numbers = vcap_application("{}", "", Some("x"), None).unwrap();
        let value: Value = serde_json::from_str(&without_numbers).unwrap();
        assert!(value.get("port").is_none() && value.get("instance_index").is_none());
        assert_eq!(vcap_application("[1]", "g", None, None), None);
        assert_eq!(vcap_application("", "g", None, None), None);
    }
}
