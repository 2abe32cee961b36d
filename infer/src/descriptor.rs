//! The image descriptor: a deterministic, hand-made 512-dimensional vector.
//!
//! It is **not** a neural CLIP embedding. It describes how an image looks
//! (where its colours are, which colours it has, where its edges run), so that
//! re-encoded or resized copies and similar-looking photos are close in cosine
//! distance, while unrelated photos are further apart. It knows nothing of
//! what the photo shows.
//!
//! Layout of the vector (blocks weighted as described at [`finish`], then the
//! whole vector L2-normalised):
//!
//! | dims      | block | content |
//! | --------- | ----- | ------- |
//! | 0..192    | colour layout | 8×8 grid × mean CIE Lab (L centred at 50, scaled to about ±1) |
//! | 192..256  | colour histogram | 4×4×4 RGB bins, square-rooted fractions (Hellinger) |
//! | 256..384  | edge layout | 4×4 grid × 8 gradient-orientation bins, magnitude-weighted |
//! | 384..512  | text only | always 0 for images; `clip_embed` hashes non-colour words here |

use image::{DynamicImage, RgbImage, imageops::FilterType};

/// Length of every vector this server returns.
pub const DIM: usize = 512;
/// Colour layout: 8×8 cells × (L, a, b).
pub const LAYOUT_GRID: usize = 8;
/// Start and end of the colour layout block.
pub const LAYOUT: std::ops::Range<usize> = 0..192;
/// Colour histogram bins per RGB channel.
pub const HIST_BINS: usize = 4;
/// Start and end of the colour histogram block.
pub const HIST: std::ops::Range<usize> = 192..256;
/// Edge layout: 4×4 cells.
pub const EDGE_GRID: usize = 4;
/// Gradient orientation bins over 0..180°.
pub const EDGE_BINS: usize = 8;
/// Start and end of the edge block.
pub const EDGES: std::ops::Range<usize> = 256..384;
/// Dims that images leave at zero and text uses for words with no colour meaning.
pub const TEXT_ONLY: std::ops::Range<usize> = 384..512;

/// Relative weight of each block in the final vector: layout dominates because
/// it is the most specific; edges add structure without swamping colour.
pub const W_LAYOUT: f32 = 1.0;
/// Weight of the colour histogram block.
pub const W_HIST: f32 = 0.8;
/// Weight of the edge block (at full edge strength).
pub const W_EDGES: f32 = 0.6;
/// Weight of the text-only block.
pub const W_TEXT: f32 = 1.0;
/// Mean Sobel magnitude (L* units) at which the edge block gets its full weight.
const EDGE_FULL: f32 = 8.0;

/// Side of the square the image is resampled to before analysis; small enough
/// to be fast and to smooth away JPEG noise, large enough for an 8×8 layout.
const WORK: u32 = 64;

/// Everything the server derives from one image: its vector and the statistics the labels use.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// The 512-d, L2-normalised descriptor.
    pub vector: Vec<f32>,
    /// Per-pixel statistics of the working copy.
    pub stats: Stats,
}

/// Image statistics for labels.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Mean CIE L* (0..100).
    pub mean_lightness: f32,
    /// Standard deviation of L* (contrast).
    pub lightness_std: f32,
    /// Hasler–Süsstrunk colourfulness (0 for grey, about 100+ for vivid images).
    pub colourfulness: f32,
    /// Mean gradient magnitude of lightness (detail).
    pub edge_density: f32,
    /// Fraction of pixels per named colour, in [`crate::labels::COLOUR_NAMES`] order.
    pub colour_fractions: Vec<f32>,
    /// Chroma-weighted fraction of warm hues (reds to yellows).
    pub warm: f32,
    /// Chroma-weighted fraction of cool hues (cyans to blues).
    pub cool: f32,
}

/// Why an image could not be analysed.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    /// Not an image in a supported format, or corrupt.
    #[error("cannot decode image ({0}); send a JPEG, PNG or WebP")]
    Decode(String),
    /// Zero-sized image.
    #[error("image has no pixels")]
    Empty,
}

