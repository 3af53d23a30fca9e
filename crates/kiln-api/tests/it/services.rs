//! User-provided service instances and app credential bindings: CC's
//! shapes, rules and words, credentials only where CC shows them,
//! `VCAP_SERVICES` in the env document and in the DesiredLrp of a start
//! after the bind, audit events with credentials censored, and a space
//! developer of another space seeing none of it.

use super::roles::{call, grant, new_app, new_org, new_space, new_user};
use super::{Kiln, PASSWORD, error_of, start};
use kiln_bbs::BbsClient;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn guid(v: &Value) -> String {
    v["guid"].as_str().unwrap().to_string()
}

async fn create_instance(kiln: &Kiln, space: &str, body: Value) -> (StatusCode, Value) {
    let mut body = body;
    body["relationships"] = json!({"space": {"data": {"guid": space}}});
    kiln.post("/v3/service_instances", body).await
}

async fn bind(kiln: &Kiln, app: &str, si: &str, name: Option<&str>) -> (StatusCode, Value) {
    let mut body = json!({"type": "app", "relationships": {
        "app": {"data": {"guid": app}}, "service_instance": {"data": {"guid": si}}}});
    if let Some(n) = name {
        body["name"] = json!(n);
    }
    kiln.post("/v3/service_credential_bindings", body).await
}

async fn delete(kiln: &Kiln, path: &str) -> StatusCode {
    call(kiln, &kiln.token, "DELETE", path, None).await.0
}

async fn count(kiln: &Kiln, path: &str) -> u64 {
    let (status, list) = kiln.get(path).await;
    assert_eq!(status, StatusCode::OK, "{path}: {list}");
    list["pagination"]["total_results"].as_u64().unwrap()
}

fn assert_422(status: StatusCode, v: &Value, detail: &str) {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (code, title, got) = error_of(v);
    assert_eq!(
        (code, title.as_str()),
        (10008, "CF-UnprocessableEntity"),
        "{v}"
    );
    assert_eq!(got, detail, "{v}");
}

