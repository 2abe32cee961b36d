//! Hand-checked points: what a person would name at each, checked against
//! maps and common knowledge (not against this stage's output). The table
//! below is the agreement figure the README reports.

use lumilio_sdk::{Fact, Input, StageError, Value};
use places::{Named, Settings, boundaries, locate, run, table};

/// (what, lat, lon, city, region, country code); `None` = not checked there.
type Point = (&'static str, f64, f64, Option<&'static str>, Option<&'static str>, Option<&'static str>);

const POINTS: &[Point] = &[
    // The points.
    ("Eiffel Tower", 48.8584, 2.2945, Some("Paris"), Some("Île-de-France"), Some("FR")),
    ("Empire State Building", 40.7484, -73.9857, Some("New York City"), Some("New York"), Some("US")),
    ("Vornbach (border village)", 48.48703, 13.43796, None, Some("Bavaria"), Some("DE")),
    ("Nijmegen", 51.81126, 5.79792, Some("Nijmegen"), Some("Gelderland"), Some("NL")),
    ("Colosseum", 41.8902, 12.4922, Some("Rome"), Some("Lazio"), Some("IT")),
    // The sample photos with GPS (tests/data/photos).
    ("jpg/gps/DSCN0010.jpg", 43.4674483, 11.8851267, Some("Arezzo"), Some("Tuscany"), Some("IT")),
    ("heic/IMG_5195.HEIC (Blue Springs, MO)", 39.0513444, -94.2887722, Some("Blue Springs"), Some("Missouri"), Some("US")),
    ("HMD_Nokia_8.3_5G_hdr.heif (Colmenar Viejo)", 40.6629935, -3.76374051, Some("Colmenar Viejo"), Some("Madrid"), Some("ES")),
    ("Kodak_CX7530.jpg (Nakuru)", -0.3713, 36.0564167, Some("Nakuru"), None, Some("KE")),
    ("iphone_hdr_NO.jpg (Madrid)", 40.4469722, -3.7247528, Some("Madrid"), Some("Madrid"), Some("ES")),
    ("HMD_Nokia_8.3_5G.jpg (Helsinki)", 60.1467056, 24.9067722, Some("Helsinki"), Some("Uusimaa"), Some("FI")),
    ("67-0_length_string.jpg (Gummersbach)", 51.025, 7.5919444, Some("Gummersbach"), Some("North Rhine-Westphalia"), Some("DE")),
    // Continents, border towns, islands.
    ("Strasbourg cathedral (FR side of the Rhine)", 48.5818, 7.7509, Some("Strasbourg"), None, Some("FR")),
    ("Kehl (DE side of the Rhine)", 48.5727, 7.8156, Some("Kehl"), Some("Baden-Wurttemberg"), Some("DE")),
    ("Basel Münster", 47.5566, 7.5929, Some("Basel"), None, Some("CH")),
    ("El Paso", 31.7587, -106.4869, Some("El Paso"), Some("Texas"), Some("US")),
    ("Ciudad Juárez", 31.7387, -106.4870, Some("Ciudad Juárez"), None, Some("MX")),
    ("Windsor, Ontario", 42.3149, -83.0364, Some("Windsor"), Some("Ontario"), Some("CA")),
    ("Sydney Opera House", -33.8568, 151.2153, Some("Sydney"), Some("New South Wales"), Some("AU")),
    ("Tokyo Tower", 35.6586, 139.7454, Some("Tokyo"), Some("Tokyo"), Some("JP")),
    ("Copacabana, Rio", -22.9711, -43.1822, Some("Rio de Janeiro"), None, Some("BR")),
    ("Obelisco, Buenos Aires", -34.6037, -58.3816, Some("Buenos Aires"), None, Some("AR")),
    ("Cape Town city centre", -33.9249, 18.4241, Some("Cape Town"), Some("Western Cape"), Some("ZA")),
    ("Red Square, Moscow", 55.7539, 37.6208, Some("Moscow"), None, Some("RU")),
    ("Gateway of India, Mumbai", 18.9220, 72.8347, Some("Mumbai"), Some("Maharashtra"), Some("IN")),
    ("Sky Tower, Auckland", -36.8485, 174.7622, Some("Auckland"), Some("Auckland"), Some("NZ")),
    ("Ushuaia", -54.8019, -68.3030, Some("Ushuaia"), None, Some("AR")),
    ("Hallgrímskirkja, Reykjavík", 64.1417, -21.9266, Some("Reykjavík"), None, Some("IS")),
    ("Waikiki, Honolulu (island)", 21.2765, -157.8271, Some("Honolulu"), Some("Hawaii"), Some("US")),
    ("Palma, Mallorca (island)", 39.5696, 2.6502, Some("Palma"), Some("Balearic Islands"), Some("ES")),
    ("Funchal, Madeira (island)", 32.6496, -16.9086, Some("Funchal"), None, Some("PT")),
    ("Marina Bay, Singapore", 1.2834, 103.8607, Some("Singapore"), None, Some("SG")),
    ("Zócalo, Mexico City", 19.4326, -99.1332, Some("Mexico City"), None, Some("MX")),
    ("Edinburgh Castle", 55.9486, -3.1999, Some("Edinburgh"), Some("Scotland"), Some("GB")),
    ("Monaco", 43.7384, 7.4246, Some("Monaco"), None, Some("MC")),
    ("St Peter's Square (Vatican)", 41.9022, 12.4573, None, None, Some("VA")),
    ("Vancouver", 49.2827, -123.1207, Some("Vancouver"), Some("British Columbia"), Some("CA")),
];

