//! Issue 12's benchmark: one user's library at 10,000 assets, through the API
//! and in a real browser.
//!
//! * 12a: the list API as the web app calls it (`GET /api/v1/assets?order=taken&limit=200`):
//!   p95 of the first page, of every cursor page to the end, and of each
//!   filter, against the same queries made in-process through `lumilio::db`
//!   (the database's share, the floor under the API). Target: p95 < 50 ms.
//! * 12b: the first library screen in Debian's Chromium with a fresh profile
//!   (cold cache) each round: from navigation start to the page's
//!   `lumilio:first-screen` mark, set when every tile in view shows its
//!   thumbnail. Target < 1 s.
//! * 12c: the page's weight (HTML, JS and CSS as loaded) against the 200 KB budget.
//! * 12d: scrolling the whole library one screen per frame: elements in the
//!   timeline at the top and at the most (the DOM must not grow with the
//!   library), and the p95 frame interval.
//!
//! Seeding: the real service processes the sample JPEGs of `tests/data/photos/jpg`
//! through the repository's pipeline. Their rows and renditions are then
//! cloned in SQL (the rendition files as hard links) to 10,000 assets with
//! distinct hashes and dates spread over ten years; 1 in 250 is `failed` and
//! 1 in 400 `processing`, without thumbnails, so badges and placeholders
//! are on the page too. `BENCH_LIBRARY_ASSETS=N` changes the size.


use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use chrono::{DateTime, NaiveDate, Utc};
use lumilio::db::assets::ListQuery;
use lumilio::storage::Storage;
use lumilio_bench::service::{BenchDb, Server, admin_and_host};
use lumilio_bench::library::{self, PAGE, base_query, year};
use lumilio_bench::{Row, Status, Summary, ms, percentiles, repo};
use lumilio_browser::Browser;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;


#[tokio::main]
async fn main() -> Result<()> {
    let (admin, bin) = admin_and_host()?;
    let n: usize = lumilio_bench::env_or("BENCH_LIBRARY_ASSETS", 10_000);
    let work = lumilio_bench::scratch("bench-library")?;
    println!("issue 12 benchmarks: a library of {n} assets (scratch {})", work.path().display());

    let db = BenchDb::create(&admin).await?;
    db.migrate(&bin)?;
    let key = db.api_key(&bin).context("bench-library needs a user and its API key")?;
    let server = Server::start(&bin, &db.url, work.path(), Some(&key), &[]).await?;
    let pool = PgPool::connect(&db.url).await?;
    let mut summary = Summary::default();
    let result = async {
        let owner: Uuid = sqlx::query_scalar("SELECT id FROM users WHERE name = 'bench'")
            .fetch_one(&pool)
            .await?;
        let storage = Storage::open(work.path().join("staging"), work.path().join("storage")).await?;
        let t = Instant::now();
        seed(&server, &pool, &storage, owner, n).await?;
        println!("  seeded {n} assets in {:.1} s", t.elapsed().as_secs_f64());
        sqlx::query("ANALYZE").execute(&pool).await?;
        list_api(&server, &pool, owner, &mut summary).await?;
        browser(&server, &key, n, &mut summary).await
    }
    .await;
    if result.is_err() {
        eprintln!("--- server log (tail) ---\n{}", server.log_tail(40));
    }
    drop(server);
    pool.close().await;
    drop(db);
    result?;
    summary.finish()
}

