//! Users and API keys: every route as the owner, as another user, and with
//! no key. Other users' ids answer 404, so ids are never confirmed.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Server, TestDb};

/// What a route of the matrix is sent.
enum Body {
    None,
    Json(Value),
    /// An upload: the file's field name and the text fields beside it.
    Upload(String, Vec<(&'static str, &'static str)>),
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_as_owner_other_user_and_anonymous() {
    let db = TestDb::new().await;
    db.migrate();
    let server = Server::start(&db).await;
    let bob = db.user("bob");
    let jpeg = testdata::read("jpg/gps/DSCN0010.jpg");
    let hash = blake3::hash(&jpeg).to_hex().to_string();
    let (code, up) = server.upload("gps.jpg", jpeg.clone(), "image/jpeg").await;
    assert_eq!(code, 201);
    let id = up["asset_id"].as_str().unwrap().to_owned();
    let done = server.wait_done(&id).await;
    assert_eq!(done["status"], "ready", "{done}");
    let job = up["task_id"].as_i64().unwrap();

    // A second asset, for the one route that destroys.
    let victim_bytes = testdata::read("jpg/Canon_40D.jpg");
    let (code, victim) = server.upload("victim.jpg", victim_bytes, "image/jpeg").await;
    assert_eq!(code, 201, "{victim}");
    let victim = victim["asset_id"].as_str().unwrap().to_owned();
    server.wait_done(&victim).await;

    let owner = server.client();
    let other = Server::client_with(Some(&bob));
    let anonymous = Server::client_with(None);
    let bad_key = Server::client_with(Some("lum_not-a-real-key"));
    let url = |p: &str| format!("{}{p}", server.base);

    // Upload probes are tiny: the server answers 401 before reading the
    // body, and a small body is sent whole before that answer arrives.
    let probe = b"lumilio route matrix probe".to_vec();
    let probe_hash = blake3::hash(&probe).to_hex().to_string();
    let upload = |field: &str, extra: &[(&'static str, &'static str)]| {
        Body::Upload(field.to_owned(), extra.to_vec())
    };
    let form = |field: &str, extra: &[(&'static str, &'static str)]| {
        let mut form = reqwest::multipart::Form::new();
        for (k, v) in extra {
            form = form.text(*k, *v);
        }
        form.part(
            field.to_owned(),
            reqwest::multipart::Part::bytes(probe.clone()).file_name("probe.jpg"),
        )
    };
    let json = Body::Json;
    // (route as the router names it, path sent, body, owner's status, other user's status),
    // in the order they are sent: each caller goes anonymous, bad key, other user, owner.
    let routes: Vec<(&str, String, Body, u16, u16)> = vec![
        ("GET /api/v1/assets/{id}", format!("/api/v1/assets/{id}"), Body::None, 200, 404),
        ("GET /api/v1/assets/{id}/original", format!("/api/v1/assets/{id}/original"), Body::None, 200, 404),
        (
            "GET /api/v1/assets/{id}/renditions/{name}",
            format!("/api/v1/assets/{id}/renditions/small"),
            Body::None,
            200,
            404,
        ),
        ("GET /api/v1/jobs/{id}", format!("/api/v1/jobs/{job}"), Body::None, 200, 404),
        ("GET /api/v1/assets", "/api/v1/assets".into(), Body::None, 200, 200),
        (
            "POST /api/v1/assets/check",
            "/api/v1/assets/check".into(),
            json(json!({"hashes": [hash]})),
            200,
            200,
        ),
        (
            "POST /api/v1/assets/{id}/reprocess",
            format!("/api/v1/assets/{id}/reprocess"),
            Body::None,
            202,
            404,
        ),
        // No sidecar was uploaded, so 404 for the owner too; the Immich test
        // checks one that exists.
        ("GET /api/v1/assets/{id}/sidecar", format!("/api/v1/assets/{id}/sidecar"), Body::None, 404, 404),
        // No inference service here: the owner learns the asset has no
        // embedding (409), another user only that it does not exist (404).
        ("GET /api/v1/assets/{id}/similar", format!("/api/v1/assets/{id}/similar"), Body::None, 409, 404),
        (
            "POST /api/v1/search",
            "/api/v1/search".into(),
            json(json!({"query": "a beach"})),
            503,
            503,
        ),
        // The web app's routes: status and events are the caller's own.
        ("GET /api/v1/status", "/api/v1/status".into(), Body::None, 200, 200),
        ("GET /api/v1/events", "/api/v1/events".into(), Body::None, 200, 200),
        (
            "POST /api/v1/assets/{id}/favorite",
            format!("/api/v1/assets/{id}/favorite"),
            json(json!({"favorite": true})),
            200,
            404,
        ),
        // Uploads: bob's probe is new to him, then a duplicate on each route.
        ("POST /api/v1/assets", "/api/v1/assets".into(), upload("file", &[]), 201, 201),
        ("POST /api/v1/assets/batch", "/api/v1/assets/batch".into(), upload(&probe_hash, &[]), 200, 200),
        (
            "POST /api/assets",
            "/api/assets".into(),
            upload(
                "assetData",
                &[
                    ("deviceAssetId", "probe"),
                    ("deviceId", "matrix"),
                    ("fileCreatedAt", "2024-05-01T12:00:00.000Z"),
                    ("fileModifiedAt", "2024-05-01T12:00:00.000Z"),
                ],
            ),
            200,
            200,
        ),
        // The Immich compatibility routes that need a key.
        ("GET /api/users/me", "/api/users/me".into(), Body::None, 200, 200),
        ("GET /api/api-keys/me", "/api/api-keys/me".into(), Body::None, 200, 200),
        ("GET /api/assets/statistics", "/api/assets/statistics".into(), Body::None, 200, 200),
        (
            "POST /api/assets/bulk-upload-check",
            "/api/assets/bulk-upload-check".into(),
            json(json!({"assets": [{"id": "a", "checksum": "0000000000000000000000000000000000000000"}]})),
            200,
            200,
        ),
        // Last: the one that destroys, on its own asset.
        ("DELETE /api/v1/assets/{id}", format!("/api/v1/assets/{victim}"), Body::None, 204, 404),
    ];
    // Routes anyone may call: the service's own, the web app's files, and
    // Immich's discovery routes (a client asks them before it has a key).
    let public = [
        "GET /health",
        "GET /api/openapi.json",
        "GET /metrics",
        "GET /",
        "GET /web/{file}",
        "GET /.well-known/immich",
        "GET /api/server/media-types",
        "GET /api/server/version",
        "GET /api/server/ping",
    ];
    // The matrix covers every route the server documents (a test in the host
    // checks the document lists every route of the router), so a new route
    // cannot be left out of it.
    let doc: Value = anonymous
        .get(url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut documented = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    for route in &documented {
        assert!(
            public.contains(&route.as_str()) || routes.iter().any(|r| r.0 == route.as_str()),
            "{route} is in the router but not in this route matrix: add it (owner, other user, no key, bad key) or to `public`"
        );
    }
    for (route, ..) in &routes {
        assert!(documented.contains(&route.to_string()), "{route} is in the matrix but not served");
    }
    for route in public {
        assert!(documented.contains(&route.to_string()), "{route} is listed public but not served");
    }

    for (route, path, body, as_owner, as_other) in &routes {
        let method: Method = route.split(' ').next().unwrap().parse().unwrap();
        let send = |c: &reqwest::Client| {
            let mut r = c.request(method.clone(), url(path));
            match body {
                Body::None => {}
                Body::Json(b) => r = r.json(b),
                Body::Upload(field, extra) => r = r.multipart(form(field, extra)),
            }
            r.send()
        };
        assert_eq!(
            send(&anonymous).await.unwrap().status().as_u16(),
            401,
            "{route} ({path}) without a key"
        );
        assert_eq!(
            send(&bad_key).await.unwrap().status().as_u16(),
            401,
            "{route} ({path}) with a bad key"
        );
        let r = send(&other).await.unwrap();
        assert_eq!(
            r.status().as_u16(),
            *as_other,
            "{route} ({path}) as another user"
        );
        if *as_other == 404 {
            let b: Value = r.json().await.unwrap();
            assert_eq!(b["error"]["code"], "not_found", "{route}: {b}");
        }
        assert_eq!(
            send(&owner).await.unwrap().status().as_u16(),
            *as_owner,
            "{route} ({path}) as the owner"
        );
    }
    server.wait_done(&id).await;

    // Lists and checks never show another user's assets.
    let list: Value = other
        .get(url("/api/v1/assets"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["asset_id"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(&id.as_str()), "bob's list shows alice's asset: {list}");
    let check: Value = other
        .post(url("/api/v1/assets/check"))
        .json(&json!({"hashes": [hash]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(check["missing"], json!([hash]), "bob has not uploaded it");

    // Uploads need a key. The server answers 401 before reading the body, so
    // the probe is small enough to be sent whole before the answer arrives.
    let tiny = || {
        reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(vec![0xFF; 64]).file_name("x.jpg"),
        )
    };
    assert_eq!(
        anonymous
            .post(url("/api/v1/assets"))
            .multipart(tiny())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    assert_eq!(
        anonymous
            .post(url("/api/v1/assets/batch"))
            .multipart(tiny())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    // Bob's copy of the same bytes is his own asset, not a duplicate.
    let form = || {
        reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(jpeg.clone()).file_name("gps.jpg"),
        )
    };
    let r = other
        .post(url("/api/v1/assets"))
        .multipart(form())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "dedup is per user");
    let bobs: Value = r.json().await.unwrap();
    assert_ne!(bobs["asset_id"], up["asset_id"]);

    // Deleting someone else's asset is a 404 and deletes nothing; the shared original stays.
    assert_eq!(
        other
            .delete(url(&format!("/api/v1/assets/{id}")))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    assert_eq!(
        owner
            .get(url(&format!("/api/v1/assets/{id}")))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    server
        .wait_done_as(&other, bobs["asset_id"].as_str().unwrap())
        .await;
    assert_eq!(
        owner
            .delete(url(&format!("/api/v1/assets/{id}")))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        204
    );
    let r = other
        .get(url(&format!(
            "/api/v1/assets/{}/original",
            bobs["asset_id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        200,
        "bob's asset keeps the bytes alice's delete would otherwise remove"
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), jpeg.as_slice());

    // Public routes need no key.
    assert_eq!(
        anonymous
            .get(url("/health"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        anonymous
            .get(url("/api/openapi.json"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    // The web app's files are public (the page asks for a key itself).
    for path in ["/", "/web/main.js", "/web/app.css"] {
        let r = anonymous.get(url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        assert!(r.headers().contains_key("content-security-policy"), "{path}");
    }
    assert_eq!(
        anonymous
            .get(url("/web/nope.js"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    // x-api-key works as well as Bearer.
    let r = reqwest::Client::new()
        .get(url("/api/v1/assets"))
        .header("x-api-key", &bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_keys_stop_working_and_keys_are_stored_hashed() {
    let db = TestDb::new().await;
    db.migrate();
    let server = Server::start(&db).await;
    let key = db.user("carol");
    let c = Server::client_with(Some(&key));
    let url = format!("{}/api/v1/assets", server.base);
    assert_eq!(c.get(&url).send().await.unwrap().status().as_u16(), 200);
    let mut conn = db.conn().await;
    let stored: Vec<String> = sqlx::query_scalar("SELECT key_hash FROM api_keys")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert!(!stored.contains(&key), "the key itself is never stored");
    let list = db.lumilio(&["user", "list"]);
    let list = String::from_utf8(list.stdout).unwrap();
    assert!(
        list.contains("carol") && list.contains(&key[..12]),
        "{list}"
    );
    assert!(!list.contains(&key), "list shows prefixes, not keys");
    let out = db.lumilio(&["user", "revoke-key", &key[..12]]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(c.get(&url).send().await.unwrap().status().as_u16(), 401);
    let out = db.lumilio(&["user", "create", "carol"]);
    assert!(!out.status.success(), "names are unique");
}
