//! PostgreSQL only: instances started at the same moment on a new database. Their
//! migrations take turns under one advisory lock, so the schema is built once and every
//! instance serves the same data.

use rangersync_server::{test_postgres, DbLocation};
use serde_json::json;
use tokio_postgres::NoTls;

use crate::common::*;

const INSTANCES: u64 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_starting_together_on_a_new_database_migrate_once_and_all_serve_the_same_data() {
    let url = test_postgres::fresh_database()
        .await
        .unwrap_or_else(|e| panic!("this test needs PostgreSQL: {e}"));
    let on_the_database = |o: &mut rangersync_server::ServerOptions| {
        o.db = DbLocation::Postgres(url.clone());
    };
    // All four connect and migrate at once (a concurrent `CREATE TABLE` without the lock fails
    // with a duplicate-key error on the catalog, or finds a half-built schema).
    let (a, b, c, d) = tokio::join!(
        TestServer::start("together-a", on_the_database),
        TestServer::start("together-b", on_the_database),
        TestServer::start("together-c", on_the_database),
        TestServer::start("together-d", on_the_database),
    );
    let servers = [a, b, c, d];

    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let rows = client
        .query("SELECT version FROM rangersync_schema", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "one schema row");
    let version: i32 = rows[0].get(0);
    assert!(version > 0, "the migrations ran: version {version}");

    // Each instance takes a write; each one serves all of them.
    for (i, server) in (1..=INSTANCES).zip(&servers) {
        let results = server
            .push_ok(
                "c1",
                vec![put("c1", i, &format!("k{i}"), json!({ "from": i }), T0)],
            )
            .await;
        assert_eq!(statuses(&results), ["applied"]);
    }
    for server in &servers {
        let (changes, _) = server.pull_all("").await;
        let mut keys: Vec<&str> = changes.iter().map(|c| c["key"].as_str().unwrap()).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["k1", "k2", "k3", "k4"]);
    }
    for server in servers {
        server.stop().await;
    }
}
