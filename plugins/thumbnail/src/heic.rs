//! HEIC/HEIF decoding for the thumbnail stage, on `heifer` (pure Rust, MIT OR
//! Apache-2.0): grid (tiled) images, `clap`/`irot`/`imir`, 8- to 12-bit HEVC.
//!
//! Orientation: the container's `irot`/`imir` are applied by the decoder, and
//! the EXIF orientation a HEIF file carries is informative only (HEIF/MIAF:
//! readers must not apply it again; iPhones write `6` beside `irot 270`), so
//! callers must not rotate these images a second time.
//!
//! Colour: the decoder yields the file's own code values. iPhone photos are
//! Display P3 (an ICC profile in `colr`), and browsers and CLIP expect sRGB,
//! so [`Colour`] converts each rendition after it is resized: the same
//! result as converting the full picture to within rounding (both sides are
//! gamma-encoded), at a fraction of the pixels.

use moxcms::{
    CicpColorPrimaries, CicpProfile, ColorProfile, Layout, MatrixCoefficients, RenderingIntent,
    TransferCharacteristics, TransformOptions,
};

use crate::orient::Rgb;
use crate::{MAX_JPEG_PIXELS, ThumbError};

use heifer::heifer_isobmff::HeifFile;
use heifer::heifer_isobmff::boxes::{ColorInfo, Property};

/// Whether `bytes` is an ISO-BMFF file (HEIF, HEIC, AVIF): an `ftyp` box first.
pub fn is_heif(bytes: &[u8]) -> bool {
    bytes.len() >= 12 && &bytes[4..8] == b"ftyp"
}

/// A decoded HEIF picture, upright, and how to bring its renditions to sRGB.
pub struct Decoded {
    /// RGB8 in the file's colour space, transforms applied, alpha over white.
    pub rgb: Rgb,
    /// The conversion to sRGB (`None`: already sRGB, or left as coded).
    pub colour: Option<Colour>,
    /// Notes for the stage's warnings (e.g. an HDR transfer left as coded).
    pub warnings: Vec<String>,
}

/// Decodes the primary image of a HEIF file. AVIF (AV1) and other codecs
/// come back as [`ThumbError::Unsupported`]; damaged files as `Corrupt`.
pub fn decode(bytes: &[u8]) -> Result<Decoded, ThumbError> {
    if is_avif(bytes) {
        return Err(ThumbError::Unsupported(
            "thumbnails for AVIF are not supported yet (AV1 is another codec than HEIC's HEVC)"
                .into(),
        ));
    }
    let file = HeifFile::parse(bytes)
        .map_err(|e| ThumbError::Corrupt(format!("the HEIF container could not be read: {e}")))?;
    let mut warnings = Vec::new();
    let colour = match colour_of(&file) {
        Ok(c) => c,
        Err(note) => {
            warnings.push(note);
            None
        }
    };
    // One thread: the stage runs in WASM, where there are none to spare, and
    // the same call natively keeps tests and benchmarks comparable.
    let options = heifer::Options {
        max_threads: 1,
        max_pixels: MAX_JPEG_PIXELS,
    };
    let img = heifer::decode_rgba8(bytes, &options).map_err(|e| match e {
        heifer::Error::Unsupported(what) => ThumbError::Unsupported(format!(
            "thumbnails for this HEIF file are not supported: it uses {what}"
        )),
        other => ThumbError::Corrupt(format!("the HEIF image could not be decoded: {other}")),
    })?;
    let (w, h) = (img.width, img.height);
    let n = w as usize * h as usize;
    if w == 0 || h == 0 || img.data.len() < n * 4 {
        return Err(ThumbError::Corrupt(
            "the HEIF image decoded to fewer pixels than it declares".into(),
        ));
    }
    let mut data = Vec::with_capacity(n * 3);
    for p in img.data.chunks_exact(4) {
        if img.has_alpha {
            // JPEG has no alpha: composite over white, as viewers show it.
            let a = p[3] as u32;
            for &c in &p[..3] {
                data.push(((c as u32 * a + 255 * (255 - a) + 127) / 255) as u8);
            }
        } else {
            data.extend_from_slice(&p[..3]);
        }
    }
    Ok(Decoded {
        rgb: Rgb {
            width: w,
            height: h,
            data,
        },
        colour,
        warnings,
    })
}

/// AVIF by its brands (major or compatible), as the validate stage tells it.
fn is_avif(bytes: &[u8]) -> bool {
    let size = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let end = size.clamp(12, bytes.len().min(4096));
    let brand = |b: &[u8]| b == b"avif" || b == b"avis";
    brand(&bytes[8..12]) || bytes[16.min(end)..end].chunks_exact(4).any(brand)
}

/// A conversion of RGB8 renditions to sRGB.
pub struct Colour {
    /// What is converted from, for logs and tests (e.g. `ICC profile "Display P3"`).
    pub source: String,
    transform: std::sync::Arc<moxcms::Transform8BitExecutor>,
}

impl Colour {
    /// Converts `img` in place.
    pub fn apply(&self, img: &mut Rgb) -> Result<(), ThumbError> {
        let mut out = vec![0u8; img.data.len()];
        self.transform
            .transform(&img.data, &mut out)
            .map_err(|e| ThumbError::Internal(format!("colour conversion to sRGB failed: {e}")))?;
        img.data = out;
        Ok(())
    }

    fn to_srgb(source: String, profile: &ColorProfile) -> Result<Colour, String> {
        let options = TransformOptions {
            // Matrix/TRC profiles (Display P3) have one intent; for LUT
            // profiles this is what viewers use for photos.
            rendering_intent: RenderingIntent::Perceptual,
            ..TransformOptions::default()
        };
        let transform = profile
            .create_transform_8bit(Layout::Rgb, &ColorProfile::new_srgb(), Layout::Rgb, options)
            .map_err(|e| {
                format!("{source} cannot be converted to sRGB ({e}); colours left as coded")
            })?;
        Ok(Colour { source, transform })
    }
}

