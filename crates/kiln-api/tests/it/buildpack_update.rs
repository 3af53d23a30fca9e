//! `PATCH` and `DELETE /v3/buildpacks/:guid` with Cloud Controller's rules:
//! moves within the order, a stack set once, names unique, a disabled
//! buildpack unusable for staging, a deleted one gone with its zip.

use super::{Kiln, PASSWORD, STACK, error_of, start};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn order(kiln: &Kiln) -> Vec<(String, i64)> {
    let (_, list) = kiln.get("/v3/buildpacks").await;
    list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_string(),
                b["position"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn names(o: &[(String, i64)]) -> Vec<&str> {
    o.iter().map(|(n, _)| n.as_str()).collect()
}

async fn delete(kiln: &Kiln, guid: &str) -> (StatusCode, Value, Option<String>) {
    let r = kiln
        .http
        .delete(format!("{}/v3/buildpacks/{guid}", kiln.url))
        .bearer_auth(&kiln.token)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let location = r
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string());
    let body = r.json().await.unwrap_or(Value::Null);
    (status, body, location)
}

#[tokio::test]
async fn update_moves_renames_locks_and_delete_closes_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    for name in ["d", "c", "b", "a"] {
        kiln.create_buildpack(name, Some(1)).await;
    }
    assert_eq!(names(&order(&kiln).await), ["a", "b", "c", "d"]);
    let guid_of = |v: &Value, n: &str| {
        v["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == n)
            .unwrap()["guid"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (_, list) = kiln.get("/v3/buildpacks").await;
    let (a, c, d) = (
        guid_of(&list, "a"),
        guid_of(&list, "c"),
        guid_of(&list, "d"),
    );

    // Down, up, and past the end (last), the others shifting by one.
    let (status, bp) = kiln
        .patch(&format!("/v3/buildpacks/{a}"), json!({"position": 3}))
        .await;
    assert_eq!((status, bp["position"].clone()), (StatusCode::OK, json!(3)));
    assert_eq!(names(&order(&kiln).await), ["b", "c", "a", "d"]);
    kiln.patch(&format!("/v3/buildpacks/{d}"), json!({"position": 1}))
        .await;
    assert_eq!(names(&order(&kiln).await), ["d", "b", "c", "a"]);
    kiln.patch(&format!("/v3/buildpacks/{d}"), json!({"position": 99}))
        .await;
    let o = order(&kiln).await;
    assert_eq!(names(&o), ["b", "c", "a", "d"]);
    assert_eq!(o.iter().map(|(_, p)| *p).collect::<Vec<_>>(), [1, 2, 3, 4]);

    // Rename, disable, lock; the stack once, from unassigned.
    let (status, bp) = kiln
        .patch(
            &format!("/v3/buildpacks/{c}"),
            json!({"name": "cee", "enabled": false, "locked": true, "stack": STACK}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{bp}");
    assert_eq!(
        (&bp["name"], &bp["enabled"], &bp["locked"], &bp["stack"]),
        (&json!("cee"), &json!(false), &json!(true), &json!(STACK))
    );

    // Refusals change nothing.
    let refusals = [
        (
            json!({"stack": "other"}),
            "Buildpack stack cannot be changed",
        ),
        (json!({"name": "b"}), "Buildpack with name 'b', stack"),
        (
            json!({"position": 0}),
            "Position must be greater than or equal to 1",
        ),
        (json!({"name": "a b"}), "Name is invalid"),
        (json!({"filename": "x.zip"}), "Unknown field"),
    ];
    for (body, says) in refusals {
        let (status, e) = kiln
            .patch(&format!("/v3/buildpacks/{c}"), body.clone())
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body} {e}");
        assert!(error_of(&e).2.contains(says), "{body}: {e}");
    }
    let (status, e) = kiln
        .patch(&format!("/v3/buildpacks/{a}"), json!({"stack": "nowhere"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_of(&e).2, "Stack 'nowhere' does not exist");
    let (_, again) = kiln.get(&format!("/v3/buildpacks/{c}")).await;
    assert_eq!(again["name"], "cee");
    assert_eq!(names(&order(&kiln).await), ["b", "cee", "a", "d"]);
    let (status, _) = kiln
        .patch("/v3/buildpacks/no-such-guid", json!({"enabled": true}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A locked buildpack takes no new zip; a disabled one stages nothing.
    let form = reqwest::multipart::Form::new().part(
        "bits",
        reqwest::multipart::Part::bytes(super::zip_of(&[("bin/detect", "x")])).file_name("b.zip"),
    );
    let (status, e) = kiln
        .send(
            kiln.http
                .post(format!("{}/v3/buildpacks/{c}/upload", kiln.url))
                .multipart(form),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{e}");
    let app = kiln.create_app("uses-cee", None).await;
    let pkg = kiln.new_package(app["guid"].as_str().unwrap()).await;
    kiln.upload_package(&pkg, json!([]), Some(super::zip_of(&[("x", "y")])))
        .await;
    let (status, e) = kiln
        .post(
            "/v3/builds",
            json!({"package": {"guid": pkg}, "lifecycle": {"type": "buildpack", "data": {"buildpacks": ["cee"]}}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");

    // Delete: an async job already complete; the gap closes; the zip goes.
    let blob = format!("buildpacks/{a}");
    assert!(kiln.blob_exists(&blob).await, "no blob {blob}");
    let (status, _, location) = delete(&kiln, &a).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let job = location.expect("a job location");
    let job_path = job.trim_start_matches(&kiln.url);
    let (_, job) = kiln.get(job_path).await;
    assert_eq!(
        (&job["state"], &job["operation"]),
        (&json!("COMPLETE"), &json!("buildpack.delete"))
    );
    let o = order(&kiln).await;
    assert_eq!(names(&o), ["b", "cee", "d"]);
    assert_eq!(o.iter().map(|(_, p)| *p).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(!kiln.blob_exists(&blob).await);
    let (status, _) = kiln.get(&format!("/v3/buildpacks/{a}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = delete(&kiln, &a).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    kiln.stop().await;
}
