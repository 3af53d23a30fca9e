//! The CLI's user and role verbs against the real API (in process, on
//! 127.0.0.1, port 0; no cell needed): the admin creates a user and gives
//! it a space, and that user logs in and sees only that space.

use kiln_cli::{
    Command, CreateUserArgs, LoginArgs, SetOrgRoleArgs, SetSpaceRoleArgs, SpaceUsersArgs,
};
use serde_json::Value;
use std::sync::Arc;

async fn api(dir: &std::path::Path) -> (String, tokio_util::sync::CancellationToken) {
    let bbs = kiln_bbs::Bbs::open(&dir.join("bbs.sqlite")).await.unwrap();
    let blobstore = Arc::new(
        kiln_store::FsBlobstore::new(dir.join("blobs"))
            .await
            .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let api = kiln_api::Api::open(
        kiln_api::ApiConfig {
            data_dir: dir.join("api"),
            external_url: url.clone(),
            domain: "localhost".into(),
            stack: "testos1-host".into(),
            admin_password: Some("admin-pw".into()),
            max_package_bytes: 1 << 20,
            staging_timeout_ms: 60_000,
            db_encryption_key_file: None,
        },
        kiln_api::ApiDeps {
            bbs: Arc::new(bbs),
            blobstore,
            logs: Arc::new(kiln_logs::LogStore::default()),
        },
    )
    .await
    .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move { api.run(listener, token).await.unwrap() });
    (url, stop)
}

fn login(url: &str, user: &str, password: &str) -> Command {
    Command::Login(LoginArgs {
        api: Some(url.to_string()),
        username: user.into(),
        password: password.into(),
        org: Some("kiln".into()),
        space: Some("dev".into()),
    })
}

async fn get(url: &str, token: &str, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{url}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn access_token(home: &std::path::Path) -> String {
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("config.json")).unwrap()).unwrap();
    config["access_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_admin_adds_a_developer_who_sees_only_its_space() {
    let dir = tempfile::tempdir().unwrap();
    let (url, stop) = api(dir.path()).await;
    let admin_home = dir.path().join("admin");
    kiln_cli::run_with_home(login(&url, "admin", "admin-pw"), &admin_home)
        .await
        .unwrap();
    let run = |c| kiln_cli::run_with_home(c, &admin_home);
    run(Command::CreateUser(CreateUserArgs {
        username: "ann".into(),
        password: "ann-pw".into(),
    }))
    .await
    .unwrap();
    let space_role = |role: &str| {
        Command::SetSpaceRole(SetSpaceRoleArgs {
            username: "ann".into(),
            org: "kiln".into(),
            space: "dev".into(),
            role: role.into(),
        })
    };
    run(space_role("SpaceDeveloper")).await.unwrap();
    // Again: the role is there already, which is not an error.
    run(space_role("spacedeveloper")).await.unwrap();
    let bad = run(space_role("Wizard")).await.unwrap_err();
    assert!(bad.to_string().contains("Invalid role"), "{bad}");
    run(Command::SetOrgRole(SetOrgRoleArgs {
        username: "ann".into(),
        org: "kiln".into(),
        role: "OrgAuditor".into(),
    }))
    .await
    .unwrap();
    run(Command::SpaceUsers(SpaceUsersArgs {
        org: "kiln".into(),
        space: "dev".into(),
    }))
    .await
    .unwrap();
    let admin = access_token(&admin_home);
    let roles = get(&url, &admin, "/v3/roles?include=user").await;
    let mut held: Vec<(String, String)> = roles["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["type"].as_str().unwrap().to_string(),
                r["relationships"]["user"]["data"]["guid"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    held.sort();
    let ann = roles["included"]["users"][0]["guid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(roles["included"]["users"][0]["username"], "ann");
    let want: Vec<(String, String)> = [
        "organization_auditor",
        "organization_user",
        "space_developer",
    ]
    .iter()
    .map(|t| (t.to_string(), ann.clone()))
    .collect();
    assert_eq!(held, want);

    // Ann logs in with the CLI and sees only her space.
    let ann_home = dir.path().join("ann");
    kiln_cli::run_with_home(login(&url, "ann", "ann-pw"), &ann_home)
        .await
        .unwrap();
    kiln_cli::run_with_home(Command::Apps, &ann_home)
        .await
        .unwrap();
    let token = access_token(&ann_home);
    let spaces = get(&url, &token, "/v3/spaces").await;
    assert_eq!(spaces["pagination"]["total_results"], 1, "{spaces}");
    // She may not create users.
    let refused = kiln_cli::run_with_home(
        Command::CreateUser(CreateUserArgs {
            username: "bob".into(),
            password: "x".into(),
        }),
        &ann_home,
    )
    .await
    .unwrap_err();
    assert!(refused.to_string().contains("not authorized"), "{refused}");
    stop.cancel();
}
