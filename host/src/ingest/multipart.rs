//! A `multipart/form-data` reader that hands a part's body out as slices of
//! the chunks it received, never copying them (issue 15 §5: multer copied
//! every chunk into its own buffer to look for the boundary, 16% of the
//! host's CPU on a large upload).
//!
//! The delimiter (`\r\n--boundary`) is found with `memchr::memmem` in each
//! chunk; a delimiter split between two chunks is found by keeping the chunk's
//! last few bytes (at most the delimiter's length) that could start one. Only
//! those bytes, the preamble and the part headers are ever copied.
//!
//! Framing, limits and errors follow multer 3.1 (what axum's `Multipart`
//! used), so that clients see the same answers: the boundary is parsed from
//! the content type by the `mime` crate, headers by `httparse` (at most 32),
//! `name` and `filename` by multer's rules, and each error has multer's text.
//! One bound is new: a part's headers longer than [`MAX_HEAD`] are refused
//! (multer buffered until it found their end).

use std::borrow::Cow;
use std::pin::Pin;

use axum::http::{HeaderName, HeaderValue};
use bytes::{Buf as _, Bytes, BytesMut};
use futures_util::{Stream, StreamExt as _};
use memchr::memmem;

/// Any error of the body stream beneath (the length limit, the idle timeout, a reset).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Most header lines in one part (multer's).
const MAX_HEADERS: usize = 32;

/// Longest header block of one part.
pub const MAX_HEAD: usize = 64 << 10;

/// Why a multipart body could not be read; the texts are multer's.
#[derive(Debug, thiserror::Error)]
pub enum MultipartError {
    /// The body ended before the closing delimiter, or the framing is wrong.
    #[error("incomplete multipart stream")]
    IncompleteStream,
    /// The body ended inside a part's data.
    #[error("field {:?} received with incomplete data", .0.as_deref().unwrap_or("<unknown>"))]
    IncompleteFieldData(Option<String>),
    /// A part's headers did not end (or were longer than [`MAX_HEAD`]).
    #[error("failed to read field complete headers")]
    IncompleteHeaders,
    /// A part's headers are malformed (e.g. a control character in a value).
    #[error("failed to read headers")]
    ReadHeaderFailed(#[source] httparse::Error),
    /// A header name is not a valid HTTP header name.
    #[error("failed to decode field's raw header name: {0:?}")]
    DecodeHeaderName(String),
    /// A header value is not a valid HTTP header value.
    #[error("failed to decode field's raw header value")]
    DecodeHeaderValue,
    /// The body stream failed (length limit, idle timeout, connection reset).
    #[error("failed to read stream")]
    StreamReadFailed(#[source] BoxError),
}

/// The boundary of a `multipart/form-data` content type, or `None` when it
/// is not one or names no boundary (multer's `parse_boundary`).
pub fn boundary(content_type: &str) -> Option<String> {
    let m = content_type.parse::<mime::Mime>().ok()?;
    if !(m.type_() == mime::MULTIPART && m.subtype() == mime::FORM_DATA) {
        return None;
    }
    m.get_param(mime::BOUNDARY).map(|b| b.as_str().to_owned())
}

/// Where the reader is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Before the first `--boundary` (a preamble is skipped).
    Preamble,
    /// Just after a `--boundary`: the closing `--`, or padding, CRLF and a part.
    Delimiter,
    /// In a part's data.
    Data,
    /// After the closing delimiter.
    End,
}

/// A streaming `multipart/form-data` body.
pub struct Multipart {
    stream: Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send>>,
    /// `--boundary`: the first delimiter, which needs no CRLF before it.
    first: Vec<u8>,
    /// `\r\n--boundary`: every later delimiter.
    delimiter: memmem::Finder<'static>,
    /// Received and not yet consumed: a slice of a chunk, or a small copy.
    buf: Bytes,
    /// The stream ended.
    eof: bool,
    stage: Stage,
    /// The current part's name, for errors.
    part_name: Option<String>,
}

impl std::fmt::Debug for Multipart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Multipart")
            .field("stage", &self.stage)
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

/// One part's headers: what the routes read of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartHead {
    /// `name` of `Content-Disposition`.
    pub name: Option<String>,
    /// `filename` of `Content-Disposition`.
    pub file_name: Option<String>,
    /// `Content-Type`, when it parses as a media type.
    pub content_type: Option<String>,
}

/// The current part: its headers, and its body through [`Field::chunk`].
#[derive(Debug)]
pub struct Field<'a> {
    head: PartHead,
    body: &'a mut Multipart,
}

