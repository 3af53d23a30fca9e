//! Lists paged in SQL (`GET /v3/apps`): the page asked for, the total from
//! a COUNT, CC's links, `order_by` on a column, and visibility and label
//! selectors counted before paging.

use super::roles::{call, grant, new_org, new_space, new_user};
use super::{PASSWORD, error_of, start};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn names(v: &Value) -> Vec<String> {
    v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn apps_are_paged_ordered_and_counted_in_sql() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let org = new_org(&kiln, "paged").await;
    let mine = new_space(&kiln, &org, "mine").await;
    let other = new_space(&kiln, &org, "other").await;
    for (i, name) in ["c", "a", "e", "b", "d"].iter().enumerate() {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        let (status, v) = kiln
            .post(
                "/v3/apps",
                json!({"name": name, "relationships": {"space": {"data": {"guid": mine}}},
                    "metadata": {"labels": {"tier": tier}}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
    }
    kiln.post(
        "/v3/apps",
        json!({"name": "hidden", "relationships": {"space": {"data": {"guid": other}}}}),
    )
    .await;
    let q = format!("/v3/apps?space_guids={mine}");

    // Creation order by default, page by page, CC's links.
    let (_, p2) = kiln.get(&format!("{q}&per_page=2&page=2")).await;
    assert_eq!(names(&p2), ["e", "b"], "{p2}");
    let pagination = &p2["pagination"];
    assert_eq!(pagination["total_results"], 5);
    assert_eq!(pagination["total_pages"], 3);
    assert!(
        pagination["next"]["href"]
            .as_str()
            .unwrap()
            .contains("page=3&per_page=2")
    );
    assert!(
        pagination["previous"]["href"]
            .as_str()
            .unwrap()
            .contains("page=1&per_page=2")
    );
    let (_, past) = kiln.get(&format!("{q}&per_page=2&page=9")).await;
    assert_eq!(names(&past), Vec::<String>::new());
    assert_eq!(past["pagination"]["total_results"], 5);

    // order_by on a column, either way; anything else is CC's 400.
    let (_, by_name) = kiln.get(&format!("{q}&order_by=name&per_page=3")).await;
    assert_eq!(names(&by_name), ["a", "b", "c"], "{by_name}");
    let (_, newest) = kiln
        .get(&format!("{q}&order_by=-created_at&per_page=1"))
        .await;
    assert_eq!(
        names(&newest),
        ["d"],
        "ties reversed when descending: {newest}"
    );
    let (status, v) = kiln.get(&format!("{q}&order_by=colour")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(
        error_of(&v).2,
        "The query parameter is invalid: Order by can only be: 'created_at', 'updated_at', 'name', 'state'"
    );

    // A label selector and visibility narrow before the count.
    let (_, odd) = kiln
        .get(&format!("{q}&label_selector=tier=odd&per_page=1"))
        .await;
    assert_eq!(odd["pagination"]["total_results"], 2, "{odd}");
    assert_eq!(names(&odd), ["a"]);
    let (user, token) = new_user(&kiln, "pager").await;
    grant(
        &kiln,
        &kiln.token,
        "organization_user",
        &user,
        ("organization", &org),
    )
    .await;
    grant(
        &kiln,
        &kiln.token,
        "space_developer",
        &user,
        ("space", &mine),
    )
    .await;
    let (_, seen) = call(
        &kiln,
        &token,
        "GET",
        "/v3/apps?per_page=2&order_by=-name",
        None,
    )
    .await;
    assert_eq!(seen["pagination"]["total_results"], 5, "{seen}");
    assert_eq!(names(&seen), ["e", "d"]);
    kiln.stop().await;
}

/// Names with upper case and accents sort by bytes on both engines (the
/// suite runs on SQLite and on PostgreSQL): a page holds the same rows.
#[tokio::test]
async fn names_sort_the_same_on_both_engines() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let org = new_org(&kiln, "collate").await;
    for name in ["e", "a", "\u{e9}t\u{e9}", "Z", "b", "B"] {
        new_space(&kiln, &org, name).await;
    }
    let (_, spaces) = kiln
        .get(&format!(
            "/v3/spaces?organization_guids={org}&order_by=name&per_page=4"
        ))
        .await;
    assert_eq!(names(&spaces), ["B", "Z", "a", "b"], "{spaces}");
    assert_eq!(spaces["pagination"]["total_results"], 6);
    let (_, last) = kiln
        .get(&format!(
            "/v3/spaces?organization_guids={org}&order_by=-name&per_page=2"
        ))
        .await;
    assert_eq!(names(&last), ["\u{e9}t\u{e9}", "e"], "{last}");
    kiln.stop().await;
}

/// Every list pages in SQL with CC's links and its own `order_by` fields.
#[tokio::test]
async fn other_lists_page_in_sql_with_their_order_fields() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path(), 1 << 20, Some(PASSWORD)).await;
    let org = new_org(&kiln, "lists").await;
    let space = new_space(&kiln, &org, "s").await;
    for name in ["one", "two", "three"] {
        let (status, v) = kiln
            .post(
                "/v3/apps",
                json!({"name": name, "relationships": {"space": {"data": {"guid": space}}}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
    }
    // Each app has a web process; the page is the second of three.
    let q = format!("/v3/processes?space_guids={space}&per_page=1&page=2");
    let (status, page) = kiln.get(&q).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let pagination = &page["pagination"];
    assert_eq!(pagination["total_results"], 3, "{page}");
    assert_eq!(pagination["total_pages"], 3);
    assert_eq!(page["resources"].as_array().unwrap().len(), 1);
    assert!(
        pagination["last"]["href"]
            .as_str()
            .unwrap()
            .ends_with(&format!(
                "/v3/processes?page=3&per_page=1&space_guids={space}"
            )),
        "{pagination}"
    );
    // Audit events: newest first, one per page, counted in all.
    let (_, events) = kiln
        .get(&format!(
            "/v3/audit_events?space_guids={space}&types=audit.app.create&order_by=-created_at&per_page=1"
        ))
        .await;
    assert_eq!(events["pagination"]["total_results"], 3, "{events}");
    assert_eq!(
        events["resources"][0]["target"]["name"], "three",
        "{events}"
    );
    // A field that list does not order by is CC's 400, naming its fields.
    for (path, fields) in [
        ("/v3/processes", "'created_at', 'updated_at'"),
        ("/v3/audit_events", "'created_at', 'updated_at'"),
        ("/v3/organizations", "'created_at', 'updated_at', 'name'"),
        ("/v3/buildpacks", "'created_at', 'updated_at', 'position'"),
    ] {
        let (status, v) = kiln.get(&format!("{path}?order_by=state")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {v}");
        assert_eq!(
            error_of(&v).2,
            format!("The query parameter is invalid: Order by can only be: {fields}"),
            "{path}"
        );
    }
    kiln.stop().await;
}