/// Uploads the sample JPEGs, waits for the pipeline, then clones them to `n` assets.
async fn seed(server: &Server, pool: &PgPool, storage: &Storage, owner: Uuid, n: usize) -> Result<()> {
    let samples = lumilio_bench::jpegs_in(&lumilio_bench::testdata()?.join("jpg"))?;
    let mut ids = Vec::new();
    for path in &samples {
        let part = reqwest::multipart::Part::bytes(std::fs::read(path)?)
            .file_name(path.file_name().unwrap_or_default().to_string_lossy().into_owned())
            .mime_str("image/jpeg")?;
        let r = server
            .client
            .post(format!("{}/api/v1/assets", server.base))
            .multipart(reqwest::multipart::Form::new().part("file", part))
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        ensure!(status.is_success(), "uploading {}: {status} {body}", path.display());
        ids.push(body["asset_id"].as_str().context("no asset_id")?.to_owned());
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    for id in &ids {
        while server.get(&format!("/api/v1/assets/{id}")).await?["status"] == "processing" {
            ensure!(Instant::now() < deadline, "asset {id} still processing after 5 minutes");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let templates: Vec<(Uuid, String, Vec<String>)> = sqlx::query_as(
        "SELECT a.id, a.content_hash, array_agg(r.name ORDER BY r.name)
         FROM assets a JOIN renditions r ON r.asset_id = a.id
         WHERE a.owner_id = $1 AND a.status = 'ready' GROUP BY a.id ORDER BY a.file_name",
    )
    .bind(owner)
    .fetch_all(pool)
    .await?;
    ensure!(!templates.is_empty(), "no sample photo got renditions");
    println!("  {} sample photos processed; cloning them to {n} assets", templates.len());

    let clones = n.saturating_sub(ids.len());
    let start = NaiveDate::from_ymd_opt(2016, 1, 1).unwrap().and_hms_opt(9, 0, 0).unwrap();
    let (mut id, mut hash, mut tpl, mut status, mut reason, mut taken, mut name) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for g in 1..=clones {
        id.push(Uuid::new_v4());
        hash.push(format!("be9c{g:060x}"));
        tpl.push((g % templates.len()) as i32 + 1);
        let (s, r) = if g % 250 == 0 {
            ("failed", Some("thumbnail: the stage failed (seeded by bench-library)"))
        } else if g % 400 == 0 {
            ("processing", None)
        } else {
            ("ready", None)
        };
        status.push(s);
        reason.push(r);
        // Photos come in days: 1 to 15 a day on every third day or so, over
        // about ten years for 10,000 photos, minutes apart within a day.
        let (day, nth) = (g as i64 / 8, g as i64 % 8);
        let burst = 1 + (day * 7919) % 15;
        taken.push(
            start
                + chrono::Duration::days(day * 3 + (day * 31) % 3)
                + chrono::Duration::minutes((nth % burst) * 11 + (day * 37) % 600),
        );
        name.push(format!("IMG_{g:06}.jpg"));
    }
    let tpl_ids: Vec<Uuid> = templates.iter().map(|t| t.0).collect();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO assets (id, owner_id, file_name, content_type, size, content_hash, status, reason,
                             width, height, taken_at, taken_at_offset, taken_at_source, make, model, lens,
                             exposure_time, f_number, iso, focal_length, gps_latitude, gps_longitude,
                             gps_altitude, orientation, facts, created_at, updated_at)
         SELECT s.id, t.owner_id, s.name, t.content_type, t.size, s.hash, s.status, s.reason,
                t.width, t.height, s.taken, t.taken_at_offset, 'metadata', t.make, t.model, t.lens,
                t.exposure_time, t.f_number, t.iso, t.focal_length, t.gps_latitude, t.gps_longitude,
                t.gps_altitude, t.orientation, t.facts, now() - make_interval(secs => s.ord::float8), now()
         FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::text[], $6::timestamp[], $7::text[])
              WITH ORDINALITY AS s(id, hash, tpl, status, reason, taken, name, ord)
         JOIN assets t ON t.id = ($8::uuid[])[s.tpl]",
    )
    .bind(&id)
    .bind(&hash)
    .bind(&tpl)
    .bind(&status)
    .bind(&reason)
    .bind(&taken)
    .bind(&name)
    .bind(&tpl_ids)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO renditions (asset_id, name, content_type, width, height, size)
         SELECT s.id, r.name, r.content_type, r.width, r.height, r.size
         FROM unnest($1::uuid[], $2::int[], $3::text[]) AS s(id, tpl, status)
         JOIN renditions r ON r.asset_id = ($4::uuid[])[s.tpl]
         WHERE s.status = 'ready'",
    )
    .bind(&id)
    .bind(&tpl)
    .bind(&status)
    .bind(&tpl_ids)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    // The files: hard links to the templates' renditions.
    for i in 0..clones {
        if status[i] != "ready" {
            continue;
        }
        let (_, tpl_hash, names) = &templates[tpl[i] as usize - 1];
        for rendition in names {
            let from = storage.rendition_path(tpl_hash, rendition)?;
            let to = storage.rendition_path(&hash[i], rendition)?;
            if let Some(dir) = to.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::hard_link(&from, &to)
                .with_context(|| format!("linking {} to {}", from.display(), to.display()))?;
        }
    }
    Ok(())
}

