//! The audit log is written in the same transaction as the change it records: a change that
//! fails leaves no entry, an entry that cannot be written undoes the change, and every change
//! that lands has exactly one entry.

use crate::harness::{Harness, ADMIN_KEY};
use aqueduct::tenancy::store::{execute_tx, Sql};
use serde_json::json;

async fn entries(db: &aqueduct::db::Db, path: &str) -> Vec<aqueduct::audit::Entry> {
    aqueduct::audit::recent_db(db, 1000).await.unwrap().into_iter().filter(|e| e.path == path).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_and_its_audit_entry_land_together_or_not_at_all() {
    let h = Harness::start().await;
    let db = aqueduct::db::Db::open(None, h.dir.path()).await.unwrap();
    let (s, org) = h.call(ADMIN_KEY, "POST", "/api/v1/orgs", Some(json!({"name": "Before"}))).await;
    assert_eq!(s, 201, "{org}");
    let id = org["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/orgs/{id}");

    // A successful change has exactly one entry, with the entity before and after.
    let (s, _) = h.call(ADMIN_KEY, "PATCH", &path, Some(json!({"name": "After"}))).await;
    assert_eq!(s, 200);
    let rows = entries(&db, &path).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].status, 200);
    assert!(rows[0].before_json.as_deref().is_some_and(|b| b.contains("\"Before\"")), "{rows:?}");
    assert!(rows[0].after_json.as_deref().is_some_and(|a| a.contains("\"After\"")), "{rows:?}");

    // The change fails inside its transaction (the database refuses the update): no entry.
    execute_tx(
        &db,
        &[Sql::new(
            "CREATE TRIGGER refuse_org_rename BEFORE UPDATE OF name ON orgs \
             BEGIN SELECT RAISE(ABORT, 'renames refused'); END",
        )],
    )
    .await
    .unwrap();
    let (s, _) = h.call(ADMIN_KEY, "PATCH", &path, Some(json!({"name": "Never"}))).await;
    assert_eq!(s, 503, "a failed write is the database's failure");
    assert_eq!(entries(&db, &path).await.len(), 1, "the failed change left an entry");
    execute_tx(&db, &[Sql::new("DROP TRIGGER refuse_org_rename")]).await.unwrap();

    // The entry cannot be written: the change is undone with it.
    execute_tx(
        &db,
        &[Sql::new(
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log \
             BEGIN SELECT RAISE(ABORT, 'audit refused'); END",
        )],
    )
    .await
    .unwrap();
    let (s, _) = h.call(ADMIN_KEY, "PATCH", &path, Some(json!({"name": "Unaudited"}))).await;
    assert_eq!(s, 503);
    execute_tx(&db, &[Sql::new("DROP TRIGGER refuse_audit")]).await.unwrap();
    let (_, now) = h.call(ADMIN_KEY, "GET", &path, None).await;
    assert_eq!(now["name"], "After", "a change landed without its audit entry");
    assert_eq!(entries(&db, &path).await.len(), 1);

    // Every kind of change through the API leaves one entry: create, change, delete.
    let (s, team) = h.call(ADMIN_KEY, "POST", "/api/v1/teams", Some(json!({"org_id": id, "name": "t"}))).await;
    assert_eq!(s, 201);
    let team_path = format!("/api/v1/teams/{}", team["id"].as_str().unwrap());
    let (s, _) = h.call(ADMIN_KEY, "DELETE", &team_path, None).await;
    assert_eq!(s, 204);
    let rows = entries(&db, &team_path).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].after_json.is_none() && rows[0].before_json.is_some());
    assert_eq!(entries(&db, "/api/v1/teams").await.len(), 1);
}