/// Decodes `bytes` (JPEG, PNG or WebP, any size) with bounded memory.
pub fn decode(bytes: &[u8]) -> Result<DynamicImage, DescriptorError> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DescriptorError::Decode(e.to_string()))?;
    // A decompression bomb must fail the item, not the server.
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(16_384);
    limits.max_image_height = Some(16_384);
    limits.max_alloc = Some(512 << 20);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| DescriptorError::Decode(e.to_string()))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(DescriptorError::Empty);
    }
    Ok(img)
}

/// Decodes and analyses an encoded image.
pub fn analyse_bytes(bytes: &[u8]) -> Result<Analysis, DescriptorError> {
    Ok(analyse(&decode(bytes)?))
}

/// Computes the descriptor and statistics of a decoded image.
pub fn analyse(img: &DynamicImage) -> Analysis {
    // Large photos: a cheap pre-shrink first, so the filtered resample stays fast.
    let img = if img.width() > 4 * WORK || img.height() > 4 * WORK {
        img.thumbnail(4 * WORK, 4 * WORK)
    } else {
        img.clone()
    };
    let rgb: RgbImage = img.to_rgb8();
    let small = image::imageops::resize(&rgb, WORK, WORK, FilterType::Triangle);
    let n = (WORK * WORK) as usize;

    let mut lab = Vec::with_capacity(n);
    for p in small.pixels() {
        lab.push(srgb_to_lab(p.0));
    }

    let mut vector = vec![0f32; DIM];

    // Colour layout: mean Lab per cell.
    let cell = (WORK as usize) / LAYOUT_GRID;
    for gy in 0..LAYOUT_GRID {
        for gx in 0..LAYOUT_GRID {
            let mut sum = [0f32; 3];
            for y in gy * cell..(gy + 1) * cell {
                for x in gx * cell..(gx + 1) * cell {
                    let v = lab[y * WORK as usize + x];
                    for c in 0..3 {
                        sum[c] += v[c];
                    }
                }
            }
            let k = (cell * cell) as f32;
            let base = LAYOUT.start + (gy * LAYOUT_GRID + gx) * 3;
            let [l, a, b] = [sum[0] / k, sum[1] / k, sum[2] / k];
            vector[base..base + 3].copy_from_slice(&layout_values([l, a, b]));
        }
    }

    // Colour histogram.
    let mut hist = [0f32; HIST_BINS * HIST_BINS * HIST_BINS];
    for p in small.pixels() {
        hist[hist_bin(p.0)] += 1.0;
    }
    for (i, h) in hist.iter().enumerate() {
        vector[HIST.start + i] = (h / n as f32).sqrt();
    }

    // Edge layout: Sobel on L*, unsigned orientation, magnitude-weighted.
    let w = WORK as usize;
    let l = |x: usize, y: usize| lab[y * w + x][0];
    let ecell = w / EDGE_GRID;
    let mut magnitude_sum = 0f32;
    for y in 1..w - 1 {
        for x in 1..w - 1 {
            let gx = (l(x + 1, y - 1) + 2.0 * l(x + 1, y) + l(x + 1, y + 1))
                - (l(x - 1, y - 1) + 2.0 * l(x - 1, y) + l(x - 1, y + 1));
            let gy = (l(x - 1, y + 1) + 2.0 * l(x, y + 1) + l(x + 1, y + 1))
                - (l(x - 1, y - 1) + 2.0 * l(x, y - 1) + l(x + 1, y - 1));
            let mag = (gx * gx + gy * gy).sqrt();
            magnitude_sum += mag;
            let angle = gy.atan2(gx).rem_euclid(std::f32::consts::PI);
            let bin =
                ((angle / std::f32::consts::PI * EDGE_BINS as f32) as usize).min(EDGE_BINS - 1);
            let cellno =
                (y / ecell).min(EDGE_GRID - 1) * EDGE_GRID + (x / ecell).min(EDGE_GRID - 1);
            vector[EDGES.start + cellno * EDGE_BINS + bin] += mag;
        }
    }

    let edge_density = magnitude_sum / ((w - 2) * (w - 2)) as f32;
    finish(&mut vector, edge_density / EDGE_FULL);
    Analysis {
        vector,
        stats: stats(&lab, edge_density),
    }
}

/// The layout block's values for one cell's mean Lab: L centred at 50, all scaled to about ±1.
pub fn layout_values([l, a, b]: [f32; 3]) -> [f32; 3] {
    [(l - 50.0) / 50.0, a / 64.0, b / 64.0]
}