/// One list request: the API's query string and the same filter for `lumilio::db`.
struct Case {
    name: &'static str,
    query: &'static str,
    filter: fn(&mut ListQuery),
}

const FILTERS: &[Case] = &[
    Case { name: "one year (taken_from/taken_to)", query: "&taken_from=2019-01-01T00:00:00&taken_to=2020-01-01T00:00:00",
           filter: |q| { q.taken_from = Some(year(2019)); q.taken_to = Some(year(2020)); } },
    Case { name: "camera make=canon", query: "&make=canon", filter: |q| q.make = Some("canon".into()) },
    Case { name: "camera model=40d", query: "&model=40d", filter: |q| q.model = Some("40d".into()) },
    Case { name: "status=failed", query: "&status=failed", filter: |q| q.status = Some("failed".into()) },
    Case { name: "has_location=true", query: "&has_location=true", filter: |q| q.has_location = Some(true) },
];

/// The API's page (timed, body read and parsed) and its next cursor.
async fn api_page(server: &Server, query: &str, cursor: Option<&str>) -> Result<(Duration, usize, Option<String>)> {
    let mut path = format!("/api/v1/assets?order=taken&limit={PAGE}{query}");
    if let Some(c) = cursor {
        path += &format!("&cursor={c}");
    }
    let t = Instant::now();
    let page = server.get(&path).await?;
    let took = t.elapsed();
    let count = page["assets"].as_array().map_or(0, Vec::len);
    Ok((took, count, page["next_cursor"].as_str().map(str::to_owned)))
}

/// The same page in-process: the list query and the rendition names, as the handler runs them.
async fn db_page(pool: &PgPool, owner: Uuid, q: &ListQuery) -> Result<(Duration, Option<(DateTime<Utc>, Uuid)>)> {
    let (took, rows) = library::db_page(pool, owner, q).await?;
    let next = (rows.len() as i64 > PAGE).then(|| {
        let last = &rows[PAGE as usize - 1];
        (last.taken_at.map_or(last.created_at, |t| t.and_utc()), last.id)
    });
    Ok((took, next))
}

