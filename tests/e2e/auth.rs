//! Users and API keys: every route as the owner, as another user, and with
//! no key. Other users' ids answer 404, so ids are never confirmed.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Server, TestDb};

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

    let owner = server.client();
    let other = Server::client_with(Some(&bob));
    let anonymous = Server::client_with(None);
    let bad_key = Server::client_with(Some("lum_not-a-real-key"));
    let url = |p: &str| format!("{}{p}", server.base);

    // (method, path, body, owner's status, other user's status)
    let routes: Vec<(Method, String, Option<Value>, u16, u16)> = vec![
        (Method::GET, format!("/api/v1/assets/{id}"), None, 200, 404),
        (
            Method::GET,
            format!("/api/v1/assets/{id}/original"),
            None,
            200,
            404,
        ),
        (
            Method::GET,
            format!("/api/v1/assets/{id}/renditions/small"),
            None,
            200,
            404,
        ),
        (Method::GET, format!("/api/v1/jobs/{job}"), None, 200, 404),
        (Method::GET, "/api/v1/assets".into(), None, 200, 200),
        (
            Method::POST,
            "/api/v1/assets/check".into(),
            Some(json!({"hashes": [hash]})),
            200,
            200,
        ),
        (
            Method::POST,
            format!("/api/v1/assets/{id}/reprocess"),
            None,
            202,
            404,
        ),
        // No sidecar was uploaded, so 404 for the owner too; the Immich test
        // checks one that exists.
        (
            Method::GET,
            format!("/api/v1/assets/{id}/sidecar"),
            None,
            404,
            404,
        ),
        // The web app's routes: status and events are the caller's own.
        (Method::GET, "/api/v1/status".into(), None, 200, 200),
        (Method::GET, "/api/v1/events".into(), None, 200, 200),
        (
            Method::POST,
            format!("/api/v1/assets/{id}/favorite"),
            Some(json!({"favorite": true})),
            200,
            404,
        ),
        // The Immich compatibility routes that need a key.
        (Method::GET, "/api/users/me".into(), None, 200, 200),
        (Method::GET, "/api/api-keys/me".into(), None, 200, 200),
        (Method::GET, "/api/assets/statistics".into(), None, 200, 200),
        (
            Method::POST,
            "/api/assets/bulk-upload-check".into(),
            Some(
                json!({"assets": [{"id": "a", "checksum": "0000000000000000000000000000000000000000"}]}),
            ),
            200,
            200,
        ),
    ];
    for (method, path, body, as_owner, as_other) in &routes {
        let send = |c: &reqwest::Client| {
            let mut r = c.request(method.clone(), url(path));
            if let Some(b) = body {
                r = r.json(b);
            }
            r.send()
        };
        assert_eq!(
            send(&anonymous).await.unwrap().status().as_u16(),
            401,
            "{method} {path} without a key"
        );
        assert_eq!(
            send(&bad_key).await.unwrap().status().as_u16(),
            401,
            "{method} {path} with a bad key"
        );
        let r = send(&other).await.unwrap();
        assert_eq!(
            r.status().as_u16(),
            *as_other,
            "{method} {path} as another user"
        );
        if *as_other == 404 {
            let b: Value = r.json().await.unwrap();
            assert_eq!(b["error"]["code"], "not_found", "{method} {path}: {b}");
        }
        assert_eq!(
            send(&owner).await.unwrap().status().as_u16(),
            *as_owner,
            "{method} {path} as the owner"
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
    assert_eq!(list["assets"], json!([]));
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
