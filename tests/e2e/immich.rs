//! Real-client compatibility: the Immich CLI (`@immich/cli`, pinned in
//! scripts/immich-cli.sh and installed from npm on first use) logs in and
//! uploads a folder into the host; plus the compatibility routes' answers to
//! requests the CLI never sends wrong.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime};

use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use sha1::Digest as _;

use crate::harness::{Server, TestDb, eventually, repo, scalar, slow_pipeline};

/// Installs the pinned client (idempotent) and returns its wrapper script.
fn install_cli() -> String {
    let out = std::process::Command::new("bash")
        .arg(repo().join("scripts/immich-cli.sh"))
        .output()
        .expect("run scripts/immich-cli.sh");
    assert!(
        out.status.success(),
        "installing @immich/cli failed (it needs npm and the npm registry):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Runs the client with a clean environment; returns its output.
async fn immich(cli: &str, home: &Path, args: impl AsRef<[&str]>) -> Output {
    let mut cmd = tokio::process::Command::new(cli);
    cmd.args(["--config-directory", &home.join("immich").to_string_lossy()])
        .args(args.as_ref())
        .env("HOME", home)
        .env_remove("IMMICH_INSTANCE_URL")
        .env_remove("IMMICH_API_KEY")
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .expect("the Immich CLI finished within 180 s")
        .expect("run the Immich CLI")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The `--json-output` document at the end of an upload's stdout.
fn json_output(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let start = stdout
        .find("\n{\n")
        .unwrap_or_else(|| panic!("no JSON in the client's output:\n{}", text(out)));
    serde_json::from_str(&stdout[start..]).unwrap_or_else(|e| panic!("{e}:\n{stdout}"))
}

/// A JPEG without its APP1..APP15 segments (EXIF, XMP): an image whose own
/// metadata holds no date.
fn without_metadata(jpeg: &[u8]) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    let mut i = 2;
    while i + 4 <= jpeg.len() && jpeg[i] == 0xFF && jpeg[i + 1] != 0xDA {
        let len = u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]) as usize;
        if !(0xE1..=0xEF).contains(&jpeg[i + 1]) {
            out.extend_from_slice(&jpeg[i..i + 2 + len]);
        }
        i += 2 + len;
    }
    out.extend_from_slice(&jpeg[i..]);
    out
}

