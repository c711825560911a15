//! `GET /api/openapi.json` against the server itself: schemathesis (from PyPI into
//! `target/pytools` by `scripts/setup.sh --test`) generates requests for every operation
//! from the document, as an admin's token, and checks that no answer is a 5xx and every
//! answer (status, content type, headers, body) is one the document allows.

use std::process::Command;

use crate::both_databases;
use crate::helpers::{content_with_scenes, pytool, use_provider, Db, TestApp};

both_databases!(schemathesis_finds_no_server_error_and_no_answer_outside_the_document);

/// The checks that hold the server to its document. Left out: `positive_data_acceptance`
/// (the document gives shapes; lengths, formats and ranges are the server's to check and
/// answer 422) and the checks that need links between operations.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_headers_conformance,response_schema_conformance,negative_data_rejection,\
ignored_auth,unsupported_method";

/// Schemathesis's examples per operation; fixed seed so a failure reproduces. One worker:
/// with two threads Hypothesis 6's lambda-source cache races ("Inconsistent results").
const MAX_EXAMPLES: &str = "25";
const SEED: &str = "20261207";

async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let Some(schemathesis) = pytool("schemathesis") else {
        return;
    };
    use_provider(&app, |v| v.rate_generate_per_minute = 10_000).await;
    // Rows for the generated ids to find: contents with scenes, and a job.
    for _ in 0..2 {
        let content = content_with_scenes(&app, "One scene here. And a second one.", 2).await;
        let (status, _) = app
            .post(
                "/api/media/generate",
                &serde_json::json!({ "content_id": content["id"] }),
            )
            .await;
        assert_eq!(status, 202);
    }
    let schema = app.url("/api/openapi.json");
    let token = format!("Authorization: Bearer {}", app.admin.token);
    let work = tempfile::tempdir().unwrap();
    // Writes that would take the ground from under the rest (the provider's settings, the
    // caller's own token and account) run after everything else, by themselves.
    let last = "^(PUT /api/settings|POST /api/settings/reset|DELETE /api/tokens/\\{id\\}|PUT /api/users/\\{id\\})$";
    for (filter, pattern) in [
        ("--exclude-name-regex", last),
        ("--include-name-regex", last),
    ] {
        let mut command = Command::new(&schemathesis);
        command
            .current_dir(work.path())
            .env("NO_COLOR", "1")
            .env(
                "PYTHONPATH",
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api"),
            )
            .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
            .args(["run", &schema, "--header", &token])
            .args([
                "--checks",
                CHECKS,
                "--max-examples",
                MAX_EXAMPLES,
                "--seed",
                SEED,
            ])
            .args(["--phases", "examples,coverage,fuzzing", "--workers", "1"])
            .args(["--request-timeout", "30", "--no-shrink"])
            .args([filter, pattern]);
        // Off this thread: the server under test answers on the test's runtime.
        let run = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .expect("run schemathesis");
        let report = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "schemathesis ({filter} {pattern}) found answers outside the document:\n{report}\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
        if let Some(summary) = report.lines().find(|l| l.contains(" generated, ")) {
            eprintln!("schemathesis {filter}: {}", summary.trim());
        }
        // A run that tested nothing would pass too: every "N passed" must count some.
        let words: Vec<&str> = report.split_whitespace().collect();
        let passed: Vec<u64> = words
            .windows(2)
            .filter(|w| w[1].starts_with("passed"))
            .filter_map(|w| w[0].parse().ok())
            .collect();
        assert!(
            !passed.is_empty() && passed.iter().all(|n| *n > 0),
            "schemathesis tested no operation:\n{report}"
        );
    }
}
