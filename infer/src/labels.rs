//! Labels from simple image statistics (`smart_classify`).
//!
//! Nothing here recognises objects. Labels describe tone and colour: `bright`,
//! `dark`, `colourful`, `monochrome`, `high-contrast`, `low-contrast`,
//! `detailed`, `smooth`, `warm`, `cool`, and colour names (`blue`, `green`, …)
//! scored by the fraction of the image they cover. Scores are in [0, 1].

use crate::descriptor::Stats;

/// Value of meta `source` on `smart_classify` answers.
pub const SOURCE: &str = "lumilio-infer-stats";

/// Named colours, in the order of [`Stats::colour_fractions`].
pub const COLOUR_NAMES: [&str; 12] = [
    "black", "white", "grey", "red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink",
    "brown",
];

/// One label and its score.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Label {
    /// Label text.
    pub label: String,
    /// Score in [0, 1].
    pub score: f32,
}

/// Index into [`COLOUR_NAMES`] of a CIE Lab colour.
///
/// Hue ranges are in Lab hue angle (sRGB red ≈ 40°, yellow ≈ 102°, green ≈ 136°,
/// cyan ≈ 196°, blue ≈ 306°, magenta ≈ 328°).
pub fn colour_index([l, a, b]: [f32; 3]) -> usize {
    let idx = |name: &str| {
        COLOUR_NAMES
            .iter()
            .position(|n| *n == name)
            .expect("known colour")
    };
    let chroma = (a * a + b * b).sqrt();
    if chroma < 12.0 {
        return idx(if l < 20.0 {
            "black"
        } else if l > 85.0 {
            "white"
        } else {
            "grey"
        });
    }
    let hue = b.atan2(a).to_degrees().rem_euclid(360.0);
    let name = match hue {
        h if !(55.0..350.0).contains(&h) => {
            if l > 65.0 {
                "pink"
            } else if l < 35.0 && chroma < 40.0 {
                "brown"
            } else {
                "red"
            }
        }
        h if h < 85.0 => {
            if l < 50.0 {
                "brown"
            } else {
                "orange"
            }
        }
        h if h < 115.0 => {
            if l < 45.0 {
                "brown"
            } else {
                "yellow"
            }
        }
        h if h < 175.0 => "green",
        h if h < 240.0 => "cyan",
        h if h < 320.0 => "blue",
        _ => {
            if l > 65.0 {
                "pink"
            } else {
                "purple"
            }
        }
    };
    idx(name)
}

fn ramp(x: f32, from: f32, to: f32) -> f32 {
    ((x - from) / (to - from)).clamp(0.0, 1.0)
}

/// All labels with a score above zero, best first.
pub fn all_labels(s: &Stats) -> Vec<Label> {
    let mut out: Vec<Label> = vec![
        ("bright", ramp(s.mean_lightness, 55.0, 85.0)),
        ("dark", ramp(s.mean_lightness, 45.0, 15.0)),
        ("colourful", ramp(s.colourfulness, 15.0, 50.0)),
        ("monochrome", ramp(s.colourfulness, 10.0, 2.0)),
        ("high-contrast", ramp(s.lightness_std, 18.0, 35.0)),
        ("low-contrast", ramp(s.lightness_std, 10.0, 3.0)),
        ("detailed", ramp(s.edge_density, 8.0, 25.0)),
        ("smooth", ramp(s.edge_density, 4.0, 1.0)),
        ("warm", s.warm),
        ("cool", s.cool),
    ]
    .into_iter()
    .map(|(label, score)| Label {
        label: label.to_owned(),
        score,
    })
    .collect();
    // A colour covering half the image or more is a certain label.
    out.extend(
        COLOUR_NAMES
            .iter()
            .zip(&s.colour_fractions)
            .map(|(name, frac)| Label {
                label: (*name).to_owned(),
                score: (frac * 2.0).min(1.0),
            }),
    );
    out.retain(|l| l.score > 0.0);
    // Stable order for equal scores, so answers are deterministic.
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.label.cmp(&b.label))
    });
    for l in &mut out {
        l.score = (l.score * 1000.0).round() / 1000.0;
    }
    out
}

/// The `topk` best labels.
pub fn top_labels(s: &Stats, topk: usize) -> Vec<Label> {
    let mut all = all_labels(s);
    all.truncate(topk);
    all
}
