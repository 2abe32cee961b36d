//! Issue 13 §5: the `places` stage through the real server and the default
//! pipeline: a GPS photo is named Arezzo, stored in the place columns, shown
//! in the asset view, and found with `place=` on the list API.

use serde_json::Value;

use crate::harness::{Server, TestDb, bin, plugin_run, repo};

async fn list(server: &Server, query: &str) -> Vec<String> {
    let (code, page) = server.get(&format!("/api/v1/assets?{query}")).await;
    assert_eq!(code, 200, "{page}");
    page["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["file_name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn places_named_stored_and_filtered() {
    let db = TestDb::new().await;
    db.migrate();
    let server = Server::start(&db).await;

    let (code, gps) = server.upload("arezzo.jpg", testdata::read("jpg/gps/DSCN0010.jpg"), "image/jpeg").await;
    assert_eq!(code, 201, "{gps}");
    // A photo without GPS: named nothing, and never matched by a place.
    let (code, plain) = server.upload("no-gps.jpg", testdata::read("jpg/Canon_40D.jpg"), "image/jpeg").await;
    assert_eq!(code, 201, "{plain}");

    let done = server.wait_done(gps["asset_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "ready", "{done}");
    let stage = done["stages"].as_array().unwrap().iter().find(|s| s["stage"] == "places").cloned();
    assert_eq!(stage.as_ref().map(|s| &s["outcome"]), Some(&Value::from("ok")), "{done}");
    assert_eq!(done["facts"]["place_city"], "Arezzo", "{done}");
    assert_eq!(
        done["place"],
        serde_json::json!({ "city": "Arezzo", "region": "Tuscany", "country": "Italy", "country_code": "IT" })
    );
    let other = server.wait_done(plain["asset_id"].as_str().unwrap()).await;
    assert_eq!(other["status"], "ready", "{other}");
    assert_eq!(other["place"], Value::Null, "{other}");

    // The typed columns, not only the facts JSON.
    let mut conn = db.conn().await;
    let (city, cc): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT place_city, place_country_code FROM assets WHERE file_name = 'arezzo.jpg'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!((city.as_deref(), cc.as_deref()), (Some("Arezzo"), Some("IT")));

    // City, region, country or country code, whole names, any case.
    for q in ["arezzo", "AREZZO", "Tuscany", "italy", "it", "%20Arezzo%20"] {
        assert_eq!(list(&server, &format!("place={q}")).await, ["arezzo.jpg"], "place={q}");
    }
    for q in ["arez", "Paris", "Germany"] {
        assert!(list(&server, &format!("place={q}")).await.is_empty(), "place={q}");
    }
    // Combined with another filter, and with the timeline's order.
    assert_eq!(list(&server, "place=arezzo&has_location=true&order=taken").await, ["arezzo.jpg"]);
    assert!(list(&server, "place=arezzo&has_location=false").await.is_empty());
    // An empty place is no filter.
    assert_eq!(list(&server, "place=").await.len(), 2);
}

/// `lumilio plugin run --fact` stands in for the metadata stage, so places can
/// be tried alone on any file.
#[test]
fn plugin_run_with_gps_facts_names_the_place() {
    let places = repo().join("target/wasm32-wasip2/release/places.wasm");
    let file = repo().join("tests/data/photos/jpg/Canon_40D.jpg");
    let (code, report) = plugin_run(
        &places,
        &file,
        &["--fact", "gps_latitude=48.8584", "--fact", "gps_longitude=2.2945"],
    );
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["facts"]["place_city"], "Paris", "{report}");
    assert_eq!(report["facts"]["place_country_code"], "FR", "{report}");
    // Without the facts the stage has nothing to go on, and names nothing.
    let (code, bare) = plugin_run(&places, &file, &[]);
    assert_eq!(code, 0, "{bare}");
    assert_eq!(bare["facts"].get("place_city"), None, "{bare}");
}

/// `plugin run --repeat N` calls the stage N times and summarises their
/// times, for plugin authors timing (and, with `--perf-map`, profiling) a stage.
#[test]
fn plugin_run_repeat_summarises_every_call() {
    let places = repo().join("target/wasm32-wasip2/release/places.wasm");
    let file = repo().join("tests/data/photos/jpg/Canon_40D.jpg");
    let (code, report) = plugin_run(&places, &file, &["--repeat", "4"]);
    assert_eq!(code, 0, "{report}");
    let runs = &report["runs"];
    assert_eq!(runs["count"], 4, "{report}");
    let (min, median, max) = (
        runs["min_ms"].as_f64().unwrap(),
        runs["median_ms"].as_f64().unwrap(),
        runs["max_ms"].as_f64().unwrap(),
    );
    assert!(0.0 < min && min <= median && median <= max, "{report}");
    // One call (the default) adds no summary.
    let (_, once) = plugin_run(&places, &file, &[]);
    assert_eq!(once.get("runs"), None, "{once}");
    // Zero calls is refused, not silently one.
    let out = std::process::Command::new(bin())
        .args(["plugin", "run", "--repeat", "0"])
        .arg(&places)
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && out.stdout.is_empty(), "{err}");
    assert!(err.contains("--repeat"), "the error names the flag: {err}");
}