#[tokio::test]
async fn user_provided_instances_follow_cloud_controller() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let space = kiln.space_guid().await;
    let (status, si) = create_instance(
        &kiln,
        &space,
        json!({"type": "user-provided", "name": "db", "credentials": {"user": "u", "password": "p"},
            "tags": ["sql"], "syslog_drain_url": "syslog://logs.example:514",
            "route_service_url": "https://rs.example", "metadata": {"labels": {"tier": "db"}}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{si}");
    let si_guid = guid(&si);
    // Labels are kept and selectable, as on every resource.
    assert_eq!(si["metadata"]["labels"]["tier"], "db", "{si}");
    assert_eq!(
        count(&kiln, "/v3/service_instances?label_selector=tier=db").await,
        1
    );
    assert_eq!(si["type"], "user-provided");
    assert_eq!(si["name"], "db");
    assert_eq!(si["tags"], json!(["sql"]));
    assert_eq!(si["syslog_drain_url"], "syslog://logs.example:514");
    assert_eq!(si["route_service_url"], "https://rs.example");
    assert_eq!(si["last_operation"]["type"], "create");
    assert_eq!(si["last_operation"]["state"], "succeeded");
    assert_eq!(si["relationships"]["space"]["data"]["guid"], space);
    assert!(
        si["links"]["credentials"]["href"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/v3/service_instances/{si_guid}/credentials"))
    );
    // Credentials never in a get or a list; only at their own endpoint.
    let (_, got) = kiln.get(&format!("/v3/service_instances/{si_guid}")).await;
    assert!(got.get("credentials").is_none(), "{got}");
    assert!(!got.to_string().contains("\"p\""), "{got}");
    let (status, creds) = kiln
        .get(&format!("/v3/service_instances/{si_guid}/credentials"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(creds, json!({"user": "u", "password": "p"}));

    // Names are unique in a space; a refused create changes nothing.
    let (status, v) = create_instance(
        &kiln,
        &space,
        json!({"type": "user-provided", "name": "db"}),
    )
    .await;
    assert_422(status, &v, "The service instance name is taken: db.");
    for (body, detail) in [
        (
            json!({"type": "user-provided", "name": "x", "credentials": "s"}),
            "Credentials must be an object",
        ),
        (
            json!({"type": "user-provided", "name": "x", "route_service_url": "http://a"}),
            "Route service url must be https",
        ),
        (
            json!({"type": "user-provided", "name": "x", "colour": 1}),
            "Unknown field(s): 'colour'",
        ),
        (
            json!({"type": "elsewhere", "name": "x"}),
            "Type must be one of 'managed', 'user-provided'",
        ),
        (
            json!({"type": "managed", "name": "x"}),
            "Invalid service plan. Ensure that the service plan exists, is available, and you have access to it.",
        ),
    ] {
        let (status, v) = create_instance(&kiln, &space, body).await;
        assert_422(status, &v, detail);
    }
    let (status, v) = create_instance(
        &kiln,
        "no-such-space",
        json!({"type": "user-provided", "name": "x"}),
    )
    .await;
    assert_422(
        status,
        &v,
        "Invalid space. Ensure that the space exists and you have access to it.",
    );
    let r = kiln
        .send(
            kiln.http
                .post(format!("{}/v3/service_instances", kiln.url))
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
    assert_eq!(r.0, StatusCode::BAD_REQUEST, "{}", r.1);
    assert_eq!(count(&kiln, "/v3/service_instances").await, 1);

    // Filters, in SQL.
    let (_, other) = create_instance(
        &kiln,
        &space,
        json!({"type": "user-provided", "name": "cache"}),
    )
    .await;
    let org = kiln.get(&format!("/v3/spaces/{space}")).await.1["relationships"]["organization"]["data"]["guid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        count(&kiln, "/v3/service_instances?names=db,cache").await,
        2
    );
    assert_eq!(count(&kiln, "/v3/service_instances?names=cache").await, 1);
    assert_eq!(
        count(&kiln, &format!("/v3/service_instances?space_guids={space}")).await,
        2
    );
    assert_eq!(
        count(
            &kiln,
            &format!("/v3/service_instances?organization_guids={org}")
        )
        .await,
        2
    );
    assert_eq!(
        count(&kiln, "/v3/service_instances?organization_guids=nope").await,
        0
    );
    assert_eq!(count(&kiln, "/v3/service_instances?type=managed").await, 0);
    assert_eq!(
        count(&kiln, "/v3/service_instances?type=user-provided").await,
        2
    );
    let (status, _) = kiln.get("/v3/service_instances?type=brokered").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Rename onto a taken name: refused, nothing changed.
    let (status, v) = kiln
        .patch(
            &format!("/v3/service_instances/{}", guid(&other)),
            json!({"name": "db"}),
        )
        .await;
    assert_422(status, &v, "The service instance name is taken: db.");
    let (status, v) = kiln
        .patch(
            &format!("/v3/service_instances/{si_guid}"),
            json!({"syslog_drain_url": null, "tags": ["a", "b"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["syslog_drain_url"], Value::Null);
    assert_eq!(v["tags"], json!(["a", "b"]));
    assert_eq!(v["route_service_url"], "https://rs.example");
    assert_eq!(v["last_operation"]["type"], "update");

    assert_eq!(
        delete(&kiln, &format!("/v3/service_instances/{}", guid(&other))).await,
        StatusCode::NO_CONTENT
    );
    let (status, v) = kiln
        .get(&format!("/v3/service_instances/{}", guid(&other)))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_of(&v).2, "Service instance not found");

    // Audit events: CC's types and actee, credentials censored.
    let (_, events) = kiln
        .get(&format!("/v3/audit_events?target_guids={si_guid}"))
        .await;
    let types: Vec<&str> = events["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "audit.user_provided_service_instance.create",
            "audit.user_provided_service_instance.update"
        ]
    );
    let created = &events["resources"][0];
    assert_eq!(created["target"]["type"], "user_provided_service_instance");
    assert_eq!(created["target"]["name"], "db");
    assert_eq!(
        created["data"]["request"]["credentials"],
        "[PRIVATE DATA HIDDEN]"
    );
    assert!(!events.to_string().contains("\"p\""), "{events}");
    assert_eq!(
        count(
            &kiln,
            "/v3/audit_events?types=audit.user_provided_service_instance.delete"
        )
        .await,
        1
    );
    kiln.stop().await;
}

#[tokio::test]
async fn bindings_reach_vcap_services_on_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let space = kiln.space_guid().await;
    let bp = kiln.create_buildpack("python", None).await;
    let app = guid(&kiln.create_app("bound", None).await);
    let (_, si) = create_instance(
        &kiln,
        &space,
        json!({"type": "user-provided", "name": "db", "credentials": {"uri": "postgres://h/db"},
            "tags": ["pg"], "syslog_drain_url": "syslog://d:1"}),
    )
    .await;
    let si_guid = guid(&si);

    let (status, b) = bind(&kiln, &app, &si_guid, Some("primary")).await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    let b_guid = guid(&b);
    assert_eq!(b["type"], "app");
    assert_eq!(b["name"], "primary");
    assert_eq!(b["last_operation"]["state"], "succeeded");
    assert_eq!(b["relationships"]["app"]["data"]["guid"], app);
    assert_eq!(
        b["relationships"]["service_instance"]["data"]["guid"],
        si_guid
    );
    assert!(
        b.get("credentials").is_none() && b["links"].get("parameters").is_none(),
        "{b}"
    );
    let (status, v) = bind(&kiln, &app, &si_guid, None).await;
    assert_422(
        status,
        &v,
        "The app is already bound to the service instance",
    );
    let (_, other_si) = create_instance(
        &kiln,
        &space,
        json!({"type": "user-provided", "name": "other"}),
    )
    .await;
    let (status, v) = bind(&kiln, &app, &guid(&other_si), Some("primary")).await;
    assert_422(
        status,
        &v,
        "The binding name is invalid. Binding names must be unique for a given service instance and app. The app already has a binding with name 'primary'.",
    );
    let (status, v) = bind(&kiln, &app, "no-such-instance", None).await;
    assert_422(
        status,
        &v,
        "The service instance could not be found: 'no-such-instance'",
    );
    let org = new_org(&kiln, "elsewhere").await;
    let far_space = new_space(&kiln, &org, "far").await;
    let far_app = new_app(&kiln, &far_space, "far-app").await;
    let (status, v) = bind(&kiln, &far_app, &si_guid, None).await;
    assert_422(
        status,
        &v,
        "The service instance and the app are in different spaces",
    );
    assert_eq!(count(&kiln, "/v3/service_credential_bindings").await, 1);

    // Lists and their filters.
    for (query, n) in [
        (format!("app_guids={app}"), 1),
        (format!("app_guids={far_app}"), 0),
        (format!("service_instance_guids={si_guid}"), 1),
        ("service_instance_names=db".to_string(), 1),
        ("service_instance_names=other".to_string(), 0),
        ("names=primary".to_string(), 1),
        ("app_names=bound".to_string(), 1),
        ("type=app".to_string(), 1),
        ("type=key".to_string(), 0),
    ] {
        assert_eq!(
            count(&kiln, &format!("/v3/service_credential_bindings?{query}")).await,
            n,
            "{query}"
        );
    }
    let (status, details) = kiln
        .get(&format!("/v3/service_credential_bindings/{b_guid}/details"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(details["credentials"], json!({"uri": "postgres://h/db"}));
    assert_eq!(details["syslog_drain_url"], "syslog://d:1");
    let (status, v) = kiln
        .get(&format!(
            "/v3/service_credential_bindings/{b_guid}/parameters"
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_of(&v).0, 90007, "{v}");

    // An update of the instance's credentials reaches its bindings.
    let (status, _) = kiln
        .patch(
            &format!("/v3/service_instances/{si_guid}"),
            json!({"credentials": {"uri": "postgres://h/db2"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // VCAP_SERVICES in CF's shape, in /env and in the next start.
    let expected = json!({"user-provided": [{
        "label": "user-provided", "name": "primary", "tags": ["pg"],
        "instance_guid": si_guid, "instance_name": "db",
        "binding_guid": b_guid, "binding_name": "primary",
        "credentials": {"uri": "postgres://h/db2"}, "syslog_drain_url": "syslog://d:1",
        "volume_mounts": [],
    }]});
    let (_, env) = kiln.get(&format!("/v3/apps/{app}/env")).await;
    assert_eq!(env["system_env_json"]["VCAP_SERVICES"], expected);
    super::droplet_made_current(&kiln, &app, &guid(&bp)).await;
    let (status, v) = kiln
        .post(&format!("/v3/apps/{app}/actions/start"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let lrp_guid = super::web_lrp_guid(&kiln, &app).await;
    let lrp = kiln
        .bbs
        .desired_lrp_by_process_guid(&lrp_guid)
        .await
        .unwrap();
    let vcap_services = lrp
        .action
        .env
        .iter()
        .find(|e| e.name == "VCAP_SERVICES")
        .map(|e| serde_json::from_str::<Value>(&e.value).unwrap());
    assert_eq!(vcap_services, Some(expected));

    // Unbinding: 204, an event each way, and the env is empty again.
    assert_eq!(
        delete(&kiln, &format!("/v3/service_credential_bindings/{b_guid}")).await,
        StatusCode::NO_CONTENT
    );
    let (_, env) = kiln.get(&format!("/v3/apps/{app}/env")).await;
    assert_eq!(env["system_env_json"]["VCAP_SERVICES"], json!({}));
    let (_, events) = kiln
        .get(&format!("/v3/audit_events?target_guids={b_guid}"))
        .await;
    let e = &events["resources"];
    assert_eq!(e[0]["type"], "audit.service_binding.create");
    assert_eq!(e[0]["target"]["type"], "service_binding");
    assert_eq!(e[0]["target"]["name"], "primary");
    assert_eq!(e[1]["type"], "audit.service_binding.delete");
    assert_eq!(e[1]["data"]["request"]["service_instance_guid"], si_guid);

    // Deleting an app takes its bindings with it, each with its event.
    let doomed = guid(&kiln.create_app("doomed", None).await);
    let (_, doomed_b) = bind(&kiln, &doomed, &si_guid, None).await;
    let r = call(
        &kiln,
        &kiln.token,
        "DELETE",
        &format!("/v3/apps/{doomed}"),
        None,
    )
    .await;
    assert_eq!(r.0, StatusCode::ACCEPTED, "{}", r.1);
    let (status, _) = kiln
        .get(&format!(
            "/v3/service_credential_bindings/{}",
            guid(&doomed_b)
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, events) = kiln
        .get(&format!(
            "/v3/audit_events?target_guids={}&types=audit.service_binding.delete",
            guid(&doomed_b)
        ))
        .await;
    assert_eq!(events["pagination"]["total_results"], 1, "{events}");

    // Deleting an instance takes its bindings with it.
    let (status, b2) = bind(&kiln, &app, &si_guid, None).await;
    assert_eq!(status, StatusCode::CREATED, "{b2}");
    assert_eq!(
        delete(&kiln, &format!("/v3/service_instances/{si_guid}")).await,
        StatusCode::NO_CONTENT
    );
    let (status, _) = kiln
        .get(&format!("/v3/service_credential_bindings/{}", guid(&b2)))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    kiln.stop().await;
}

#[tokio::test]
async fn another_spaces_developer_sees_no_instance_or_binding() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let org = new_org(&kiln, "team").await;
    let mine = new_space(&kiln, &org, "mine").await;
    let theirs = new_space(&kiln, &org, "theirs").await;
    let (user, token) = new_user(&kiln, "dev").await;
    grant(
        &kiln,
        &kiln.token,
        "organization_user",
        &user,
        ("organization", &org),
    )
    .await;
    let (status, r) = grant(
        &kiln,
        &kiln.token,
        "space_developer",
        &user,
        ("space", &mine),
    )
    .await;
    assert!(status.is_success(), "{r}");
    let (_, their_si) = create_instance(
        &kiln,
        &theirs,
        json!({"type": "user-provided", "name": "secret", "credentials": {"k": "v"}}),
    )
    .await;
    let their_app = new_app(&kiln, &theirs, "their-app").await;
    let (_, their_b) = bind(&kiln, &their_app, &guid(&their_si), None).await;

    // The developer works in its own space.
    let as_dev = |method: &'static str, path: String, body: Option<Value>| {
        let token = token.clone();
        let kiln = &kiln;
        async move { call(kiln, &token, method, &path, body).await }
    };
    let (status, own) = as_dev(
        "POST",
        "/v3/service_instances".into(),
        Some(json!({"type": "user-provided", "name": "own", "relationships": {"space": {"data": {"guid": mine}}}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{own}");
    let my_app = new_app(&kiln, &mine, "my-app").await;
    let (status, b) = as_dev(
        "POST",
        "/v3/service_credential_bindings".into(),
        Some(json!({"type": "app", "relationships": {"app": {"data": {"guid": my_app}}, "service_instance": {"data": {"guid": guid(&own)}}}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    // And sees nothing of the other space: lists narrowed, reads 404.
    let (_, list) = as_dev("GET", "/v3/service_instances".into(), None).await;
    assert_eq!(list["pagination"]["total_results"], 1, "{list}");
    let (_, list) = as_dev("GET", "/v3/service_credential_bindings".into(), None).await;
    assert_eq!(list["pagination"]["total_results"], 1, "{list}");
    for path in [
        format!("/v3/service_instances/{}", guid(&their_si)),
        format!("/v3/service_instances/{}/credentials", guid(&their_si)),
    ] {
        let (status, v) = as_dev("GET", path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
        assert_eq!(error_of(&v).2, "Service instance not found");
    }
    let (status, _) = as_dev(
        "GET",
        format!("/v3/service_credential_bindings/{}/details", guid(&their_b)),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Binding its app to their instance: the instance is not there for it.
    let (status, v) = as_dev(
        "POST",
        "/v3/service_credential_bindings".into(),
        Some(json!({"type": "app", "relationships": {"app": {"data": {"guid": my_app}}, "service_instance": {"data": {"guid": guid(&their_si)}}}})),
    )
    .await;
    assert_422(
        status,
        &v,
        &format!(
            "The service instance could not be found: '{}'",
            guid(&their_si)
        ),
    );
    let (status, _) = as_dev(
        "DELETE",
        format!("/v3/service_instances/{}", guid(&their_si)),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(count(&kiln, "/v3/service_credential_bindings").await, 2);
    kiln.stop().await;
}