impl Field<'_> {
    /// The part's field name.
    pub fn name(&self) -> Option<&str> {
        self.head.name.as_deref()
    }

    /// The part's file name, as the client sent it.
    pub fn file_name(&self) -> Option<&str> {
        self.head.file_name.as_deref()
    }

    /// The part's content type, as the client sent it.
    pub fn content_type(&self) -> Option<&str> {
        self.head.content_type.as_deref()
    }

    /// The next piece of the part's body (a slice of a received chunk), or
    /// `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, MultipartError> {
        self.body.data().await
    }
}

impl Multipart {
    /// Reads `stream` as a multipart body delimited by `boundary`.
    pub fn new<S, E>(stream: S, boundary: &str) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let first = format!("--{boundary}").into_bytes();
        let delimiter = memmem::Finder::new(format!("\r\n--{boundary}").as_bytes()).into_owned();
        Self {
            stream: Box::pin(stream.map(|r| r.map_err(Into::into))),
            first,
            delimiter,
            buf: Bytes::new(),
            eof: false,
            stage: Stage::Preamble,
            part_name: None,
        }
    }

    /// The next part, after skipping what is left of the current one; `None`
    /// after the closing delimiter.
    pub async fn next_field(&mut self) -> Result<Option<Field<'_>>, MultipartError> {
        while self.stage == Stage::Data {
            self.data().await?;
        }
        if self.stage == Stage::Preamble {
            self.preamble().await?;
        }
        if self.stage == Stage::End || !self.delimiter_end().await? {
            return Ok(None);
        }
        let head = self.head().await?;
        self.part_name = head.name.clone();
        self.stage = Stage::Data;
        Ok(Some(Field { head, body: self }))
    }

    /// The next received chunk (empty ones skipped), or `None` at the end.
    async fn pull(&mut self) -> Result<Option<Bytes>, MultipartError> {
        while !self.eof {
            match self.stream.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => {}
                Some(Ok(chunk)) => return Ok(Some(chunk)),
                Some(Err(e)) => return Err(MultipartError::StreamReadFailed(e)),
                None => self.eof = true,
            }
        }
        Ok(None)
    }

    /// Appends the next chunk to `buf` (copying only when `buf` holds bytes);
    /// `false` at the end of the body.
    async fn more(&mut self) -> Result<bool, MultipartError> {
        let Some(chunk) = self.pull().await? else {
            return Ok(false);
        };
        self.buf = if self.buf.is_empty() {
            chunk
        } else {
            concat(&self.buf, &chunk)
        };
        Ok(true)
    }

    /// Skips to just past the first `--boundary`.
    async fn preamble(&mut self) -> Result<(), MultipartError> {
        loop {
            if let Some(i) = memmem::find(&self.buf, &self.first) {
                self.buf.advance(i + self.first.len());
                self.stage = Stage::Delimiter;
                return Ok(());
            }
            // Keep only what could still begin the boundary: the preamble is unbounded.
            let keep = self.first.len().saturating_sub(1).min(self.buf.len());
            self.buf.advance(self.buf.len() - keep);
            if !self.more().await? {
                return Err(MultipartError::IncompleteStream);
            }
        }
    }

    /// Reads past a delimiter's end: `false` after the closing `--`, `true`
    /// after transport padding and the CRLF that begins a part.
    async fn delimiter_end(&mut self) -> Result<bool, MultipartError> {
        self.need(2).await?;
        if self.buf.starts_with(b"--") {
            self.stage = Stage::End;
            return Ok(false);
        }
        loop {
            match self.buf.iter().position(|b| *b != b' ' && *b != b'\t') {
                Some(p) => {
                    self.buf.advance(p);
                    break;
                }
                None => {
                    self.buf.clear();
                    if !self.more().await? {
                        return Err(MultipartError::IncompleteStream);
                    }
                }
            }
        }
        self.need(2).await?;
        if !self.buf.starts_with(b"\r\n") {
            return Err(MultipartError::IncompleteStream);
        }
        self.buf.advance(2);
        Ok(true)
    }

    /// Waits until `buf` holds at least `n` bytes.
    async fn need(&mut self, n: usize) -> Result<(), MultipartError> {
        while self.buf.len() < n {
            if !self.more().await? {
                return Err(MultipartError::IncompleteStream);
            }
        }
        Ok(())
    }

    /// Reads and parses a part's header block (through its blank line).
    async fn head(&mut self) -> Result<PartHead, MultipartError> {
        let end = loop {
            if let Some(i) = memmem::find(&self.buf[..self.buf.len().min(MAX_HEAD + 4)], b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(MultipartError::IncompleteHeaders);
            }
            if !self.more().await? {
                return Err(MultipartError::IncompleteStream);
            }
        };
        let block = self.buf.split_to(end);
        parse_head(&block)
    }

    /// The current part's next piece of data, or `None` at its end (then the
    /// delimiter is consumed).
    async fn data(&mut self) -> Result<Option<Bytes>, MultipartError> {
        if self.stage != Stage::Data {
            return Ok(None);
        }
        let len = self.delimiter.needle().len();
        loop {
            if let Some(i) = self.delimiter.find(&self.buf) {
                let data = self.buf.split_to(i);
                self.buf.advance(len);
                return Ok(self.part_end(data));
            }
            let keep = delimiter_start(&self.buf, self.delimiter.needle());
            if self.buf.len() > keep {
                return Ok(Some(self.buf.split_to(self.buf.len() - keep)));
            }
            // All of `buf` (a few bytes) may begin the delimiter.
            let Some(chunk) = self.pull().await? else {
                return Err(MultipartError::IncompleteFieldData(self.part_name.clone()));
            };
            if self.buf.is_empty() {
                self.buf = chunk;
            } else if chunk.len() >= len {
                // Look for a delimiter that begins in the kept bytes, copying
                // only them and the start of the chunk.
                let window = concat(&self.buf, &chunk[..len - 1]);
                let kept = self.buf.len();
                match self.delimiter.find(&window) {
                    Some(i) => {
                        let data = self.buf.slice(..i);
                        self.buf = chunk.slice(i + len - kept..);
                        return Ok(self.part_end(data));
                    }
                    // They were data after all.
                    None => return Ok(Some(std::mem::replace(&mut self.buf, chunk))),
                }
            } else {
                self.buf = concat(&self.buf, &chunk);
            }
        }
    }

    /// The part ends after `data` (its last piece, maybe empty).
    fn part_end(&mut self, data: Bytes) -> Option<Bytes> {
        self.stage = Stage::Delimiter;
        (!data.is_empty()).then_some(data)
    }
}