fn sha1_hex(bytes: &[u8]) -> String {
    sha1::Sha1::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const SIDECAR: &str = r#"<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/"
    exif:DateTimeOriginal="2015-06-07T08:09:10+02:00"/>
 </rdf:RDF>
</x:xmpmeta>
"#;

#[tokio::test(flavor = "multi_thread")]
async fn immich_cli_uploads_a_folder() {
    let cli = install_cli();
    let db = TestDb::new().await;
    db.migrate();
    let server = Server::start(&db).await;

    // The library: four unique photos, a byte-identical copy in a subfolder,
    // an XMP sidecar, and a file the client must not pick up.
    let lib = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let gps = testdata::read("jpg/gps/DSCN0010.jpg");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("gps.jpg", gps.clone()),
        ("copies/gps-copy.jpg", gps.clone()),
        (
            "landscape_6.jpg",
            without_metadata(&testdata::read("jpg/orientation/landscape_6.jpg")),
        ),
        ("landscape_6.xmp", SIDECAR.as_bytes().to_vec()),
        (
            "Canon_40D.jpg",
            testdata::read("jpg/Canon_40D.jpg"),
        ),
        ("scan.jpg", without_metadata(&gps)),
        ("notes.txt", b"not a photo".to_vec()),
    ];
    for (name, bytes) in &files {
        let path = lib.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
    }
    // The scan's only date is its file time.
    let scanned = SystemTime::UNIX_EPOCH + Duration::from_secs(1_262_401_445); // 2010-01-02T03:04:05Z
    std::fs::File::options()
        .write(true)
        .open(lib.path().join("scan.jpg"))
        .unwrap()
        .set_modified(scanned)
        .unwrap();
    let lib_dir = lib.path().to_string_lossy().into_owned();
    let path_of = |name: &str| lib.path().join(name).to_string_lossy().into_owned();

    // Login: discovery through /.well-known/immich, then users/me and api-keys/me.
    let login = immich(&cli, home.path(), ["login", &server.base, &server.key]).await;
    let out = text(&login);
    println!("$ immich login {} KEY\n{out}", server.base);
    assert!(login.status.success(), "{out}");
    assert!(
        out.contains(&format!("Discovered API at {}/api", server.base)),
        "{out}"
    );
    let port = server.base.rsplit(':').next().unwrap();
    assert!(out.contains(&format!("Logged in as owner-{port}")), "{out}");

    // First run: everything is new; the copy is answered as a duplicate of
    // the original when it arrives.
    let upload = |extra: &'static [&'static str]| {
        let mut args = vec!["upload", "--recursive", "--json-output", "--no-progress"];
        args.extend(extra);
        args.push(&lib_dir);
        immich(&cli, home.path(), args)
    };
    let first = upload(&["--concurrency", "4"]).await;
    let out = text(&first);
    println!("$ immich upload --recursive --json-output ...\n{out}");
    assert!(first.status.success(), "{out}");
    assert!(out.contains("Found 5 new files and 0 duplicates"), "{out}");
    assert!(out.contains("Successfully uploaded 4 new assets"), "{out}");
    assert!(out.contains("Skipped 1 duplicate asset"), "{out}");
    assert!(!out.contains("Failed"), "{out}");
    let report = json_output(&first);
    let mut new_files: Vec<String> = report["newFiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    new_files.sort();
    let mut want: Vec<String> = [
        "Canon_40D.jpg",
        "copies/gps-copy.jpg",
        "gps.jpg",
        "landscape_6.jpg",
        "scan.jpg",
    ]
    .iter()
    .map(|n| path_of(n))
    .collect();
    want.sort();
    assert_eq!(new_files, want, "notes.txt and the sidecar are not assets");
    assert_eq!(report["duplicates"], json!([]));
    let id_of = |name: &str| -> String {
        report["newAssets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["filepath"] == path_of(name).as_str())
            .unwrap_or_else(|| panic!("{name} not in newAssets: {report}"))["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        id_of("gps.jpg"),
        id_of("copies/gps-copy.jpg"),
        "the copy is the same asset"
    );
    let unique = ["gps.jpg", "landscape_6.jpg", "Canon_40D.jpg", "scan.jpg"];
    let mut ids: Vec<String> = unique.iter().map(|n| id_of(n)).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "{report}");

    // The host: each unique photo exactly once, with its SHA-1, processed by
    // every stage of the pipeline.
    let mut conn = db.conn().await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM assets")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, 4);
    let jobs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM river_job WHERE kind = 'process_asset'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(jobs, 4, "one job per unique photo");
    for name in unique {
        let asset = server.wait_done(&id_of(name)).await;
        assert_eq!(asset["status"], "ready", "{name}: {asset}");
        let bytes = std::fs::read(lib.path().join(name)).unwrap();
        assert_eq!(asset["sha1"], sha1_hex(&bytes).as_str(), "{name}");
        // The copy and the original race; the asset keeps the first one's name.
        let stored = asset["file_name"].as_str().unwrap();
        assert!(
            stored == name || (name == "gps.jpg" && stored == "gps-copy.jpg"),
            "{name} stored as {stored}"
        );
        let stages: Vec<(&str, &str)> = asset["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["stage"].as_str().unwrap(), s["outcome"].as_str().unwrap()))
            .collect();
        assert_eq!(
            stages,
            [("validate", "ok"), ("metadata", "ok"), ("places", "ok"), ("thumbnail", "ok")],
            "{name}"
        );
        assert!(
            !asset["renditions"].as_array().unwrap().is_empty(),
            "{name}: {asset}"
        );
        assert!(asset["file_created_at"].is_string(), "{name}: {asset}");
    }

    // Dates: the camera's EXIF wins; else the sidecar's; else the file time.
    let gps_asset = server.wait_done(&id_of("gps.jpg")).await;
    assert_eq!(gps_asset["taken_at_source"], "metadata", "{gps_asset}");
    assert_eq!(gps_asset["sidecar"], Value::Null);
    let landscape = server.wait_done(&id_of("landscape_6.jpg")).await;
    assert_eq!(landscape["taken_at_source"], "sidecar", "{landscape}");
    assert_eq!(landscape["taken_at"], "2015-06-07T08:09:10");
    assert_eq!(landscape["taken_at_offset"], "+02:00");
    assert_eq!(landscape["sidecar"]["file_name"], "landscape_6.xmp");
    assert_eq!(landscape["sidecar"]["xmp"], SIDECAR);
    let (code, raw) = {
        let r = server
            .client()
            .get(format!(
                "{}/api/v1/assets/{}/sidecar",
                server.base,
                id_of("landscape_6.jpg")
            ))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap())
    };
    assert_eq!((code, &raw[..]), (200, SIDECAR.as_bytes()));
    let scan = server.wait_done(&id_of("scan.jpg")).await;
    assert_eq!(scan["taken_at_source"], "file_time", "{scan}");
    assert_eq!(scan["taken_at"], "2010-01-02T03:04:05");
    assert_eq!(scan["file_created_at"], "2010-01-02T03:04:05Z");

    // Second run: nothing new, every file named as a duplicate of its asset.
    let second = upload(&[]).await;
    let out = text(&second);
    println!("$ immich upload --recursive --json-output ... (again)\n{out}");
    assert!(out.contains("Found 0 new files and 5 duplicates"), "{out}");
    assert!(
        out.contains("All assets were already uploaded, nothing to do."),
        "{out}"
    );
    let again = json_output(&second);
    assert_eq!(again["newFiles"], json!([]), "{again}");
    assert_eq!(again["newAssets"], json!([]), "{again}");
    let duplicates = again["duplicates"].as_array().unwrap();
    assert_eq!(duplicates.len(), 5, "{again}");
    for d in duplicates {
        let path = d["filepath"].as_str().unwrap();
        let name = path.strip_prefix(&format!("{lib_dir}/")).unwrap();
        assert_eq!(d["id"].as_str().unwrap(), id_of(name), "{d}");
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM assets")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, 4, "the second run stored nothing");

    let info = immich(&cli, home.path(), ["server-info"]).await;
    let out = text(&info);
    println!("$ immich server-info\n{out}");
    assert!(info.status.success(), "{out}");
    assert!(out.contains("Total: 4"), "{out}");
}

/// A client of the Immich routes, with the key in `x-api-key` as Immich sends it.
fn immich_client(key: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = key {
        headers.insert("x-api-key", key.parse().unwrap());
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

fn asset_form(bytes: Vec<u8>, fields: &[(&str, &str)]) -> Form {
    let mut form = Form::new();
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    form.part("assetData", Part::bytes(bytes).file_name("gps.jpg"))
}

#[tokio::test(flavor = "multi_thread")]
async fn immich_routes_check_what_they_are_sent() {
    let db = TestDb::new().await;
    db.migrate();
    let server = Server::start(&db).await;
    let key = server.key.clone();
    let client = immich_client(Some(&key));
    let url = |p: &str| format!("{}{p}", server.base);
    let jpeg = testdata::read("jpg/gps/DSCN0010.jpg");
    let sha1 = sha1::Sha1::digest(&jpeg);
    let hex = sha1_hex(&jpeg);
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, sha1);

    // Discovery and server info need no key; who-am-I does.
    let anonymous = immich_client(None);
    for path in [
        "/.well-known/immich",
        "/api/server/media-types",
        "/api/server/version",
        "/api/server/ping",
    ] {
        let r = anonymous.get(url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
    }
    for path in [
        "/api/users/me",
        "/api/api-keys/me",
        "/api/assets/statistics",
    ] {
        assert_eq!(
            anonymous.get(url(path)).send().await.unwrap().status(),
            401,
            "{path}"
        );
        let bad = immich_client(Some("lum_revoked"));
        assert_eq!(
            bad.get(url(path)).send().await.unwrap().status(),
            401,
            "{path}"
        );
    }
    let get_json = |c: &reqwest::Client, path: &str| {
        let r = c.get(url(path)).send();
        async move { r.await.unwrap().json::<Value>().await.unwrap() }
    };
    let me = get_json(&client, "/api/api-keys/me").await;
    assert_eq!(me["permissions"], json!(["all"]));
    let types = get_json(&anonymous, "/api/server/media-types").await;
    assert!(
        types["image"].as_array().unwrap().contains(&json!(".jpg")),
        "{types}"
    );

    // Checks and uploads that are wrong store nothing and say why.
    let check = |body: Value| {
        let client = client.clone();
        let url = url("/api/assets/bulk-upload-check");
        async move {
            let r = client.post(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (code, body) = check(json!({"assets": [{"id": "a", "checksum": "xyz"}]})).await;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (400, Some("bad_checksum")),
        "{body}"
    );
    let too_many: Vec<Value> = (0..10_001)
        .map(|i| json!({"id": i.to_string(), "checksum": hex}))
        .collect();
    let (code, body) = check(json!({ "assets": too_many })).await;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (400, Some("too_many_assets"))
    );
    let post = |form: Form, checksum: Option<&str>| {
        let mut r = client.post(url("/api/assets")).multipart(form);
        if let Some(c) = checksum {
            r = r.header("x-immich-checksum", c);
        }
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    for (fields, checksum, code) in [
        (vec![("fileSize", "12")], None, "size_mismatch"),
        (vec![("fileCreatedAt", "yesterday")], None, "bad_field"),
        (vec![("visibility", "public")], None, "bad_field"),
        (vec![("isFavorite", "maybe")], None, "bad_field"),
        (
            vec![],
            Some("0000000000000000000000000000000000000000"),
            "checksum_mismatch",
        ),
    ] {
        let (status, body) = post(asset_form(jpeg.clone(), &fields), checksum).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{fields:?}: {body}"
        );
    }
    let (status, body) = post(Form::new().text("fileSize", "1"), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("missing_file"))
    );
    let mut conn = db.conn().await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM assets")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, 0, "refused uploads store nothing");

    // A good upload, checked by the client's checksum in base64; its flags are kept.
    let size = jpeg.len().to_string();
    let fields = [
        ("fileCreatedAt", "2020-02-03T04:05:06.000Z"),
        ("fileModifiedAt", "2020-02-04T04:05:06.000Z"),
        ("fileSize", size.as_str()),
        ("isFavorite", "true"),
        ("visibility", "archive"),
        ("deviceAssetId", "ignored"),
    ];
    let (status, created) = post(asset_form(jpeg.clone(), &fields), Some(&b64)).await;
    assert_eq!(
        (status, created["status"].as_str()),
        (201, Some("created")),
        "{created}"
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let asset = server.wait_done(&id).await;
    assert_eq!(asset["is_favorite"], true);
    assert_eq!(asset["visibility"], "archive");
    assert_eq!(asset["file_modified_at"], "2020-02-04T04:05:06Z");
    let (status, dup) = post(asset_form(jpeg.clone(), &[]), Some(&hex)).await;
    assert_eq!(
        (status, dup["status"].as_str(), dup["id"].as_str()),
        (200, Some("duplicate"), Some(id.as_str()))
    );

    // Duplicates are per user, in hex or base64; the same bytes from the
    // native API are found too.
    let (code, body) = check(json!({"assets": [
        {"id": "hex", "checksum": hex.to_uppercase()},
        {"id": "b64", "checksum": b64},
        {"id": "new", "checksum": "0000000000000000000000000000000000000001"},
    ]}))
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["results"],
        json!([
            {"id": "hex", "action": "reject", "reason": "duplicate", "assetId": id, "isTrashed": false},
            {"id": "b64", "action": "reject", "reason": "duplicate", "assetId": id, "isTrashed": false},
            {"id": "new", "action": "accept"},
        ])
    );
    let bob = immich_client(Some(&db.user("bob")));
    let r: Value = bob
        .post(url("/api/assets/bulk-upload-check"))
        .json(&json!({"assets": [{"id": "x", "checksum": hex}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        r["results"][0]["action"], "accept",
        "another user's photos are not duplicates"
    );
    let landscape = testdata::read("jpg/orientation/landscape_6.jpg");
    let (code, _) = server
        .upload("landscape_6.jpg", landscape.clone(), "image/jpeg")
        .await;
    assert_eq!(code, 201);
    let (_, body) = check(json!({"assets": [{"id": "l", "checksum": sha1_hex(&landscape)}]})).await;
    assert_eq!(body["results"][0]["action"], "reject", "{body}");
    // Another user cannot read the sidecar route of this user's asset.
    let r = bob
        .get(url(&format!("/api/v1/assets/{id}/sidecar")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn sha1_of_older_assets_is_filled_in_at_start() {
    let db = TestDb::new().await;
    db.migrate();
    let mut server = Server::start(&db).await;
    let jpeg = testdata::read("jpg/gps/DSCN0010.jpg");
    let (code, up) = server.upload("gps.jpg", jpeg.clone(), "image/jpeg").await;
    assert_eq!(code, 201, "{up}");
    let id = up["asset_id"].as_str().unwrap().to_owned();
    server.wait_done(&id).await;
    // As if stored before migration 004 recorded SHA-1.
    let mut conn = db.conn().await;
    sqlx::query("UPDATE assets SET sha1 = NULL")
        .execute(&mut conn)
        .await
        .unwrap();
    server.restart().await;
    let want = sha1_hex(&jpeg);
    let last = std::cell::RefCell::new(serde_json::Value::Null);
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(100),
        async || {
            let (_, asset) = server.get(&format!("/api/v1/assets/{id}")).await;
            let filled = asset["sha1"] == want.as_str();
            *last.borrow_mut() = asset;
            filled.then_some(())
        },
        || format!("sha1 filled in: {}\n{}", last.borrow(), server.log_text()),
    )
    .await;
}

/// Issue 15 §5: a native upload does not hash SHA-1 on its hot path; its
/// worker records it, and the bulk check finds a photo whose worker has not
/// run yet by hashing it first.
#[tokio::test(flavor = "multi_thread")]
async fn native_uploads_get_sha1_later_and_the_check_still_finds_them() {
    let db = TestDb::new().await;
    db.migrate();
    let dir = tempfile::tempdir().unwrap();
    // One worker busy for 3 s per asset: the second upload waits in the queue.
    let pipeline = slow_pipeline(dir.path(), 3000);
    let server = Server::start_with(&db, &pipeline, &[("LUMILIO_PROCESS_ASSET_WORKERS", "1")]).await;
    let first = testdata::read("jpg/gps/DSCN0010.jpg");
    let waiting = testdata::read("jpg/Canon_40D.jpg");
    let mut ids = Vec::new();
    for (name, bytes) in [("first.jpg", &first), ("waiting.jpg", &waiting)] {
        let (code, up) = server.upload(name, bytes.clone(), "image/jpeg").await;
        assert_eq!(code, 201, "{up}");
        ids.push(up["asset_id"].as_str().unwrap().to_owned());
    }
    let mut conn = db.conn().await;
    let unhashed = "SELECT count(*) FROM assets WHERE file_name = 'waiting.jpg' AND sha1 IS NULL";
    // The fault is in place: the queued upload has no SHA-1 yet.
    assert_eq!(scalar(&mut conn, unhashed).await, 1, "the native route hashed SHA-1 inline");
    let r: Value = immich_client(Some(&server.key))
        .post(format!("{}/api/assets/bulk-upload-check", server.base))
        .json(&json!({"assets": [{"id": "w", "checksum": sha1_hex(&waiting)}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["results"][0]["action"], "reject", "{r}");
    assert_eq!(scalar(&mut conn, unhashed).await, 0, "the check recorded it");
    // And the worker records it for the ones nobody asked about.
    let done = server.wait_done(&ids[0]).await;
    assert_eq!(done["sha1"], sha1_hex(&first).as_str(), "{done}");
}
