//! `clip_embed`: maps text into the image descriptor's space by a fixed rule.
//!
//! This is **not** semantic search. The rule:
//! 1. Text is lower-cased and split into words (letters and digits).
//! 2. A colour word (see [`colour_of`]: colour names, `light`/`bright`, `dark`,
//!    and a few fixed associations such as `sky`→blue, `forest`→green,
//!    `snow`→white, `sunset`→orange) contributes what a uniform image of that
//!    colour would have: every colour-layout cell set to the colour's Lab value
//!    and its colour-histogram bin set to 1. Several colour words are averaged.
//! 3. Every other word is hashed (FNV-1a) to one of the 128 text-only dims
//!    (384..512) with a ± sign. Images are always 0 there, so such words do not
//!    change which images rank first; they only keep different queries distinct.
//! 4. The vector is weighted and L2-normalised like an image's.
//!
//! So "blue" ranks blue photos first, "dark green" dark green ones, and "cat"
//! matches nothing in particular (every image scores 0).

use crate::descriptor::{self, DIM, HIST, LAYOUT, LAYOUT_GRID, TEXT_ONLY};

/// The sRGB colour a word stands for, if it is a colour word.
pub fn colour_of(word: &str) -> Option<[u8; 3]> {
    Some(match word {
        "red" | "crimson" | "scarlet" => [200, 30, 30],
        "orange" | "sunset" | "sunrise" => [240, 140, 20],
        "yellow" | "gold" | "golden" => [240, 210, 40],
        "green" | "forest" | "grass" | "leaves" | "leaf" => [40, 140, 50],
        "cyan" | "turquoise" | "teal" => [40, 190, 200],
        "blue" | "sky" | "sea" | "ocean" => [40, 90, 200],
        "purple" | "violet" | "magenta" => [120, 40, 150],
        "pink" => [240, 150, 190],
        "brown" => [110, 70, 40],
        "black" | "night" => [12, 12, 12],
        "white" | "snow" => [245, 245, 245],
        "grey" | "gray" => [128, 128, 128],
        "bright" | "light" => [225, 225, 225],
        "dark" => [35, 35, 35],
        _ => return None,
    })
}

/// Why a text could not be embedded.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// Payload is not UTF-8.
    #[error("text payload is not UTF-8")]
    NotUtf8,
    /// No words at all.
    #[error("text has no words")]
    Empty,
}

/// Embeds a UTF-8 text payload by the rule in the module docs.
pub fn embed_text(payload: &[u8]) -> Result<Vec<f32>, TextError> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| TextError::NotUtf8)?
        .to_lowercase();
    let words: Vec<&str> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    if words.is_empty() {
        return Err(TextError::Empty);
    }
    let mut v = vec![0f32; DIM];
    let colours: Vec<[u8; 3]> = words.iter().filter_map(|w| colour_of(w)).collect();
    for rgb in &colours {
        let values = descriptor::layout_values(descriptor::srgb_to_lab(*rgb));
        for cell in 0..LAYOUT_GRID * LAYOUT_GRID {
            for (c, value) in values.iter().enumerate() {
                v[LAYOUT.start + cell * 3 + c] += value / colours.len() as f32;
            }
        }
        v[HIST.start + descriptor::hist_bin(*rgb)] += 1.0;
    }
    for w in words.iter().filter(|w| colour_of(w).is_none()) {
        let h = fnv1a(w.as_bytes());
        let dim = TEXT_ONLY.start + (h % TEXT_ONLY.len() as u64) as usize;
        v[dim] += if (h >> 32) & 1 == 0 { 1.0 } else { -1.0 };
    }
    // A word that hashes to +1 and one to -1 in the same dim could cancel out: keep the vector non-zero.
    if v.iter().all(|x| *x == 0.0) {
        v[TEXT_ONLY.start] = 1.0;
    }
    descriptor::finish(&mut v, 0.0);
    Ok(v)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
