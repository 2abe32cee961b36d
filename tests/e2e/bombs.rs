//! Bombs within the limits, through the real `lumilio serve` and the default
//! pipeline: headers that claim just under `max_pixels` over a few KB of
//! data (PNG and JPEG), a genuine 10,000 × 10,000 JPEG, and a file larger
//! than a stage's memory limit. Each must end as documented within a bound,
//! must actually reach the decoder (not be refused by its magic bytes), and
//! the host's peak RSS is printed for the report.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Server, TestDb, repo};

/// `max_pixels` of the validate stage in the repository's pipeline.toml.
const MAX_PIXELS: u64 = 100_000_000;

/// 9,999 × 9,999: the largest square under [`MAX_PIXELS`].
const UNDER: u32 = 9_999;

/// CRC-32 (IEEE) for PNG chunks.
fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

fn png_chunk(ty: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut v = (data.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(ty);
    v.extend_from_slice(data);
    let mut crc_in = ty.to_vec();
    crc_in.extend_from_slice(data);
    v.extend_from_slice(&crc32(&crc_in).to_be_bytes());
    v
}

/// A well-formed PNG (valid chunks, CRCs, IEND) whose IHDR claims `w`×`h`
/// RGB8 over one 4 KB stored zlib block: the first rows, then the stream ends.
fn png_header_bomb(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, no interlace
    let raw = vec![0u8; 4096]; // filter byte 0 and black pixels
    let mut z = vec![0x78, 0x01, 0x01]; // zlib header; final stored block
    z.extend_from_slice(&(raw.len() as u16).to_le_bytes());
    z.extend_from_slice(&(!(raw.len() as u16)).to_le_bytes());
    z.extend_from_slice(&raw);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(png_chunk(b"IHDR", &ihdr));
    png.extend(png_chunk(b"IDAT", &z));
    png.extend(png_chunk(b"IEND", &[]));
    png
}

/// Rows of a synthetic photo-like picture for `jpeg-encoder`, made on demand
/// so a 10,000 × 10,000 image never needs a 300 MB buffer.
struct Synthetic {
    width: u16,
    height: u16,
}

impl jpeg_encoder::ImageBuffer for Synthetic {
    fn get_jpeg_color_type(&self) -> jpeg_encoder::JpegColorType {
        jpeg_encoder::JpegColorType::Ycbcr
    }
    fn width(&self) -> u16 {
        self.width
    }
    fn height(&self) -> u16 {
        self.height
    }
    fn fill_buffers(&self, y: u16, buffers: &mut [Vec<u8>; 4]) {
        let y = y as u32;
        for x in 0..self.width as u32 {
            // Gradients plus a little texture, so the entropy data is not trivial.
            let noise = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) >> 29;
            buffers[0].push(((x * 255 / self.width as u32) as u8).wrapping_add(noise as u8));
            buffers[1].push((y * 255 / self.height as u32) as u8);
            buffers[2].push(128u8.wrapping_add(((x ^ y) >> 6) as u8 & 31));
        }
    }
}

fn jpeg(width: u16, height: u16, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, quality)
        .encode_image(Synthetic { width, height })
        .expect("encode the test JPEG");
    out
}