/// `a` then `b`, copied into one buffer.
fn concat(a: &[u8], b: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(a.len() + b.len());
    out.extend_from_slice(a);
    out.extend_from_slice(b);
    out.freeze()
}

/// How many of `buf`'s last bytes could begin `needle` (which `buf` does not
/// hold whole): the longest suffix that is a proper prefix of it.
fn delimiter_start(buf: &[u8], needle: &[u8]) -> usize {
    let from = buf.len().saturating_sub(needle.len() - 1);
    let mut at = from;
    while let Some(i) = memchr::memchr(needle[0], &buf[at..]) {
        let p = at + i;
        if needle.starts_with(&buf[p..]) {
            return buf.len() - p;
        }
        at = p + 1;
    }
    0
}

/// Parses a header block as multer did: `httparse`, then each name and value
/// checked as HTTP's, the last of a repeated header winning.
fn parse_head(block: &[u8]) -> Result<PartHead, MultipartError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let headers = match httparse::parse_headers(block, &mut raw) {
        Ok(httparse::Status::Complete((_, headers))) => headers,
        Ok(httparse::Status::Partial) => return Err(MultipartError::IncompleteHeaders),
        Err(e) => return Err(MultipartError::ReadHeaderFailed(e)),
    };
    let mut disposition = None;
    let mut content_type = None;
    for h in headers.iter() {
        let name = HeaderName::try_from(h.name)
            .map_err(|_| MultipartError::DecodeHeaderName(h.name.to_owned()))?;
        let value = HeaderValue::try_from(h.value).map_err(|_| MultipartError::DecodeHeaderValue)?;
        if name == axum::http::header::CONTENT_DISPOSITION {
            disposition = Some(value);
        } else if name == axum::http::header::CONTENT_TYPE {
            content_type = Some(value);
        }
    }
    let attr = |key: &[u8]| {
        disposition
            .as_ref()
            .and_then(|v| disposition_attr(v.as_bytes(), key))
            .map(Cow::into_owned)
    };
    Ok(PartHead {
        name: attr(b"name"),
        file_name: attr(b"filename"),
        content_type: content_type
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<mime::Mime>().ok())
            .map(|m| m.as_ref().to_owned()),
    })
}