/// The colour conversion the primary image needs: from its ICC profile when
/// it has one, else from wide-gamut `nclx` primaries. `Err` is a warning:
/// the picture is still usable as coded.
fn colour_of(file: &HeifFile<'_>) -> Result<Option<Colour>, String> {
    let id = file.primary_id;
    // A grid's colour properties may sit on its first tile only.
    let first_tile = file.referenced_items(id, b"dimg").first().copied();
    let items = std::iter::once(id).chain(first_tile);
    let mut nclx = None;
    for item in items {
        let Ok(props) = file.item_properties(item) else {
            continue;
        };
        for p in props {
            match p {
                Property::Color(ColorInfo::Icc(icc)) => {
                    let profile = ColorProfile::new_from_slice(icc).map_err(|e| {
                        format!("the embedded ICC profile could not be read ({e}); colours left as coded")
                    })?;
                    if is_srgb(&profile) {
                        return Ok(None);
                    }
                    let name = profile_name(&profile);
                    return Colour::to_srgb(format!("ICC profile {name:?}"), &profile).map(Some);
                }
                Property::Color(ColorInfo::Nclx {
                    primaries,
                    transfer,
                    ..
                }) if nclx.is_none() => nclx = Some((*primaries, *transfer)),
                _ => {}
            }
        }
    }
    match nclx {
        Some((primaries, transfer)) => nclx_colour(primaries, transfer),
        None => Ok(None),
    }
}

/// `nclx` policy. Primaries 1/2 (BT.709, unspecified) are sRGB's; 5 and 6
/// (BT.601 625/525) differ from them by under 0.02 in green xy and are what
/// phone encoders write out of JPEG habit beside the BT.601 matrix (the HMD
/// Nokia sample), so they are left as coded, as libheif, vips and browsers
/// show them. Wide gamuts (BT.2020 9, P3 11/12) are converted. SDR transfer
/// codes (BT.709, BT.601, sRGB, BT.2020) are taken as the display's sRGB
/// curve, which is how such stills are viewed; PQ and HLG are HDR and would
/// need tone mapping, so they are left as coded with a warning.
pub fn nclx_colour(primaries: u16, transfer: u16) -> Result<Option<Colour>, String> {
    let cicp_primaries = match primaries {
        1 | 2 | 5 | 6 => return Ok(None),
        9 => CicpColorPrimaries::Bt2020,
        11 => CicpColorPrimaries::Smpte431,
        12 => CicpColorPrimaries::Smpte432,
        other => {
            return Err(format!(
                "nclx colour primaries {other} are not converted to sRGB; colours left as coded"
            ));
        }
    };
    match transfer {
        0..=2 | 6 | 13..=15 => {}
        16 | 18 => {
            return Err(format!(
                "the image is HDR (nclx transfer {transfer}); renditions are not tone-mapped"
            ));
        }
        other => {
            return Err(format!(
                "nclx transfer {other} is not converted to sRGB; colours left as coded"
            ));
        }
    }
    let profile = ColorProfile::new_from_cicp(CicpProfile {
        color_primaries: cicp_primaries,
        transfer_characteristics: TransferCharacteristics::Srgb,
        matrix_coefficients: MatrixCoefficients::Bt709,
        full_range: true,
    });
    Colour::to_srgb(format!("nclx primaries {primaries}"), &profile).map(Some)
}

/// Whether a profile is sRGB already, by its description (the common case of
/// an embedded sRGB profile, which needs no work).
fn is_srgb(profile: &ColorProfile) -> bool {
    profile_name(profile)
        .to_ascii_lowercase()
        .starts_with("srgb")
}

/// The profile's English description, or empty.
fn profile_name(profile: &ColorProfile) -> String {
    use moxcms::ProfileText;
    match &profile.description {
        Some(ProfileText::PlainString(s)) => s.clone(),
        Some(ProfileText::Localizable(l)) => l.first().map(|s| s.value.clone()).unwrap_or_default(),
        Some(ProfileText::Description(d)) => d.ascii_string.clone(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avif_is_told_by_major_or_compatible_brand() {
        let mut f = b"\0\0\0\x18ftypavif\0\0\0\0mif1".to_vec();
        assert!(is_avif(&f));
        f[8..12].copy_from_slice(b"mif1");
        f[16..20].copy_from_slice(b"avif");
        assert!(is_avif(&f));
        f[16..20].copy_from_slice(b"heic");
        assert!(!is_avif(&f));
    }

    #[test]
    fn nclx_policy_converts_wide_gamuts_only() {
        assert!(nclx_colour(1, 13).unwrap().is_none());
        assert!(nclx_colour(5, 1).unwrap().is_none());
        assert!(nclx_colour(12, 13).unwrap().is_some());
        assert!(nclx_colour(9, 1).unwrap().is_some());
        assert!(nclx_colour(9, 16).is_err());
        // P3 red converts to a clipped sRGB red; grey stays grey.
        let c = nclx_colour(12, 13).unwrap().unwrap();
        let mut img = Rgb {
            width: 2,
            height: 1,
            data: vec![255, 0, 0, 128, 128, 128],
        };
        c.apply(&mut img).unwrap();
        assert_eq!(img.data[0], 255);
        assert!(img.data[1] == 0 && img.data[2] == 0, "{:?}", img.data);
        for v in &img.data[3..] {
            assert!((*v as i32 - 128).abs() <= 1, "{:?}", img.data);
        }
    }
}
