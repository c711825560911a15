//! The storage layer: both dialects end in the same schema; bad database URLs fail at
//! start with a message naming DATABASE_URL.

use app::ssr::db::Database;
use crevid_server::startup::Application;

use crate::helpers::{test_config, PgDatabase};

#[tokio::test]
async fn both_dialects_have_the_same_tables_and_columns() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Database::connect(&format!("sqlite://{}", dir.path().join("a.db").display()))
        .await
        .unwrap();
    sqlite.migrate().await.unwrap();
    let sqlite_schema = sqlite.schema().await.unwrap();
    let tables: Vec<&str> = sqlite_schema.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        tables,
        [
            "api_tokens",
            "assets",
            "contents",
            "jobs",
            "outbox",
            "scenes",
            "sessions",
            "settings",
            "task_starts",
            "tasks",
            "users",
            "webhook_deliveries",
            "webhook_endpoints"
        ]
    );

    let Some(pg) = PgDatabase::create().await else {
        return;
    };
    let postgres = Database::connect(&pg.url()).await.unwrap();
    postgres.migrate().await.unwrap();
    // Running the migrations again is a no-op.
    postgres.migrate().await.unwrap();
    assert_eq!(postgres.schema().await.unwrap(), sqlite_schema);
    postgres.pool.close().await;
}

#[tokio::test]
async fn sqlite_file_and_directory_are_created_with_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/crevid.db");
    let db = Database::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert!(path.exists());
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(timeout, 5000);
}

#[tokio::test]
async fn bad_database_urls_name_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        "mysql://localhost/crevid",
        "postgres://nobody@127.0.0.1:1/crevid",
    ] {
        let vars = [
            ("DATABASE_URL".to_owned(), url.to_owned()),
            ("LEPTOS_SITE_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
        ];
        let config = crevid_server::config::Config::load(&move |k| {
            vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        });
        let message = match config {
            Err(e) => e.to_string(),
            Ok(mut config) => {
                config.data_dir = dir.path().to_path_buf();
                match Application::build(config).await {
                    Err(e) => format!("{e:#}"),
                    Ok(_) => panic!("{url} should not start"),
                }
            }
        };
        assert!(message.contains("DATABASE_URL"), "{url}: {message}");
    }
    // The helper config is used by every other test; make sure it is sane.
    let c = test_config("sqlite://x.db", dir.path());
    assert_eq!(c.site_addr.port(), 0);
}
