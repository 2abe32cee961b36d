//! The web app in a real browser: Debian's Chromium driven over WebDriver
//! (the `lumilio-browser` crate: chromedriver on a free loopback port), against the real
//! binary. `make test` installs both (`scripts/apt-need.sh`). Each test saves screenshots
//! under target/web-screenshots/ and fails on any console error, JavaScript
//! error, CSP violation, or request that left the host.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lumilio_browser::{Browser, Key, Locator};
use serde_json::{Value, json};

use crate::harness::{Infer, Server, TestDb, repo};

fn photos() -> PathBuf {
    repo().join("tests/data/photos/jpg")
}

async fn server_with_infer(db: &TestDb) -> (Server, Infer) {
    let (infer, addr) = Infer::start();
    let server = Server::start_with(
        db,
        &repo().join("pipeline.toml"),
        &[("ML_SERVICE_ADDR", addr.as_str()), ("LUMILIO_CLIP_WINDOW_MS", "100")],
    )
    .await;
    (server, infer)
}

async fn upload_file(server: &Server, key: &str, path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(path.file_name().unwrap().to_string_lossy().into_owned())
        .mime_str("image/jpeg")
        .unwrap();
    let r = Server::client_with(Some(key))
        .post(format!("{}/api/v1/assets", server.base))
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let body: Value = r.json().await.unwrap();
    let id = body["asset_id"].as_str().unwrap().to_owned();
    server
        .wait_done_as(&Server::client_with(Some(key)), &id)
        .await;
    id
}

const FINAL: &str = "['new','duplicate','rejected','failed','error']";