fn facts(lat: f64, lon: f64) -> Vec<Fact> {
    vec![
        Fact { key: "gps_latitude".into(), value: Value::Float(lat) },
        Fact { key: "gps_longitude".into(), value: Value::Float(lon) },
    ]
}

/// The nearest GeoNames place of any country, as Immich and the
/// `reverse_geocoder` crate name a point: the baseline this stage must beat.
fn nearest_point(lat: f64, lon: f64) -> Option<Named> {
    let mut best: Option<(f64, table::Place)> = None;
    table::each_near(lat, lon, 1.0, 1.0 / lat.to_radians().cos().max(0.05), |p| {
        let d = places::distance_km(lat, lon, p.lat, p.lon);
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, p));
        }
    });
    best.map(|(_, p)| Named {
        city: Some(p.name().to_owned()),
        region: Some(p.region().to_owned()),
        country: p.country().to_owned(),
        country_code: p.country_code().to_owned(),
    })
}

/// (checks, agreeing checks, disagreements) of `f` over [`POINTS`].
fn agreement(f: impl Fn(f64, f64) -> Option<Named>) -> (usize, usize, Vec<String>) {
    let (mut checks, mut agree, mut wrong) = (0, 0, Vec::new());
    for &(what, lat, lon, city, region, cc) in POINTS {
        let got = f(lat, lon);
        let g = got.as_ref();
        for (field, want, have) in [
            ("city", city, g.and_then(|n| n.city.as_deref())),
            ("region", region, g.and_then(|n| n.region.as_deref())),
            ("country", cc, g.map(|n| n.country_code.as_str())),
        ] {
            let Some(want) = want else { continue };
            checks += 1;
            if have == Some(want) {
                agree += 1;
            } else {
                wrong.push(format!("{what} ({lat}, {lon}): {field} {have:?}, expected {want:?}"));
            }
        }
        println!("{what}: {got:?}");
    }
    (checks, agree, wrong)
}

/// Every hand-checked point: prints the agreement, fails on any disagreement.
#[test]
fn hand_checked_points() {
    let s = Settings::default();
    let (checks, agree, wrong) = agreement(|lat, lon| locate(lat, lon, &s));
    println!("agreement: {agree}/{checks} checks over {} points", POINTS.len());
    assert!(wrong.is_empty(), "{} of {checks} checks disagree:\n{}", wrong.len(), wrong.join("\n"));
}

