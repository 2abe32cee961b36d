//! `places`: offline reverse geocoding. From the `gps_latitude` and
//! `gps_longitude` facts of an earlier stage (metadata) it names the place a
//! person would: city, region, country and country code.
//!
//! * The country comes from boundary data (the `country-boundaries` crate,
//!   OpenStreetMap, ODbL), so a photo near a border is not put in the
//!   neighbour's town, as the nearest-point look-up does.
//! * The city is chosen among that country's GeoNames places (cities1000,
//!   CC BY 4.0) near the point by population-weighted distance, so the
//!   Eiffel Tower is in Paris rather than in the nearer Neuilly-sur-Seine.
//! * The region is the chosen city's GeoNames first-level subdivision.
//!
//! Facts: `place_city`, `place_region`, `place_country` (English name),
//! `place_country_code` (ISO 3166-1 alpha-2), all text; none at all when the
//! asset has no GPS or is at sea or far from any place. Config: `city_km`
//! (default 25) and `max_km` (default 100), see [`Settings`].
//!
//! The data is prepared by build.rs and read in place ([`table`],
//! [`boundaries`]). Written on `lumilio_sdk`: [`run`] is plain Rust, called
//! natively by the tests and through `export_stage!` in the component.

pub mod boundaries;
pub mod table;

use lumilio_sdk::{Config, ConfigError, Fact, Input, Output, StageError, export_stage, log};
use table::Place;

/// How strongly population pulls the choice of city: a place is scored by
/// distance / population^WEIGHT, lowest wins. Chosen on the hand-checked
/// points in tests/places.rs: 0.35 names Paris at the Eiffel Tower and Tokyo at
/// Tokyo Tower, but still the village a photo was taken in rather than the city
/// 10 km away.
pub const WEIGHT: f64 = 0.35;
/// Distances below this count as this (km), so that being 200 m from a
/// district's centre point does not outweigh the city around it.
pub const NEAR_KM: f64 = 2.0;
/// Places of fewer inhabitants count as this many (GeoNames has admin seats with 0).
pub const MIN_POPULATION: f64 = 1000.0;

/// The stage's settings, from its `config` table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// A city is named only if it lies within this many km.
    pub city_km: f64,
    /// Region and country are named only if some place of that country lies
    /// within this many km; farther out (at sea, where the boundary data runs
    /// past the coast; in the desert) the stage names nothing.
    pub max_km: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { city_km: 25.0, max_km: 100.0 }
    }
}

/// A named place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// The town or city, when one lies within [`Settings::city_km`].
    pub city: Option<String>,
    /// First-level subdivision, e.g. `Bavaria`, when GeoNames has one.
    pub region: Option<String>,
    /// English country name, e.g. `Germany`.
    pub country: String,
    /// ISO 3166-1 alpha-2, e.g. `DE`.
    pub country_code: String,
}

/// Reads the settings from the stage's config; unknown keys are logged.
pub fn parse_config(config: &Config) -> Result<Settings, ConfigError> {
    const KEYS: [&str; 2] = ["city_km", "max_km"];
    for k in config.unknown_keys(&KEYS) {
        log::info(format!("ignoring unknown config key '{k}'"));
    }
    let d = Settings::default();
    Ok(Settings {
        city_km: config.get_in("city_km", 0.001..=1000.0)?.unwrap_or(d.city_km),
        max_km: config.get_in("max_km", 0.001..=1000.0)?.unwrap_or(d.max_km),
    })
}

/// Great-circle distance in km.
pub fn distance_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0088 * a.sqrt().min(1.0).asin()
}

/// Names the place at a point, or `None` at sea and far from any place.
pub fn locate(lat: f64, lon: f64, s: &Settings) -> Option<Named> {
    // Countries only (two letters); subdivision ids like `US-NY` are not
    // GeoNames country codes.
    let codes: Vec<String> = boundaries::ids(lat, lon).into_iter().filter(|id| id.len() == 2).collect();
    if codes.is_empty() {
        return None;
    }
    let reach = s.max_km.max(s.city_km);
    let dlat = reach / 111.0;
    let cos = lat.to_radians().cos();
    let dlon = if cos < 0.01 { 360.0 } else { (dlat / cos).min(360.0) };
    let mut nearest: Option<(f64, Place)> = None;
    let mut best: Option<(f64, Place)> = None;
    table::each_near(lat, lon, dlat, dlon, |p| {
        if !codes.iter().any(|c| c == p.country_code()) {
            return;
        }
        let d = distance_km(lat, lon, p.lat, p.lon);
        if d > reach {
            return;
        }
        if nearest.is_none_or(|(nd, _)| d < nd) {
            nearest = Some((d, p));
        }
        if d <= s.city_km {
            let score = d.max(NEAR_KM) / (p.population as f64).max(MIN_POPULATION).powf(WEIGHT);
            if best.is_none_or(|(bs, _)| score < bs) {
                best = Some((score, p));
            }
        }
    });
    let (d, near) = nearest?;
    if d > s.max_km {
        return None;
    }
    let from = best.map_or(near, |(_, p)| p);
    let region = Some(from.region()).filter(|r| !r.is_empty()).map(str::to_owned);
    Some(Named {
        city: best.map(|(_, p)| p.name().to_owned()),
        region,
        country: from.country().to_owned(),
        country_code: from.country_code().to_owned(),
    })
}

/// The stage entry point: the component calls it through `export_stage!`,
/// and so can native benchmarks and tests.
pub fn run(input: &Input) -> Result<Output, StageError> {
    let settings = parse_config(&input.config)?;
    let (Some(lat), Some(lon)) = (input.fact_float("gps_latitude"), input.fact_float("gps_longitude")) else {
        log::info("no GPS facts (gps_latitude, gps_longitude); nothing to name");
        return Ok(Output::default());
    };
    let Some(place) = locate(lat, lon, &settings) else {
        log::info(format!("no place within {} km of {lat:.5}, {lon:.5}", settings.max_km));
        return Ok(Output::default());
    };
    let mut facts = Vec::new();
    if let Some(city) = place.city {
        facts.push(Fact::text("place_city", city));
    }
    if let Some(region) = place.region {
        facts.push(Fact::text("place_region", region));
    }
    facts.push(Fact::text("place_country", place.country));
    facts.push(Fact::text("place_country_code", place.country_code));
    Ok(Output { facts, ..Output::default() })
}

export_stage!(run);