async fn list_api(server: &Server, pool: &PgPool, owner: Uuid, summary: &mut Summary) -> Result<()> {
    let rounds = lumilio_bench::rounds(30, 10);
    // Warm both paths (connections, plans, page cache) before timing.
    api_page(server, "", None).await?;
    db_page(pool, owner, &base_query()).await?;

    let (mut api_first, mut db_first) = (vec![], vec![]);
    for _ in 0..rounds {
        api_first.push(api_page(server, "", None).await?.0);
        db_first.push(db_page(pool, owner, &base_query()).await?.0);
    }
    push_list_row(summary, "12a list API p95, first page (order=taken, 200)", api_first, db_first);

    let (mut api_walk, mut db_walk, mut pages, mut seen) = (vec![], vec![], 0, 0);
    for _ in 0..lumilio_bench::rounds(3, 1) {
        let (mut cursor, mut after) = (None, None);
        loop {
            let (t, count, next) = api_page(server, "", cursor.as_deref()).await?;
            api_walk.push(t);
            let mut q = base_query();
            q.after = after;
            let (td, next_db) = db_page(pool, owner, &q).await?;
            db_walk.push(td);
            pages += 1;
            seen += count;
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
            after = next_db;
        }
    }
    println!("  walked {pages} pages, {seen} assets, to the end of the cursor chain");
    push_list_row(summary, "12a list API p95, every cursor page to the end", api_walk, db_walk);

    let (mut api_f, mut db_f) = (vec![], vec![]);
    for case in FILTERS {
        let (mut a, mut d) = (vec![], vec![]);
        let mut found = 0;
        for _ in 0..rounds {
            let (t, count, _) = api_page(server, case.query, None).await?;
            found = count;
            a.push(t);
            let mut q = base_query();
            (case.filter)(&mut q);
            d.push(db_page(pool, owner, &q).await?.0);
        }
        let ((a50, a95), (d50, d95)) = (percentiles(a.clone()), percentiles(d.clone()));
        println!("  filter {:<32} {found:>3} on the first page; API p50 {a50:.1} ms p95 {a95:.1} ms; db p50 {d50:.1} ms p95 {d95:.1} ms", case.name);
        api_f.extend(a);
        db_f.extend(d);
    }
    push_list_row(summary, "12a list API p95, each filter (first page)", api_f, db_f);
    Ok(())
}

fn push_list_row(summary: &mut Summary, measure: &str, api: Vec<Duration>, db: Vec<Duration>) {
    let ((a50, a95), (d50, d95)) = (percentiles(api), percentiles(db));
    println!("  {measure}: API p50 {a50:.1} ms, p95 {a95:.1} ms; lumilio::db in-process p50 {d50:.1} ms, p95 {d95:.1} ms");
    summary.push(Row {
        measure: measure.into(),
        ours: format!("{a95:.1} ms"),
        peer: format!("{d95:.1} ms (db in-process)"),
        ratio: format!("{:.2}x", a95 / d95.max(0.001)),
        target: "p95 < 50 ms".into(),
        status: Status::from(a95 < 50.0),
    });
}

/// The page's first-screen mark, in ms since navigation start, once it is set.
const FIRST_SCREEN: &str = "const m = performance.getEntriesByName('lumilio:first-screen'); return m.length ? m[0].startTime : 0";