/// The same points named by the nearest place: this stage must do clearly better.
#[test]
fn beats_the_nearest_point() {
    let s = Settings::default();
    let (checks, ours, _) = agreement(|lat, lon| locate(lat, lon, &s));
    let (_, nearest, wrong) = agreement(nearest_point);
    println!("nearest point: {nearest}/{checks}; this stage: {ours}/{checks}\n{}", wrong.join("\n"));
    assert!(ours >= nearest + 10, "this stage ({ours}/{checks}) is not clearly better than the nearest point ({nearest}/{checks})");
}

#[test]
fn atlantic_and_pacific_name_nothing() {
    let s = Settings::default();
    // (0, -30) is inside Brazil's maritime boundary in the OSM data, ~500 km from any Brazilian place.
    assert_eq!(locate(0.0, -30.0, &s), None);
    assert_eq!(locate(-30.0, -140.0, &s), None);
    assert_eq!(locate(45.0, -35.0, &s), None);
}

#[test]
fn nearest_point_would_be_wrong() {
    // The cases where the nearest GeoNames point is another town or country.
    let s = Settings::default();
    assert_eq!(locate(48.48703, 13.43796, &s).unwrap().country_code, "DE", "Vornbach is not in Austria");
    assert_ne!(locate(48.8584, 2.2945, &s).unwrap().city.as_deref(), Some("Neuilly-sur-Seine"));
}

/// The one-cell reader gives the same ids as the crate's full raster.
#[test]
fn one_cell_reader_matches_the_whole_raster() {
    let all = country_boundaries::CountryBoundaries::from_reader(country_boundaries::BOUNDARIES_ODBL_360X180).unwrap();
    // A deterministic spread of points (no RNG crate): a Weyl sequence.
    let (mut a, mut b) = (0.5f64, 0.25f64);
    let mut nonempty = 0;
    for _ in 0..20_000 {
        a = (a + 0.618_033_988_749_895) % 1.0;
        b = (b + 0.754_877_666_246_693) % 1.0;
        let (lat, lon) = (-89.9 + 179.8 * a, -180.0 + 360.0 * b);
        let mut want: Vec<String> = all.ids(country_boundaries::LatLon::new(lat, lon).unwrap()).into_iter().map(str::to_owned).collect();
        let mut got = boundaries::ids(lat, lon);
        want.sort();
        got.sort();
        assert_eq!(got, want, "at {lat}, {lon}");
        nonempty += usize::from(!got.is_empty());
    }
    assert!(nonempty > 5000, "only {nonempty} of 20000 points were on land: the comparison tested nothing");
}

/// A JPEG's input carrying these facts.
fn with_facts(facts: &[Fact]) -> Input {
    facts.iter().cloned().fold(Input::new(Vec::new()).content_type("image/jpeg"), Input::fact)
}

#[test]
fn run_emits_the_four_facts() {
    let f = facts(43.4674483, 11.8851267);
    let out = run(&with_facts(&f)).unwrap();
    let got: Vec<(&str, &Value)> = out.facts.iter().map(|f| (f.key.as_str(), &f.value)).collect();
    assert_eq!(
        got,
        [
            ("place_city", &Value::Text("Arezzo".into())),
            ("place_region", &Value::Text("Tuscany".into())),
            ("place_country", &Value::Text("Italy".into())),
            ("place_country_code", &Value::Text("IT".into())),
        ]
    );
}

#[test]
fn no_gps_no_facts_and_bad_config_fails() {
    let none = run(&Input::new(Vec::new()).content_type("image/png")).unwrap();
    assert!(none.facts.is_empty());
    let f = facts(48.8584, 2.2945);
    let bad = [("city_km".to_string(), "far".to_string())];
    match run(&with_facts(&f).with_config(&bad[..])) {
        Err(StageError::Failed(m)) => assert!(m.contains("city_km"), "{m}"),
        other => panic!("expected failed, got {other:?}"),
    }
    // A tighter city radius still names the country.
    let near = [("city_km".to_string(), "1".to_string())];
    let out = run(&with_facts(&f).with_config(&near[..])).unwrap();
    assert!(out.facts.iter().any(|f| f.key == "place_country_code"));
}
