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
