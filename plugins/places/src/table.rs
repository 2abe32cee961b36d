//! The GeoNames places table that build.rs prepares (`places.bin`), read in
//! place: fixed-size records sorted into a 1° grid, so a look-up touches the
//! few cells around a point and nothing is parsed when an instance starts.

static DATA: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/places.bin"));

const ROWS: usize = 180;
const COLS: usize = 360;
const HEADER: usize = 16;
const RECORD: usize = 24;
const COUNTRY: usize = 8;

/// One GeoNames place.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Place {
    /// Degrees north.
    pub lat: f64,
    /// Degrees east.
    pub lon: f64,
    /// Inhabitants as GeoNames records them (0 when unknown).
    pub population: u32,
    name: u32,
    region: u32,
    country: u16,
}

impl Place {
    /// The place's name, e.g. `Arezzo`.
    pub fn name(&self) -> &'static str {
        string(self.name)
    }
    /// Its first-level subdivision (GeoNames admin1), e.g. `Tuscany`; empty when unknown.
    pub fn region(&self) -> &'static str {
        string(self.region)
    }
    /// ISO 3166-1 alpha-2 code, e.g. `IT`.
    pub fn country_code(&self) -> &'static str {
        let at = countries_at() + COUNTRY * self.country as usize;
        std::str::from_utf8(&DATA[at..at + 2]).unwrap_or("")
    }
    /// The country's English name, e.g. `Italy`.
    pub fn country(&self) -> &'static str {
        string(u32_at(countries_at() + COUNTRY * self.country as usize + 4))
    }
}

fn u32_at(at: usize) -> u32 {
    u32::from_le_bytes(DATA[at..at + 4].try_into().expect("4 bytes"))
}

fn i32_at(at: usize) -> i32 {
    u32_at(at) as i32
}

/// Number of places in the table.
pub fn len() -> usize {
    u32_at(4) as usize
}

fn places_at() -> usize {
    HEADER + 4 * (ROWS * COLS + 1)
}

fn countries_at() -> usize {
    places_at() + RECORD * len()
}

fn strings_at() -> usize {
    countries_at() + COUNTRY * u32_at(8) as usize
}

fn string(offset: u32) -> &'static str {
    let at = strings_at() + offset as usize;
    let n = DATA[at] as usize;
    std::str::from_utf8(&DATA[at + 1..at + 1 + n]).unwrap_or("")
}

fn place(i: usize) -> Place {
    let at = places_at() + RECORD * i;
    Place {
        lat: i32_at(at) as f64 / 1e5,
        lon: i32_at(at + 4) as f64 / 1e5,
        population: u32_at(at + 8),
        name: u32_at(at + 12),
        region: u32_at(at + 16),
        country: u16::from_le_bytes([DATA[at + 20], DATA[at + 21]]),
    }
}

/// Calls `f` with every place in the grid cells that overlap the box
/// `lat ± dlat`, `lon ± dlon` (degrees; longitude wraps at ±180°).
pub fn each_near(lat: f64, lon: f64, dlat: f64, dlon: f64, mut f: impl FnMut(Place)) {
    let row_lo = ((lat - dlat + 90.0).floor() as i64).clamp(0, ROWS as i64 - 1);
    let row_hi = ((lat + dlat + 90.0).floor() as i64).clamp(0, ROWS as i64 - 1);
    // Near the poles the box spans every column.
    let span = if dlon >= 180.0 { COLS as i64 } else { ((lon + dlon + 180.0).floor() - (lon - dlon + 180.0).floor()) as i64 + 1 };
    let col_lo = (lon - dlon + 180.0).floor() as i64;
    for row in row_lo..=row_hi {
        for k in 0..span.min(COLS as i64) {
            let col = (col_lo + k).rem_euclid(COLS as i64) as usize;
            let c = row as usize * COLS + col;
            let (start, end) = (u32_at(HEADER + 4 * c) as usize, u32_at(HEADER + 4 * (c + 1)) as usize);
            for i in start..end {
                f(place(i));
            }
        }
    }
}
