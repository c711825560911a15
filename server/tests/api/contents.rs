//! The content library over REST: save, list (newest first, search, pages), view, edit
//! (text, add, delete, reorder), delete.

use serde_json::json;

use crate::both_databases;
use crate::helpers::{Db, TestApp};

both_databases!(save_view_edit_delete, list_search_and_pages);

async fn save_view_edit_delete(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let saved = app
        .saved_content(
            "Bees dance to talk. The dance shows where flowers are. Other bees follow the map.",
        )
        .await;
    let id = saved["id"].as_i64().unwrap();
    assert_eq!(saved["mode"], "script");
    assert_eq!(saved["title"], "Bees dance to talk");
    let scenes = saved["scenes"].as_array().unwrap().clone();
    assert_eq!(scenes.len(), 3);

    // Reorder (third first), edit the first, drop the second, add a new one at the end.
    let edit = json!({
        "title": "  How bees talk  ",
        "scenes": [
            { "id": scenes[2]["id"], "narration": scenes[2]["narration"], "visual_prompt": "a bee map" },
            { "id": scenes[0]["id"], "narration": "Bees dance to share news.", "seconds": 3.5 },
            { "narration": "And that is the waggle dance." }
        ]
    });
    let (status, body) = app.put(&format!("/api/contents/{id}"), &edit).await;
    assert_eq!(status, 200, "{body}");
    let updated = &body["data"];
    assert_eq!(updated["title"], "How bees talk");
    let narrations: Vec<&str> = updated["scenes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["narration"].as_str().unwrap())
        .collect();
    assert_eq!(
        narrations,
        [
            "Other bees follow the map.",
            "Bees dance to share news.",
            "And that is the waggle dance."
        ]
    );
    assert_eq!(updated["scenes"][0]["id"], scenes[2]["id"]);
    assert_eq!(updated["scenes"][0]["visual_prompt"], "a bee map");
    assert_eq!(updated["scenes"][1]["seconds"], 3.5);
    let positions: Vec<i64> = updated["scenes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, [0, 1, 2]);
    assert_eq!(app.count("scenes").await, 3);

    let (status, fetched) = app.get(&format!("/api/contents/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(&fetched["data"], updated);

    let (status, _) = app.delete(&format!("/api/contents/{id}")).await;
    assert_eq!(status, 204);
    let (status, body) = app.get(&format!("/api/contents/{id}")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(app.count("scenes").await, 0, "scenes go with their content");
    let (status, _) = app.delete(&format!("/api/contents/{id}")).await;
    assert_eq!(status, 404);
}

async fn list_search_and_pages(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let titles = [
        "Volcanoes erupt slowly",
        "Why cats purr",
        "Deep sea volcanoes glow",
        "100% pure_honey facts",
    ];
    for t in titles {
        app.saved_content(&format!("{t}. Another sentence follows here."))
            .await;
    }
    let (status, body) = app.get("/api/contents").await;
    assert_eq!(status, 200);
    let listed: Vec<&str> = body["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        [
            "100% pure_honey facts",
            "Deep sea volcanoes glow",
            "Why cats purr",
            "Volcanoes erupt slowly"
        ]
    );
    assert_eq!(body["data"]["total"], 4);
    assert_eq!(body["data"]["items"][0]["scene_count"], 2);

    let (_, body) = app.get("/api/contents?q=VOLCANO").await;
    let found: Vec<&str> = body["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["title"].as_str().unwrap())
        .collect();
    assert_eq!(found, ["Deep sea volcanoes glow", "Volcanoes erupt slowly"]);
    let (_, body) = app.get("/api/contents?q=%25").await;
    assert_eq!(body["data"]["total"], 1, "a typed % is literal: {body}");
    let (_, body) = app.get("/api/contents?q=e_h").await;
    assert_eq!(body["data"]["total"], 1, "a typed _ is literal: {body}");
    let (_, body) = app.get("/api/contents?q=c_t").await;
    assert_eq!(body["data"]["total"], 0, "_ is no wildcard: {body}");

    let (_, page2) = app.get("/api/contents?per_page=3&page=2").await;
    assert_eq!(page2["data"]["items"].as_array().unwrap().len(), 1);
    assert_eq!(page2["data"]["items"][0]["title"], "Volcanoes erupt slowly");
    assert_eq!(
        (
            page2["data"]["page"].as_i64(),
            page2["data"]["total"].as_i64()
        ),
        (Some(2), Some(4))
    );
}
