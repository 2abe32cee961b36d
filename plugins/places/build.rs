//! Prepares the stage's data at build time, so that a fresh instance per asset
//! only reads what one look-up needs:
//!
//! * `places.bin`: GeoNames places (`data/places.tsv.gz`) and country names
//!   (`data/countries.tsv`) as fixed-size records sorted into a 1° grid, with
//!   one start index per grid cell (layout in `src/table.rs`).
//! * `cells.bin`: where each cell of country-boundaries' 360×180 raster starts
//!   in its data, so that a look-up parses one cell instead of all 64 800.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;

/// Grid cells: 180 rows of latitude × 360 columns of longitude, 1° each.
const ROWS: usize = 180;
const COLS: usize = 360;

fn main() {
    println!("cargo::rerun-if-changed=data/places.tsv.gz");
    println!("cargo::rerun-if-changed=data/countries.tsv");
    println!("cargo::rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("places.bin"), places()).expect("write places.bin");
    std::fs::write(out.join("cells.bin"), cells(country_boundaries::BOUNDARIES_ODBL_360X180))
        .expect("write cells.bin");
}

struct Place {
    cell: u32,
    lat: i32,
    lon: i32,
    population: u32,
    name: u32,
    region: u32,
    country: u16,
}

/// Interns strings into one blob of `[len: u8][utf-8]` entries.
#[derive(Default)]
struct Strings {
    blob: Vec<u8>,
    seen: HashMap<String, u32>,
}

impl Strings {
    fn add(&mut self, s: &str) -> u32 {
        if let Some(&at) = self.seen.get(s) {
            return at;
        }
        // Names longer than 255 bytes do not occur in GeoNames; cut on a char boundary if one did.
        let mut end = s.len().min(255);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let at = self.blob.len() as u32;
        self.blob.push(end as u8);
        self.blob.extend_from_slice(&s.as_bytes()[..end]);
        self.seen.insert(s.to_owned(), at);
        at
    }
}

/// Grid cell of a coordinate (the same formula as `table::cell`).
fn cell(lat: f64, lon: f64) -> u32 {
    let row = ((lat + 90.0).floor() as i64).clamp(0, ROWS as i64 - 1) as u32;
    let col = ((lon + 180.0).floor() as i64).clamp(0, COLS as i64 - 1) as u32;
    row * COLS as u32 + col
}

fn places() -> Vec<u8> {
    let mut strings = Strings::default();
    strings.add(""); // offset 0: "no region"

    let mut countries: Vec<([u8; 2], u32)> = Vec::new();
    let mut country_index: HashMap<String, u16> = HashMap::new();
    let list = std::fs::read_to_string("data/countries.tsv").expect("read data/countries.tsv");
    for line in list.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (code, name) = line.split_once('\t').expect("countries.tsv: code<TAB>name");
        let code_bytes: [u8; 2] = code.as_bytes().try_into().expect("two-letter country code");
        country_index.insert(code.to_owned(), countries.len() as u16);
        countries.push((code_bytes, strings.add(name)));
    }

    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open("data/places.tsv.gz").expect("open data/places.tsv.gz"))
        .read_to_string(&mut text)
        .expect("data/places.tsv.gz is gzip'd UTF-8");
    let mut list = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.starts_with('#')) {
        let f: Vec<&str> = line.split('\t').collect();
        let [cc, region, name, lat, lon, population] = f[..] else {
            panic!("places.tsv line {}: expected 6 fields, got {}", n + 1, f.len());
        };
        let lat: f64 = lat.parse().expect("latitude");
        let lon: f64 = lon.parse().expect("longitude");
        let country = match country_index.get(cc) {
            Some(&i) => i,
            None => {
                // A code with no name still names its places (e.g. a new code).
                let i = countries.len() as u16;
                let code_bytes: [u8; 2] = cc.as_bytes().try_into().expect("two-letter country code");
                countries.push((code_bytes, strings.add(cc)));
                country_index.insert(cc.to_owned(), i);
                i
            }
        };
        list.push(Place {
            cell: cell(lat, lon),
            lat: (lat * 1e5).round() as i32,
            lon: (lon * 1e5).round() as i32,
            population: population.parse().expect("population"),
            name: strings.add(name),
            region: strings.add(region),
            country,
        });
    }
    list.sort_by_key(|p| (p.cell, p.lat, p.lon));

    // Layout (little-endian), read by src/table.rs:
    //   "LPL1", n_places u32, n_countries u32, strings_len u32
    //   cell_start [u32; ROWS*COLS + 1]
    //   places [lat i32 (1e-5°), lon i32, population u32, name u32, region u32, country u16, pad u16]
    //   countries [code [u8; 2], pad u16, name u32]
    //   strings
    let mut out = Vec::new();
    out.extend_from_slice(b"LPL1");
    out.extend_from_slice(&(list.len() as u32).to_le_bytes());
    out.extend_from_slice(&(countries.len() as u32).to_le_bytes());
    out.extend_from_slice(&(strings.blob.len() as u32).to_le_bytes());
    let mut next = 0usize;
    for c in 0..=(ROWS * COLS) as u32 {
        while next < list.len() && list[next].cell < c {
            next += 1;
        }
        out.extend_from_slice(&(next as u32).to_le_bytes());
    }
    for p in &list {
        out.extend_from_slice(&p.lat.to_le_bytes());
        out.extend_from_slice(&p.lon.to_le_bytes());
        out.extend_from_slice(&p.population.to_le_bytes());
        out.extend_from_slice(&p.name.to_le_bytes());
        out.extend_from_slice(&p.region.to_le_bytes());
        out.extend_from_slice(&p.country.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
    }
    for (code, name) in &countries {
        out.extend_from_slice(code);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&name.to_le_bytes());
    }
    out.extend_from_slice(&strings.blob);
    out
}

/// Walks country-boundaries' format (its `deserializer.rs`, version 2) and
/// returns `header_len u32, raster_width u32, n_cells u32, start [u32; n+1]`.
fn cells(data: &[u8]) -> Vec<u8> {
    let mut r = Walk { data, at: 0 };
    assert_eq!(r.u16(), 2, "country-boundaries data version changed: update build.rs");
    for _ in 0..r.u32() {
        r.string();
        r.skip(8); // f64 size
    }
    let width = r.u32();
    let n = r.u32();
    let header_len = r.at as u32;
    let mut out = Vec::new();
    for v in [header_len, width, n] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for _ in 0..n {
        out.extend_from_slice(&(r.at as u32).to_le_bytes());
        for _ in 0..r.u8() {
            r.string();
        }
        for _ in 0..r.u8() {
            r.string();
            for _ in 0..2 {
                // outer, then inner rings: count u8, each ring u32 points of 2×u16
                for _ in 0..r.u8() {
                    let points = r.u32() as usize;
                    r.skip(points * 4);
                }
            }
        }
    }
    out.extend_from_slice(&(r.at as u32).to_le_bytes());
    assert_eq!(r.at, data.len(), "country-boundaries data has trailing bytes: update build.rs");
    out
}

struct Walk<'a> {
    data: &'a [u8],
    at: usize,
}

impl Walk<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let s = &self.data[self.at..self.at + n];
        self.at += n;
        s
    }
    fn skip(&mut self, n: usize) {
        self.take(n);
    }
    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    fn string(&mut self) {
        let n = self.u16() as usize;
        self.skip(n);
    }
}