/// `key`'s value in a `Content-Disposition` header, by multer's rules: quoted
/// (with `\"` escapes) or bare up to `;` or a space; `filename*` is not read.
fn disposition_attr<'h>(mut header: &'h [u8], key: &[u8]) -> Option<Cow<'h, str>> {
    fn trim_start(b: &[u8]) -> &[u8] {
        let i = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
        &b[i..]
    }
    fn then(b: &[u8], c: u8) -> Option<&[u8]> {
        match trim_start(b) {
            [first, rest @ ..] if *first == c => Some(rest),
            _ => None,
        }
    }
    while let Some(i) = memmem::find(header, key) {
        let suffix = &header[i + key.len()..];
        // A longer word that ends in `key` (e.g. `filename` when looking for `name`).
        if i > 0 && !(header[i - 1].is_ascii_whitespace() || header[i - 1] == b';') {
            header = suffix;
            continue;
        }
        let rest = then(suffix, b'=')?;
        let (bytes, escaped) = if let Some(rest) = then(rest, b'"') {
            let (mut k, mut escaped) = (memchr::memchr(b'"', rest)?, false);
            while k > 0 && rest[k - 1] == b'\\' {
                escaped = true;
                k = k + 1 + memchr::memchr(b'"', &rest[k + 1..])?;
            }
            (&rest[..k], escaped)
        } else {
            let rest = trim_start(rest);
            let j = memchr::memchr2(b';', b' ', rest).unwrap_or(rest.len());
            (&rest[..j], false)
        };
        let text = std::str::from_utf8(bytes).ok()?;
        return Some(if escaped {
            text.replace(r#"\""#, "\"").into()
        } else {
            text.into()
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    /// One part as the routes see it: its head, then its body, or the error.
    type Parsed = Result<Vec<(PartHead, Vec<u8>, usize)>, String>;

    /// Reads `body` fed in `size`-byte chunks; per part: head, body, and how
    /// many of the body's pieces were not slices of one received chunk.
    fn parse(body: &[u8], size: usize, boundary: &str) -> Parsed {
        let chunks: Vec<Result<Bytes, BoxError>> = body
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let received: Vec<Bytes> = chunks.iter().map(|c| c.as_ref().unwrap().clone()).collect();
        let mut mp = Multipart::new(futures_util::stream::iter(chunks), boundary);
        block_on(async move {
            let mut parts = Vec::new();
            while let Some(mut field) = mp.next_field().await.map_err(|e| e.to_string())? {
                let head = field.head.clone();
                let (mut data, mut copied) = (Vec::new(), 0);
                while let Some(piece) = field.chunk().await.map_err(|e| e.to_string())? {
                    let inside = received.iter().any(|c| {
                        let (s, e) = (c.as_ptr() as usize, c.as_ptr() as usize + c.len());
                        let p = piece.as_ptr() as usize;
                        p >= s && p + piece.len() <= e
                    });
                    copied += usize::from(!inside);
                    data.extend_from_slice(&piece);
                }
                parts.push((head, data, copied));
            }
            Ok(parts)
        })
    }

    /// The same answer for every chunk size from 1 byte to the whole body.
    fn parse_every_split(body: &[u8], boundary: &str) -> Parsed {
        let whole = parse(body, body.len().max(1), boundary);
        for size in 1..body.len() {
            let split = parse(body, size, boundary);
            let strip = |p: &Parsed| {
                p.clone()
                    .map(|v| v.into_iter().map(|(h, d, _)| (h, d)).collect::<Vec<_>>())
            };
            assert_eq!(strip(&split), strip(&whole), "chunks of {size} bytes");
        }
        whole
    }

    fn head(name: &str, file: Option<&str>, ct: Option<&str>) -> PartHead {
        PartHead {
            name: Some(name.into()),
            file_name: file.map(Into::into),
            content_type: ct.map(Into::into),
        }
    }

    #[test]
    fn parts_survive_every_split_and_big_chunks_are_not_copied() {
        // CRLFs and a lone `\r\n--` inside the data, a part without a filename,
        // an empty part, and a preamble and epilogue to skip.
        let body = b"preamble\r\n--XyZ\r\n\
Content-Disposition: form-data; name=\"file\"; filename=\"a b.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n\
\r\n--Xy\r\n\r\n-- data \r\n--XyQ\r\n--XyZ  \t\r\n\
Content-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--XyZ\r\n\
Content-Disposition: form-data; name=\"empty\"\r\n\r\n\r\n--XyZ--\r\nepilogue";
        let parts = parse_every_split(body, "XyZ").unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].0, head("file", Some("a b.jpg"), Some("image/jpeg")));
        assert_eq!(parts[0].1, b"\r\n--Xy\r\n\r\n-- data \r\n--XyQ");
        assert_eq!(parts[1].0, head("note", None, None));
        assert_eq!(parts[1].1, b"hello");
        assert_eq!(parts[2].1, b"");
        // A large file part arrives as slices of the chunks, except for the
        // few bytes kept at a chunk's end that could have begun the delimiter.
        let mut big = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\n".to_vec();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8 | 0x20).collect();
        big.extend_from_slice(&data);
        big.extend_from_slice(b"\r\n--b--\r\n");
        let parts = parse(&big, 65_536, "b").unwrap();
        assert!(parts[0].1 == data);
        assert_eq!(parts[0].2, 0, "no piece was copied");
        // A chunk that ends in `\r` keeps it, and passes it on as data.
        let head_len = big.len() - data.len() - b"\r\n--b--\r\n".len();
        let mut cr = data.clone();
        cr[65_535 - head_len] = b'\r';
        let mut body = big[..head_len].to_vec();
        body.extend_from_slice(&cr);
        body.extend_from_slice(b"\r\n--b--");
        assert!(parse(&body, 65_536, "b").unwrap()[0].1 == cr);
    }

    #[test]
    fn broken_bodies_are_errors_at_every_split() {
        let part = "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\nabc";
        let cases: &[(String, &str)] = &[
            // No closing delimiter: the body ends in the data.
            (part.to_owned(), "field \"file\" received with incomplete data"),
            (format!("{part}\r\n--b"), "incomplete multipart stream"),
            (format!("{part}\r\n--b\r\n"), "incomplete multipart stream"),
            // No boundary at all, or a delimiter not followed by CRLF.
            ("just text".to_owned(), "incomplete multipart stream"),
            (format!("{part}\r\n--bx\r\n"), "incomplete multipart stream"),
            ("--b\r\nContent-Disposition: form-data\r\nabc".to_owned(), "incomplete multipart stream"),
            ("--bX\r\n".to_owned(), "incomplete multipart stream"),
            // Headers httparse refuses (a control character), and a bad name.
            ("--b\r\nContent-Disposition: form-data; name=\"a\u{1}\"\r\n\r\nx\r\n--b--".to_owned(), "failed to read headers"),
            ("--b\r\nBad Name: x\r\n\r\nx\r\n--b--".to_owned(), "failed to read headers"),
        ];
        for (body, want) in cases {
            assert_eq!(parse_every_split(body.as_bytes(), "b"), Err((*want).to_owned()), "{body:?}");
        }
        let long = format!("--b\r\nX-Long: {}\r\n\r\nx\r\n--b--", "y".repeat(MAX_HEAD));
        assert_eq!(parse(long.as_bytes(), 4096, "b"), Err("failed to read field complete headers".to_owned()));
    }

    #[test]
    fn unread_parts_are_skipped() {
        let body = b"--b\r\nContent-Disposition: form-data; name=\"skip\"\r\n\r\nlots of bytes\r\n--b\r\n\
Content-Disposition: form-data; name=\"file\"; filename=\"f.jpg\"\r\n\r\nkept\r\n--b--";
        for size in 1..body.len() {
            let chunks: Vec<Result<Bytes, BoxError>> =
                body.chunks(size).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
            let mut mp = Multipart::new(futures_util::stream::iter(chunks), "b");
            block_on(async {
                assert_eq!(mp.next_field().await.unwrap().unwrap().name(), Some("skip"));
                let mut f = mp.next_field().await.unwrap().unwrap();
                assert_eq!(f.file_name(), Some("f.jpg"));
                let mut got = Vec::new();
                while let Some(c) = f.chunk().await.unwrap() {
                    got.extend_from_slice(&c);
                }
                assert_eq!(got, b"kept");
                assert!(mp.next_field().await.unwrap().is_none());
            });
        }
    }

    #[test]
    fn boundary_and_disposition_follow_multer() {
        assert_eq!(boundary("multipart/form-data; boundary=XyZ").as_deref(), Some("XyZ"));
        assert_eq!(boundary("multipart/form-data; boundary=\"XyZ\"").as_deref(), Some("XyZ"));
        assert_eq!(boundary("multipart/form-data"), None);
        assert_eq!(boundary("multipart/mixed; boundary=b"), None);
        assert_eq!(boundary("text/plain"), None);
        let d = br#"form-data; name="my_field"; filename="file \"q\".txt""#;
        assert_eq!(disposition_attr(d, b"name").unwrap(), "my_field");
        assert_eq!(disposition_attr(d, b"filename").unwrap(), r#"file "q".txt"#);
        assert_eq!(disposition_attr(b"form-data; filename=x.jpg", b"name"), None);
        assert_eq!(disposition_attr(b"form-data; name  =  f ; x", b"name").unwrap(), "f");
    }
}