/// A baseline JPEG whose frame header (SOF0) claims `w`×`h` over the first
/// 4 KB of a small real image's entropy data, then EOI.
fn jpeg_header_bomb(w: u16, h: u16) -> Vec<u8> {
    let mut b = jpeg(256, 256, 90);
    let sof = b.windows(2).position(|m| m == [0xFF, 0xC0]).expect("SOF0");
    b[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    b[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    let sos = b.windows(2).position(|m| m == [0xFF, 0xDA]).expect("SOS");
    let data = sos + 2 + u16::from_be_bytes([b[sos + 2], b[sos + 3]]) as usize;
    assert!(b.len() > data + 4096 + 2, "the small image has 4 KB of data");
    b.truncate(data + 4096);
    // Never end on a lone 0xFF (the start of a marker).
    if b.last() == Some(&0xFF) {
        b.pop();
    }
    b.extend_from_slice(&[0xFF, 0xD9]);
    b
}

/// Resets the peak RSS of `pid` (`VmHWM`) to its current RSS.
fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// `VmHWM` or `VmRSS` of `pid`, in MiB.
fn proc_mib(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = text.lines().find(|l| l.starts_with(key)).unwrap();
    let kib: u64 = line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib >> 10
}

/// One stage's result in an asset view.
fn stage<'a>(view: &'a Value, name: &str) -> &'a Value {
    view["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["stage"] == name))
        .unwrap_or_else(|| panic!("no result for stage {name}: {view}"))
}

/// What one bomb did: its end state, its time and the host's peak RSS.
struct Run {
    view: Value,
    secs: f64,
    peak_mib: u64,
    attempts: i16,
}

async fn run(server: &Server, db: &TestDb, name: &str, bytes: Vec<u8>, ty: &str, within: Duration) -> Run {
    let pid = server.pid();
    let size = bytes.len();
    assert!(reset_peak(pid), "cannot reset the peak RSS of {pid}");
    let started = Instant::now();
    let (code, up) = server.upload(name, bytes, ty).await;
    assert_eq!(code, 201, "{name}: {up}");
    let id = up["asset_id"].as_str().unwrap().to_owned();
    let view = server.wait_done_within(&server.client(), &id, within).await;
    let secs = started.elapsed().as_secs_f64();
    let peak_mib = proc_mib(pid, "VmHWM:");
    let mut conn = db.conn().await;
    let attempts: i16 = sqlx::query_scalar(
        "SELECT j.attempt FROM assets a JOIN river_job j ON j.id = a.job_id WHERE a.id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let stages: Vec<String> = view["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{}={}({}ms)", s["stage"].as_str().unwrap_or("?"), s["outcome"].as_str().unwrap_or("?"), s["duration_ms"]))
        .collect();
    println!(
        "bomb {name}: {size} bytes -> {} in {secs:.1} s, attempts {attempts}, host peak RSS {peak_mib} MiB; stages {}; reason {}",
        view["status"],
        stages.join(" "),
        view["reason"]
    );
    Run {
        view,
        secs,
        peak_mib,
        attempts,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bombs_within_the_limits_end_as_documented() {
    let db = TestDb::new().await;
    db.migrate();
    let server = Server::start(&db).await;
    let pid = server.pid();
    println!("host RSS at start: {} MiB", proc_mib(pid, "VmRSS:"));
    assert!((UNDER as u64 * UNDER as u64) < MAX_PIXELS);

    // 1. PNG header bomb: the decoder starts, then runs out of data.
    let png = png_header_bomb(UNDER, UNDER);
    assert!(png.len() < 8192, "a few KB: {}", png.len());
    let r = run(&server, &db, "png-bomb.png", png, "image/png", Duration::from_secs(90)).await;
    assert_eq!(r.view["status"], "rejected", "{}", r.view);
    let reason = r.view["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("thumbnail: the image could not be decoded"), "{reason}");
    assert_eq!(stage(&r.view, "validate")["outcome"], "ok", "validate let it through: {}", r.view);
    assert_eq!(stage(&r.view, "thumbnail")["outcome"], "rejected");
    assert_eq!(r.attempts, 1, "bad input is not retried");
    assert!(r.secs < 30.0, "{:.1} s", r.secs);
    assert!(r.peak_mib < 1536, "host peak RSS {} MiB", r.peak_mib);

    // 2. JPEG header bomb: decoded in full (missing data reads as zeros) at 1/8 scale.
    let jpg = jpeg_header_bomb(UNDER as u16, UNDER as u16);
    assert!(jpg.len() < 8192, "a few KB: {}", jpg.len());
    let r = run(&server, &db, "jpeg-bomb.jpg", jpg, "image/jpeg", Duration::from_secs(90)).await;
    assert_eq!(r.view["status"], "ready", "{}", r.view);
    assert_eq!(stage(&r.view, "validate")["outcome"], "ok");
    assert_eq!(stage(&r.view, "thumbnail")["outcome"], "ok", "the decoder ran: {}", r.view);
    assert!(r.view.to_string().contains("\"thumbnail_source_scale\""), "{}", r.view);
    assert!(r.view.to_string().contains("9999"), "validate read 9999x9999: {}", r.view);
    assert_eq!(r.attempts, 1);
    assert!(r.secs < 30.0, "one attempt, inside thumbnail's 30 s timeout: {:.1} s", r.secs);
    assert!(r.peak_mib < 1536, "host peak RSS {} MiB", r.peak_mib);

    // 3. A genuine 10,000 x 10,000 JPEG: exactly max_pixels, accepted.
    let t = Instant::now();
    let big = jpeg(10_000, 10_000, 85);
    println!("encoded a 10000x10000 JPEG of {} bytes in {:.1} s", big.len(), t.elapsed().as_secs_f64());
    let r = run(&server, &db, "big.jpg", big, "image/jpeg", Duration::from_secs(90)).await;
    assert_eq!(r.view["status"], "ready", "{}", r.view);
    assert_eq!(stage(&r.view, "thumbnail")["outcome"], "ok");
    assert!(r.view.to_string().contains("10000"), "{}", r.view);
    assert_eq!(r.view["renditions"].as_array().map(|v| v.len()), Some(4), "{}", r.view);
    assert_eq!(r.attempts, 1);
    assert!(r.secs < 45.0, "{:.1} s", r.secs);
    assert!(r.peak_mib < 1536, "host peak RSS {} MiB", r.peak_mib);

    let (code, _) = server.get("/health").await;
    assert_eq!(code, 200, "the host is still up");
    drop(server);

    // 4. A valid JPEG padded past a stage's memory limit (under max_bytes,
    // 200 MB): the host refuses it before copying it into any stage. Every
    // stage of the default pipeline holds max_bytes, so places gets 64 MB here.
    let default = std::fs::read_to_string(repo().join("pipeline.toml")).unwrap();
    let places = "timeout_ms = 2000\n# ";
    assert!(default.contains(places), "places' block in pipeline.toml changed");
    let small = default
        .replace("\"target/", &format!("\"{}/target/", repo().display()))
        .replacen("memory_limit_mb = 256\ncontent_types = [\"image/*\"]\n\n[[stage]]\nname = \"thumbnail\"",
                  "memory_limit_mb = 64\ncontent_types = [\"image/*\"]\n\n[[stage]]\nname = \"thumbnail\"", 1);
    assert!(small.contains("memory_limit_mb = 64"), "places' limit set to 64 MB:\n{small}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.toml"), small).unwrap();
    let server = Server::start_with(&db, &dir.path().join("pipeline.toml"), &[]).await;
    let mut fat = jpeg(640, 480, 90);
    fat.extend(std::iter::repeat_n(0x5Au8, 70 << 20));
    let r = run(&server, &db, "fat.jpg", fat, "image/jpeg", Duration::from_secs(90)).await;
    assert_eq!(r.view["status"], "rejected", "{}", r.view);
    let reason = r.view["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("does not fit in stage \"places\"'s memory limit of 64 MiB")
            && reason.contains("raise memory_limit_mb"),
        "{reason}"
    );
    assert_eq!(r.attempts, 1);
    assert!(r.secs < 30.0, "{:.1} s", r.secs);
    assert!(r.peak_mib < 1536, "host peak RSS {} MiB", r.peak_mib);
    let (code, _) = server.get("/health").await;
    assert_eq!(code, 200, "the host is still up");
}
