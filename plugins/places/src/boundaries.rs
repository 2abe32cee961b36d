//! Country and subdivision ids at a point, from the `country-boundaries`
//! crate's OpenStreetMap data (ODbL), reading one raster cell per look-up.
//!
//! `CountryBoundaries::from_reader` on the whole 360×180 raster takes about
//! 50 ms, far too much for a fresh instance per asset. build.rs records where
//! each cell starts (`cells.bin`); a look-up hands the crate's own reader a
//! one-cell raster made of that cell's bytes, and asks it about the same
//! point in that cell's local coordinates. The crate still does all parsing
//! and point-in-polygon work.

use country_boundaries::{BOUNDARIES_ODBL_360X180, CountryBoundaries, LatLon};

static CELLS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cells.bin"));

fn word(at: usize) -> usize {
    u32::from_le_bytes(CELLS[at..at + 4].try_into().expect("4 bytes")) as usize
}

/// The ids of the areas that contain the point, e.g. `["US-NY", "US"]` (in
/// no particular order); empty at sea (where the data has no maritime border)
/// and for coordinates out of range.
pub fn ids(lat: f64, lon: f64) -> Vec<String> {
    if !(lat.is_finite() && lon.is_finite() && (-90.0..=90.0).contains(&lat)) {
        return Vec::new();
    }
    let (width, n) = (word(4), word(8));
    let height = n / width;
    // The crate's own formulas (lib.rs: cell_and_local_point).
    let lon = normalize(lon);
    let cell_x = ((width as f64 * (180.0 + lon) / 360.0).floor() as usize).min(width - 1);
    let cell_y = ((height as f64 * (90.0 - lat) / 180.0).ceil() as usize).saturating_sub(1);
    let cell_lon = -180.0 + 360.0 * cell_x as f64 / width as f64;
    let cell_lat = 90.0 - 180.0 * (cell_y as f64 + 1.0) / height as f64;
    let x = ((lon - cell_lon) * width as f64 * 65535.0 / 360.0) as u16;
    let y = ((lat - cell_lat) * height as f64 * 65535.0 / 180.0) as u16;

    let index = cell_y * width + cell_x;
    let (start, end) = (word(12 + 4 * index), word(16 + 4 * index));
    // version 2, no geometry sizes (ids are told apart by their form), a 1×1 raster.
    let head: [u8; 14] = [0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1];
    let cell = std::io::Read::chain(&head[..], &BOUNDARIES_ODBL_360X180[start..end]);
    let Ok(one) = CountryBoundaries::from_reader(cell) else {
        return Vec::new();
    };
    // In a 1×1 raster the local point of (lat', lon') is ((lon'+180)·65535/360,
    // (lat'+90)·65535/180); pick the centre of local pixel (x, y).
    let lon1 = -180.0 + (x as f64 + 0.5) * 360.0 / 65535.0;
    let lat1 = (-90.0 + (y as f64 + 0.5) * 180.0 / 65535.0).min(90.0);
    match LatLon::new(lat1, lon1) {
        Ok(p) => one.ids(p).into_iter().map(str::to_owned).collect(),
        Err(_) => Vec::new(),
    }
}

fn normalize(lon: f64) -> f64 {
    let v = lon % 360.0;
    if v < -180.0 {
        v + 360.0
    } else if v >= 180.0 {
        v - 360.0
    } else {
        v
    }
}