/// Index of an sRGB colour in the 4×4×4 histogram.
pub fn hist_bin([r, g, b]: [u8; 3]) -> usize {
    let q = |v: u8| (v as usize * HIST_BINS) / 256;
    (q(r) * HIST_BINS + q(g)) * HIST_BINS + q(b)
}

/// Scales each block, then L2-normalises the whole vector.
///
/// The layout block keeps its absolute size (values in about ±1, scaled by
/// 1/8 for the 64 cells), so a mid-grey image has a small layout block rather
/// than amplified noise. Histogram and text blocks are unit vectors. The edge
/// block is a unit vector scaled by `edge_strength` (0..1), so a flat image's
/// few weak gradients do not count as much as a detailed image's.
pub fn finish(v: &mut [f32], edge_strength: f32) {
    v[LAYOUT]
        .iter_mut()
        .for_each(|x| *x *= W_LAYOUT / LAYOUT_GRID as f32);
    for (range, weight) in [
        (HIST, W_HIST),
        (EDGES, W_EDGES * edge_strength.clamp(0.0, 1.0)),
        (TEXT_ONLY, W_TEXT),
    ] {
        let block = &mut v[range];
        let norm = block.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 1e-12 {
            block.iter_mut().for_each(|x| *x *= weight / norm);
        }
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 1e-12 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Cosine similarity of two vectors (1 for identical directions).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// sRGB (D65) to CIE L*a*b*.
pub fn srgb_to_lab([r, g, b]: [u8; 3]) -> [f32; 3] {
    let lin = |c: u8| {
        let c = c as f32 / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let (r, g, b) = (lin(r), lin(g), lin(b));
    let x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047;
    let y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    let z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883;
    let f = |t: f32| {
        if t > 0.008856 {
            t.cbrt()
        } else {
            7.787 * t + 16.0 / 116.0
        }
    };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

fn stats(lab: &[[f32; 3]], edge_density: f32) -> Stats {
    let n = lab.len() as f32;
    let mean_l = lab.iter().map(|p| p[0]).sum::<f32>() / n;
    let var_l = lab.iter().map(|p| (p[0] - mean_l).powi(2)).sum::<f32>() / n;

    // Colourfulness on a/b (a perceptual analogue of Hasler–Süsstrunk's opponent channels).
    let mean_a = lab.iter().map(|p| p[1]).sum::<f32>() / n;
    let mean_b = lab.iter().map(|p| p[2]).sum::<f32>() / n;
    let var_a = lab.iter().map(|p| (p[1] - mean_a).powi(2)).sum::<f32>() / n;
    let var_b = lab.iter().map(|p| (p[2] - mean_b).powi(2)).sum::<f32>() / n;
    let colourfulness = (var_a + var_b).sqrt() + 0.3 * (mean_a * mean_a + mean_b * mean_b).sqrt();

    let mut fractions = vec![0f32; crate::labels::COLOUR_NAMES.len()];
    let (mut warm, mut cool, mut chroma_total) = (0f32, 0f32, 0f32);
    for p in lab {
        fractions[crate::labels::colour_index(*p)] += 1.0;
        let chroma = (p[1] * p[1] + p[2] * p[2]).sqrt();
        if chroma > 10.0 {
            let hue = p[2].atan2(p[1]).to_degrees().rem_euclid(360.0);
            chroma_total += chroma;
            // Lab hue: reds ~20-40°, yellows ~90°, greens ~135°, cyans ~200°, blues ~280-300°.
            if !(105.0..=330.0).contains(&hue) {
                warm += chroma;
            } else if (160.0..=310.0).contains(&hue) {
                cool += chroma;
            }
        }
    }
    fractions.iter_mut().for_each(|f| *f /= n);
    // Weighted by how much of the image is coloured at all, so a grey photo is neither.
    let coloured = (chroma_total / n / 30.0).min(1.0);
    let (warm, cool) = if chroma_total > 0.0 {
        (
            warm / chroma_total * coloured,
            cool / chroma_total * coloured,
        )
    } else {
        (0.0, 0.0)
    };
    Stats {
        mean_lightness: mean_l,
        lightness_std: var_l.sqrt(),
        colourfulness,
        edge_density,
        colour_fractions: fractions,
        warm,
        cool,
    }
}