async fn browser(server: &Server, key: &str, n: usize, summary: &mut Summary) -> Result<()> {
    let mut times = vec![];
    let mut weight = 0.0;
    for round in 0..lumilio_bench::rounds(5, 3) {
        let b = Browser::start("bench-library", 1280, 900).await;
        // A same-origin page first, to store the key, so that `/` opens on the library.
        b.goto(&format!("{}/health", server.base)).await;
        b.js(&format!("localStorage.setItem('lumilio.apiKey', {key:?}); return true")).await;
        b.goto(&format!("{}/", server.base)).await;
        let at = b.until("the first library screen", FIRST_SCREEN).await.as_f64().unwrap_or(0.0);
        let shown = b.js("return document.querySelectorAll('.library .tile img[src]').length").await;
        println!("  round {round}: first screen at {at:.0} ms ({shown} thumbnails in view)");
        times.push(Duration::from_secs_f64(at / 1e3));
        if round == 0 {
            weight = b
                .js("const own = (e) => /\\.(js|css)$/.test(new URL(e.name).pathname);\
                     const nav = performance.getEntriesByType('navigation')[0];\
                     return performance.getEntriesByType('resource').filter(own)\
                       .reduce((s, e) => s + e.decodedBodySize, nav ? nav.decodedBodySize : 0)")
                .await
                .as_f64()
                .unwrap_or(0.0);
            b.shot("first-screen").await;
            scroll(&b, n, summary).await;
        }
        b.close().await;
    }
    let (p50, _) = percentiles(times.clone());
    let worst = times.iter().max().copied().unwrap_or_default();
    summary.push(Row {
        measure: format!("12b first library screen, cold, {n} assets (median of {})", times.len()),
        ours: format!("{p50:.0} ms (worst {:.0} ms)", ms(worst)),
        peer: "-".into(),
        ratio: format!("{:.2}x of target", p50 / 1000.0),
        target: "< 1 s".into(),
        status: Status::from(p50 < 1000.0),
    });
    let on_disk: u64 = std::fs::read_dir(repo().join("web"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "js" || x == "css"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!("  web/*.js + web/*.css on disk: {:.1} KB", on_disk as f64 / 1e3);
    summary.push(Row {
        measure: "12c page weight: HTML + JS + CSS loaded".into(),
        ours: format!("{:.1} KB", weight / 1e3),
        peer: "200 KB budget".into(),
        ratio: format!("{:.2}x", weight / 200e3),
        target: "<= 1.0x".into(),
        status: Status::from(weight > 0.0 && weight <= 200e3),
    });
    Ok(())
}

/// Scrolls the timeline to its end, one screen per frame, in the page.
async fn scroll(b: &Browser, n: usize, summary: &mut Summary) {
    b.js("const s = document.querySelector('.library .scroller'), c = s.querySelector('.canvas');\
          const st = window.__scroll = { top: c.querySelectorAll('*').length, most: 0, frames: [], done: false };\
          let last = performance.now(), still = 0;\
          const step = (now) => {\
            st.frames.push(now - last); last = now;\
            st.most = Math.max(st.most, c.querySelectorAll('*').length);\
            const before = s.scrollTop; s.scrollTop += s.clientHeight;\
            still = s.scrollTop === before ? still + 1 : 0;\
            if (still > 120) { st.done = true; st.tiles = document.querySelector('.library .count').textContent;\
              st.pages = performance.getEntriesByType('resource').map((e) => e.name).filter((n) => n.includes('/api/v1/assets?')); }\
            else requestAnimationFrame(step);\
          };\
          requestAnimationFrame(step); return true")
        .await;
    let t = Instant::now();
    b.until("the end of the library", "return window.__scroll.done").await;
    let took = t.elapsed();
    let st = b.js("return window.__scroll").await;
    let mut frames: Vec<Duration> = st["frames"]
        .as_array()
        .into_iter()
        .flatten()
        .skip(1)
        .filter_map(Value::as_f64)
        .map(|f| Duration::from_secs_f64(f / 1e3))
        .collect();
    // The final still frames only wait for the end to be certain.
    frames.truncate(frames.len().saturating_sub(120));
    let (f50, f95) = percentiles(frames.clone());
    let (top, most) = (st["top"].as_f64().unwrap_or(0.0), st["most"].as_f64().unwrap_or(0.0));
    println!(
        "  scrolled to the end in {:.1} s, {} frames: interval p50 {f50:.1} ms, p95 {f95:.1} ms; \
         timeline elements: {top} at the top, at most {most}",
        took.as_secs_f64(),
        frames.len()
    );
    b.shot("scrolled-to-end").await;
    let pages = st["pages"].as_array().map_or(0, Vec::len);
    let label = st["tiles"].as_str().unwrap_or("");
    let reached: usize = label.chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap_or(0);
    println!("  the page fetched {pages} list pages and ended showing {label:?}");
    summary.push(Row {
        measure: format!("12d timeline elements while scrolling all {n}, most vs at the top"),
        ours: format!("{most}"),
        peer: format!("{top} at the top"),
        ratio: format!("{:.2}x", most / top.max(1.0)),
        target: "<= 3x (bounded)".into(),
        status: Status::from(most <= 3.0 * top.max(1.0)),
    });
    summary.push(Row {
        measure: "12d assets reached by scrolling to the end (infinite scroll)".into(),
        ours: format!("{reached}"),
        peer: format!("{n} seeded"),
        ratio: format!("{:.2}x", reached as f64 / n as f64),
        target: "= 1.0x".into(),
        status: Status::from(reached == n),
    });
    summary.push(Row::info(
        "12d frame interval p95 while scrolling one screen per frame",
        format!("{f95:.1} ms"),
        "-",
        "-",
    ));
}
