//! The bundled web app: the files of the repository's `web/` folder, embedded
//! into the binary at build time (`include_bytes!`, so cargo rebuilds when one
//! changes) and served at `/` (the page) and `/web/{file}` (its CSS and ES
//! modules). They need no key: the page asks for one and sends it to the API.
//!
//! Every answer carries a Content-Security-Policy that allows nothing but this
//! host (plus `blob:` images, which is how the page shows renditions it fetched
//! with its key), so the page cannot load anything from elsewhere even by mistake.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// One embedded file.
struct WebFile {
    name: &'static str,
    bytes: &'static [u8],
}

macro_rules! web_files {
    ($($name:literal),* $(,)?) => {
        &[$(WebFile { name: $name, bytes: include_bytes!(concat!("../../../web/", $name)) }),*]
    };
}

/// Every file of `web/` (a test checks the folder holds no other).
static FILES: &[WebFile] = web_files![
    "index.html",
    "app.css",
    "main.js",
    "api.js",
    "events.js",
    "timeline.js",
    "upload.js",
    "viewer.js",
    "search.js",
    "status.js",
    "util.js",
    "icon.svg",
];

/// What the page may load: only this host; renditions arrive as `blob:` URLs.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
     connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

fn serve(name: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    let file = FILES
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| ApiError::not_found("file"))?;
    // The build's content, so a new binary is never served from a stale cache.
    let etag = format!("\"{}\"", &blake3::hash(file.bytes).to_hex()[..32]);
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut res = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = file.bytes.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(file.name)),
        );
        r
    };
    let h = res.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_str(&etag).unwrap());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(res)
}

/// The web app (sign in with an API key; library, upload, search, status).
#[utoipa::path(get, path = "/", tag = "web",
    responses((status = 200, description = "The web app's page (text/html)")))]
pub async fn index(headers: HeaderMap) -> Result<Response, ApiError> {
    serve("index.html", &headers)
}

/// A file of the web app: its stylesheet and ES modules.
#[utoipa::path(get, path = "/web/{file}", tag = "web",
    params(("file" = String, Path, description = "e.g. main.js, app.css")),
    responses((status = 200, description = "The file, with its content type"),
              (status = 304, description = "Unchanged"),
              (status = 404, body = super::openapi::ErrorBody)))]
pub async fn file(Path(name): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    serve(&name, &headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_web_is_embedded_and_the_page_is_small() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = FILES.iter().map(|f| f.name.to_owned()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded, "web/ and FILES in api/web.rs differ");
        let own: usize = FILES
            .iter()
            .filter(|f| f.name.ends_with(".js") || f.name.ends_with(".css"))
            .map(|f| f.bytes.len())
            .sum();
        assert!(own < 200 * 1024, "the page's JS+CSS is {own} bytes");
        for f in FILES {
            assert_ne!(content_type(f.name), "application/octet-stream", "{}", f.name);
            let text = String::from_utf8_lossy(f.bytes);
            for far in ["http://", "https://", "//cdn", "@import url"] {
                // Only the OpenStreetMap link (a plain link the user follows) leaves the host.
                let outside = text
                    .match_indices(far)
                    .any(|(i, _)| !text[i..].starts_with("https://www.openstreetmap.org/")
                        && !text[i..].starts_with("http://www.w3.org/2000/svg"));
                assert!(!outside, "{} refers to {far}", f.name);
            }
        }
    }
}