#[tokio::test(flavor = "multi_thread")]
async fn the_whole_path_in_a_browser() {
    let db = TestDb::new().await;
    db.migrate();
    // No inference service here: the filters need none, and the search test
    // covers the inference service's side.
    let server = Server::start(&db).await;
    let b = Browser::start("desktop", 1280, 900).await;

    b.goto(&format!("{}/", server.base)).await;
    b.until("the sign-in form", "return !!document.querySelector('#key')").await;
    b.shot("signin").await;
    b.sign_in(&server.base, &server.key).await;
    b.until("the empty library", "return !document.querySelector('.library .empty').hidden").await;

    // Six files through the file input: four photos, a byte-identical copy, a broken JPEG.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("Canon_40D_copy.jpg");
    std::fs::copy(photos().join("Canon_40D.jpg"), &copy).unwrap();
    // The photos under jpg/invalid/ have bad metadata but decode; this one cannot:
    // a JPEG cut off inside its headers.
    let broken = dir.path().join("broken.jpg");
    let canon = std::fs::read(photos().join("Canon_40D.jpg")).unwrap();
    std::fs::write(&broken, &canon[..600]).unwrap();
    let files = [
        photos().join("Canon_40D.jpg"),
        photos().join("gps/DSCN0010.jpg"),
        photos().join("gps/DSCN0012.jpg"),
        photos().join("orientation/landscape_3.jpg"),
        copy,
        broken,
    ];
    b.click("button[data-action=upload]").await;
    let input = b
        .client
        .find(Locator::Css("input[data-testid=file-input]"))
        .await
        .unwrap();
    let list: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    input.send_keys(&list.join("\n")).await.unwrap();
    b.until(
        "six finished uploads",
        &format!(
            "const s = [...document.querySelectorAll('li.upload')].map(l => l.dataset.state);\
             return s.length === 6 && s.every(x => {FINAL}.includes(x))"
        ),
    )
    .await;
    let outcomes = b
        .js("return [...document.querySelectorAll('li.upload')].map(l => [l.dataset.name, l.dataset.state, \
             l.querySelector('.status').textContent, l.querySelector('progress').value])")
        .await;
    let outcomes = outcomes.as_array().unwrap();
    let state_of = |name: &str| {
        outcomes
            .iter()
            .find(|o| o[0] == name)
            .unwrap_or_else(|| panic!("no upload row for {name}: {outcomes:?}"))
    };
    for name in ["DSCN0010.jpg", "DSCN0012.jpg", "landscape_3.jpg"] {
        assert_eq!(state_of(name)[1], "new", "{outcomes:?}");
    }
    let canon = [state_of("Canon_40D.jpg")[1].clone(), state_of("Canon_40D_copy.jpg")[1].clone()];
    assert!(
        canon.contains(&json!("new")) && canon.contains(&json!("duplicate")),
        "one Canon is new, its copy a duplicate: {outcomes:?}"
    );
    let broken = state_of("broken.jpg");
    assert_eq!(broken[1], "rejected", "{outcomes:?}");
    assert!(
        broken[2].as_str().unwrap().len() > "rejected: ".len(),
        "the server's reason is shown: {broken:?}"
    );
    for o in outcomes {
        assert_eq!(o[3].as_f64(), Some(1.0), "every bar finished: {o:?}");
    }
    assert!(b.text(".overall-text").await.starts_with("6 of 6 done"));
    b.shot("upload").await;

    // The thumbnails arrived by push, without a reload: four photos and the rejected tile.
    b.until(
        "four thumbnails",
        "return document.querySelectorAll('.library .tile img[src^=\"blob:\"]').length === 4",
    )
    .await;
    let rejected_badge = b.text(".library .tile .badge.rejected").await;
    assert!(rejected_badge.to_lowercase().contains("rejected"), "{rejected_badge}");
    let headings = b
        .js("return [...document.querySelectorAll('.library h2.month')].map(h => h.textContent)")
        .await;
    assert!(!headings.as_array().unwrap().is_empty(), "month headings");
    b.click("button[data-action=upload]").await; // close the panel
    b.shot("library").await;

    // Open the Canon and read its camera model; then the arrow key moves on.
    b.click(".library .tile[title^='Canon_40D']").await;
    let camera = b.text("[data-field=camera]").await;
    assert!(camera.contains("40D"), "camera in the info panel: {camera}");
    let first = b.text("[data-field=file_name]").await;
    b.until("the large image", "return !!document.querySelector('.viewer img.large[src^=\"blob:\"]')").await;
    b.shot("photo").await;
    // The Canon is the oldest photo, so the arrow towards newer ones moves on.
    b.key(Key::Left).await;
    b.until(
        "the next photo",
        &format!("const n = document.querySelector('[data-field=file_name]'); return n && n.textContent !== {first:?}"),
    )
    .await;
    b.key(Key::Escape).await;
    b.until("the library again", "return document.querySelector('.viewer').hidden").await;

    // Filter a search: camera model 40D finds only the Canon.
    b.click("nav a[data-nav=search]").await;
    b.type_into("#f-model", "40D").await;
    b.click(".search-form button[type=submit]").await;
    b.until("filtered results", "return document.querySelectorAll('.results .tile').length === 1").await;
    let hit = b.js("return document.querySelector('.results .tile').title").await;
    assert!(hit.as_str().unwrap().starts_with("Canon_40D"), "{hit}");
    b.shot("search").await;

    // Delete one photo from its view, with confirmation.
    b.goto(&format!("{}/#/", server.base)).await;
    b.until("the library", "return document.querySelectorAll('.library .tile').length === 5").await;
    b.click(".library .tile[title='DSCN0012.jpg']").await;
    let doomed = b.js("return location.hash.split('/').pop()").await;
    b.click("button[data-action=delete]").await;
    // Where the focus is the moment the deletion is announced, before the
    // next photo has loaded: keys pressed then (Escape) must reach the viewer.
    // The observer runs right after the click handler's synchronous part, so
    // this does not depend on how fast the next photo loads.
    b.js(
        "window.focusAfterDelete = null;\
         const mo = new MutationObserver(() => {\
           if (window.focusAfterDelete !== null || ![...document.querySelectorAll('.toast')].some(t => t.textContent.startsWith('Deleted'))) return;\
           const a = document.activeElement;\
           window.focusAfterDelete = document.querySelector('.viewer').contains(a) ? 'viewer' : (a && a.tagName) || 'none';\
           mo.disconnect();\
         });\
         mo.observe(document.body, { childList: true });",
    )
    .await;
    b.click("dialog.confirm button[data-confirm=yes]").await;
    b.until("four tiles", "return document.querySelectorAll('.library .tile').length === 4").await;
    let focus = b.until("the deletion announced", "return window.focusAfterDelete").await;
    assert_eq!(focus, "viewer", "focus once the deletion is announced");
    let (code, _) = server.get(&format!("/api/v1/assets/{}", doomed.as_str().unwrap())).await;
    assert_eq!(code, 404, "deleted on the server");

    // The status page counts the jobs as the API does.
    b.key(Key::Escape).await;
    b.until("the library again", "return document.querySelector('.viewer').hidden").await;
    b.click("nav a[data-nav=status]").await;
    b.until("the queues", "return !!document.querySelector('[data-queue=process_asset]')").await;
    let (_, api) = server.get("/api/v1/status").await;
    let completed = b
        .text("[data-queue=process_asset] td[data-state=completed]")
        .await;
    assert_eq!(completed, api["queues"]["process_asset"]["completed"].to_string());
    let jobs: i64 = api["queues"]["process_asset"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_i64().unwrap())
        .sum();
    assert_eq!(jobs, 4, "one job per remaining asset: {api}");
    assert_eq!(b.text("[data-total=assets]").await, "4");
    assert!(b.text(".failures").await.contains("broken.jpg"), "the rejected file is listed");
    b.shot("status").await;

    b.assert_clean(&server.base).await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_key_gets_a_clear_message() {
    let db = TestDb::new().await;
    db.migrate();
    let server = Server::start(&db).await;
    let mut b = Browser::start("wrong-key", 1280, 800).await;
    b.allowed.push("401".into());
    b.goto(&format!("{}/", server.base)).await;
    b.type_into("#key", "lum_this-is-not-a-key").await;
    b.click("form.signin button[type=submit]").await;
    let message = b.shown_text("#signin-error").await;
    assert!(message.contains("not accepted"), "{message}");
    assert!(message.contains("unknown or revoked"), "the server's reason: {message}");
    let stored = b.js("return localStorage.getItem('lumilio.apiKey')").await;
    assert_eq!(stored, Value::Null, "a refused key is not kept");
    b.shot("message").await;
    b.assert_clean(&server.base).await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn search_says_when_it_is_not_semantic() {
    let db = TestDb::new().await;
    db.migrate();
    // No photos: the notice does not depend on them. Which photos are ranked,
    // and that distance-1.0 results are not listed, is a unit test in api/search.rs.
    let (server, _infer) = server_with_infer(&db).await;
    // The API says so, and a query with no signal ranks nothing.
    let page: Value = server
        .client()
        .post(format!("{}/api/v1/search", server.base))
        .json(&json!({"query": "a dog on a beach"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["semantic"], false, "{page}");
    assert_eq!(page["results"], json!([]), "{page}");
    assert!(page["notice"].as_str().unwrap().contains("not semantic"), "{page}");

    let b = Browser::start("not-semantic", 1280, 800).await;
    b.sign_in(&server.base, &server.key).await;
    b.goto(&format!("{}/#/search?q=a%20dog%20on%20a%20beach", server.base)).await;
    let notice = b.shown_text("[data-testid=search-notice]").await;
    assert!(notice.contains("not semantic"), "{notice}");
    let summary = b
        .until("the summary", "const t = document.querySelector('.search .summary').textContent; return t.includes('No photo') ? t : ''")
        .await;
    assert!(summary.as_str().unwrap().contains("No photo matches"), "{summary}");
    assert_eq!(b.js("return document.querySelectorAll('.results .tile').length").await, 0);
    b.shot("dog-on-a-beach").await;
    // Another query through the form (a filter too): the notice stays.
    b.type_into("#f-q", "blue sky").await;
    b.type_into("#f-make", "Canon").await;
    b.click(".search-form button[type=submit]").await;
    b.until("the new query", "return location.hash.includes('make=Canon')").await;
    b.until(
        "the notice again",
        "return document.querySelector('.search .summary').textContent.includes('blue sky')",
    )
    .await;
    assert!(b.shown_text("[data-testid=search-notice]").await.contains("not semantic"));
    b.shot("blue").await;
    b.assert_clean(&server.base).await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn phone_width_layout() {
    let db = TestDb::new().await;
    db.migrate();
    let server = Server::start(&db).await;
    let mut ids = Vec::new();
    for p in ["Canon_40D.jpg", "gps/DSCN0010.jpg", "gps/DSCN0021.jpg", "orientation/portrait_3.jpg"] {
        ids.push(upload_file(&server, &server.key, &photos().join(p)).await);
    }
    let b = Browser::start("phone", 360, 740).await;
    b.sign_in(&server.base, &server.key).await;
    assert_eq!(b.js("return window.innerWidth").await, 360, "a 360 px viewport");
    b.until("four thumbnails", "return document.querySelectorAll('.library .tile img[src^=\"blob:\"]').length === 4")
        .await;
    let no_overflow = "return document.documentElement.scrollWidth <= window.innerWidth \
         && [...document.querySelectorAll('header.top button, header.top nav a')].every(e => { \
              const r = e.getBoundingClientRect(); return r.right <= window.innerWidth && r.width > 0; })";
    assert_eq!(b.js(no_overflow).await, true, "library fits 360 px");
    let widths = b
        .js("return [...document.querySelectorAll('.library .tile')].map(t => t.getBoundingClientRect().width)")
        .await;
    for w in widths.as_array().unwrap() {
        let w = w.as_f64().unwrap();
        assert!((100.0..125.0).contains(&w), "three tiles a row at 360 px: {widths}");
    }
    b.shot("library").await;
    b.click(".library .tile").await;
    b.until("the info panel", "return !!document.querySelector('[data-field=file_name]')").await;
    assert_eq!(b.js(no_overflow).await, true, "photo view fits 360 px");
    // Nothing paints over the actions: a tall photo once spilled over them.
    let hidden_actions = b
        .js("return [...document.querySelectorAll('.info .actions button')].filter(e => { \
               const r = e.getBoundingClientRect(); \
               const at = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2); \
               return r.width === 0 || !(at && e.contains(at)); }).map(e => e.textContent)")
        .await;
    assert_eq!(hidden_actions, json!([]), "every action in the photo view can be tapped");
    b.shot("photo").await;
    b.key(Key::Escape).await;
    b.click("nav a[data-nav=search]").await;
    b.until("the search form", "return !document.querySelector('.search').hidden").await;
    assert_eq!(b.js(no_overflow).await, true, "search fits 360 px");
    b.shot("search").await;
    b.click("nav a[data-nav=status]").await;
    b.until("the status page", "return !!document.querySelector('[data-total=assets]')").await;
    assert_eq!(b.js("return document.documentElement.scrollWidth <= window.innerWidth").await, true);
    b.shot("status").await;
    b.assert_clean(&server.base).await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn another_user_never_sees_the_photo_even_by_url() {
    let db = TestDb::new().await;
    db.migrate();
    let server = Server::start(&db).await;
    let alices = upload_file(&server, &server.key, &photos().join("Canon_40D.jpg")).await;
    let bob = db.user("bob");
    let mut b = Browser::start("isolation", 1280, 800).await;
    b.allowed.push(format!("/api/v1/assets/{alices}"));
    b.sign_in(&server.base, &bob).await;
    b.until("the empty library", "return !document.querySelector('.library .empty').hidden").await;
    assert_eq!(b.js("return document.querySelectorAll('.library .tile').length").await, 0);
    b.goto(&format!("{}/#/photo/{alices}", server.base)).await;
    let message = b.text(".viewer .info .error").await;
    assert!(message.contains("not yours"), "{message}");
    b.shot("by-url").await;
    // Alice's upload later, while Bob watches: nothing reaches his page.
    upload_file(&server, &server.key, &photos().join("gps/DSCN0010.jpg")).await;
    b.key(Key::Escape).await;
    b.click("nav a[data-nav=status]").await;
    assert_eq!(b.text("[data-total=assets]").await, "0");
    b.click("nav a[data-nav=library]").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(b.js("return document.querySelectorAll('.library .tile').length").await, 0);
    let seen = b
        .js("return performance.getEntriesByType('resource').map(e => e.name).filter(n => n.includes('/renditions/') || n.includes('/original'))")
        .await;
    assert_eq!(seen, json!([]), "no file of Alice's was even asked for");
    b.assert_clean(&server.base).await;
    b.close().await;
}

/// Reads a Server-Sent Events response until `want` appears or `within` passes.
async fn read_events(r: &mut reqwest::Response, want: &str, within: Duration) -> String {
    let mut seen = String::new();
    let deadline = Instant::now() + within;
    while !seen.contains(want) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, r.chunk()).await {
            Ok(Ok(Some(c))) => seen.push_str(&String::from_utf8_lossy(&c)),
            _ => break,
        }
    }
    seen
}

/// Opens `key`'s event stream and waits for its `ready` event.
async fn open_events(server: &Server, key: &str) -> reqwest::Response {
    let mut r = Server::client_with(Some(key))
        .get(format!("{}/api/v1/events", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let hello = read_events(&mut r, "event: ready", Duration::from_secs(10)).await;
    assert!(hello.contains("event: ready"), "{hello}");
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn events_reach_their_owner_only() {
    let db = TestDb::new().await;
    db.migrate();
    let server = Server::start(&db).await;
    let bob = db.user("bob");
    let mut alice_events = open_events(&server, &server.key).await;
    let mut bob_events = open_events(&server, &bob).await;
    assert!(
        alice_events.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let id = upload_file(&server, &server.key, &photos().join("Canon_40D.jpg")).await;
    let seen = read_events(&mut alice_events, "\"status\":\"ready\"", Duration::from_secs(20)).await;
    assert!(seen.contains(&format!("\"asset_id\":\"{id}\"")), "{seen}");
    assert!(seen.contains("\"op\":\"insert\""), "{seen}");
    let bobs = read_events(&mut bob_events, &id, Duration::from_secs(2)).await;
    assert!(!bobs.contains(&id), "bob hears nothing of alice's asset: {bobs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_key_ends_its_open_event_streams() {
    let db = TestDb::new().await;
    db.migrate();
    let server = Server::start(&db).await;
    let bob = db.user("bob");
    let mut doomed = open_events(&server, &bob).await;
    let mut other = open_events(&server, &server.key).await;
    let out = db.lumilio(&["user", "revoke-key", &bob]);
    assert!(
        out.status.success(),
        "revoke-key: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The revocation landed: the key is refused from now on.
    let refused = Server::client_with(Some(&bob))
        .get(format!("{}/api/v1/assets", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401, "the revoked key is refused");
    let said = read_events(&mut doomed, "event: revoked", Duration::from_secs(10)).await;
    assert!(said.contains("event: revoked"), "the stream says why it ends: {said}");
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match doomed.chunk().await {
                Ok(Some(_)) => continue,
                _ => return,
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the revoked key's stream ended");
    // Another key's stream stays open and still hears its own events.
    let id = upload_file(&server, &server.key, &photos().join("Canon_40D.jpg")).await;
    let seen = read_events(&mut other, &id, Duration::from_secs(20)).await;
    assert!(seen.contains(&id), "the other stream still works: {seen}");
    assert!(!seen.contains("event: revoked"), "{seen}");
}
