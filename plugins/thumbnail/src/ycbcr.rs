//! RGB8 rows into the Y, Cb and Cr planes `jpeg-encoder` encodes, a whole
//! row at a time. `jpeg-encoder`'s own RGB input converts 16 pixels into
//! stack arrays and appends them; here each row is converted straight into
//! the planes, 16 pixels per SIMD128 step in WASM. Every build gives the same
//! bytes as `jpeg_encoder::rgb_to_ycbcr`: the same integer formula, lane by
//! lane.

use jpeg_encoder::{ImageBuffer, JpegColorType, rgb_to_ycbcr};

/// An RGB8 image (`width * height * 3` bytes) as `jpeg-encoder` input.
pub(crate) struct RgbRows<'a> {
    /// Interleaved R, G, B rows, top to bottom.
    pub data: &'a [u8],
    /// Pixels per row.
    pub width: u16,
    /// Rows.
    pub height: u16,
}

impl ImageBuffer for RgbRows<'_> {
    fn get_jpeg_color_type(&self) -> JpegColorType {
        JpegColorType::Ycbcr
    }

    fn width(&self) -> u16 {
        self.width
    }

    fn height(&self) -> u16 {
        self.height
    }

    fn fill_buffers(&self, y: u16, buffers: &mut [Vec<u8>; 4]) {
        let w = usize::from(self.width);
        let line = &self.data[usize::from(y) * w * 3..][..w * 3];
        let [luma, blue, red, _] = buffers;
        let grow = |v: &mut Vec<u8>| {
            let at = v.len();
            v.resize(at + w, 0);
            at
        };
        let (a, b, c) = (grow(luma), grow(blue), grow(red));
        convert(line, &mut luma[a..], &mut blue[b..], &mut red[c..]);
    }
}

/// Converts `rgb` (3 bytes a pixel) into the first `rgb.len() / 3` bytes of
/// `y`, `cb` and `cr`.
fn convert(rgb: &[u8], y: &mut [u8], cb: &mut [u8], cr: &mut [u8]) {
    let done = simd::convert(rgb, y, cb, cr);
    for (i, p) in rgb.chunks_exact(3).enumerate().skip(done) {
        (y[i], cb[i], cr[i]) = rgb_to_ycbcr(p[0], p[1], p[2]);
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd {
    use core::arch::wasm32::*;

    /// Pixels per step: three 16-byte loads.
    const STEP: usize = 16;

    /// Byte indices that gather channel `c` of pixels 0..16 from the `k`th
    /// 16 bytes of a 48-byte step (255 = not in that vector: swizzle gives 0).
    fn gather(c: usize, k: usize) -> v128 {
        let mut idx = [255u8; 16];
        for (p, slot) in idx.iter_mut().enumerate() {
            let at = 3 * p + c;
            if (16 * k..16 * k + 16).contains(&at) {
                *slot = (at - 16 * k) as u8;
            }
        }
        u8x16(
            idx[0], idx[1], idx[2], idx[3], idx[4], idx[5], idx[6], idx[7], idx[8], idx[9],
            idx[10], idx[11], idx[12], idx[13], idx[14], idx[15],
        )
    }

    /// 16 bytes of `s` from `at` as a vector.
    #[inline(always)]
    fn load(s: &[u8], at: usize) -> v128 {
        let b: &[u8; 16] = s[at..at + 16].try_into().expect("16 bytes");
        // SAFETY: `b` is 16 readable bytes; v128_load has no alignment need.
        unsafe { v128_load(b.as_ptr().cast()) }
    }

    /// Writes `v` to `s[at..at + 16]`.
    #[inline(always)]
    fn store(s: &mut [u8], at: usize, v: v128) {
        let b: &mut [u8; 16] = (&mut s[at..at + 16]).try_into().expect("16 bytes");
        // SAFETY: `b` is 16 writable bytes; v128_store has no alignment need.
        unsafe { v128_store(b.as_mut_ptr().cast(), v) }
    }

    /// `(k[0] * R + k[1] * G + k[2] * B + bias + 0x7FFF) >> 16` for four
    /// pixels (`p` = their R, G, B lanes): `rgb_to_ycbcr`'s formula.
    #[inline(always)]
    fn dot(p: [v128; 3], k: [i32; 3], bias: i32) -> v128 {
        let s = i32x4_add(
            i32x4_add(
                i32x4_mul(p[0], i32x4_splat(k[0])),
                i32x4_mul(p[1], i32x4_splat(k[1])),
            ),
            i32x4_add(
                i32x4_mul(p[2], i32x4_splat(k[2])),
                i32x4_splat(bias + 0x7FFF),
            ),
        );
        i32x4_shr(s, 16)
    }

    /// Converts whole steps of 16 pixels; returns how many pixels it did.
    pub(super) fn convert(rgb: &[u8], y: &mut [u8], cb: &mut [u8], cr: &mut [u8]) -> usize {
        let steps = rgb.len() / (3 * STEP);
        let idx: [[v128; 3]; 3] = core::array::from_fn(|c| core::array::from_fn(|k| gather(c, k)));
        for s in 0..steps {
            let at = s * 3 * STEP;
            let v = [load(rgb, at), load(rgb, at + 16), load(rgb, at + 32)];
            // Each channel of the 16 pixels, then widened to four i32x4.
            let ch: [v128; 3] = core::array::from_fn(|c| {
                v128_or(
                    v128_or(
                        i8x16_swizzle(v[0], idx[c][0]),
                        i8x16_swizzle(v[1], idx[c][1]),
                    ),
                    i8x16_swizzle(v[2], idx[c][2]),
                )
            });
            // Pixels 4q..4q + 4 of one channel as i32 lanes.
            let widen = |v: v128, q: usize| match q {
                0 => u32x4_extend_low_u16x8(u16x8_extend_low_u8x16(v)),
                1 => u32x4_extend_high_u16x8(u16x8_extend_low_u8x16(v)),
                2 => u32x4_extend_low_u16x8(u16x8_extend_high_u8x16(v)),
                _ => u32x4_extend_high_u16x8(u16x8_extend_high_u8x16(v)),
            };
            let quarter = |q: usize| -> [v128; 3] { core::array::from_fn(|c| widen(ch[c], q)) };
            let q = [quarter(0), quarter(1), quarter(2), quarter(3)];
            // The results are 0..=255, so the saturating narrows are exact.
            let pack = |k: [i32; 3], bias: i32| {
                let d: [v128; 4] = core::array::from_fn(|i| dot(q[i], k, bias));
                u8x16_narrow_i16x8(
                    i16x8_narrow_i32x4(d[0], d[1]),
                    i16x8_narrow_i32x4(d[2], d[3]),
                )
            };
            let o = s * STEP;
            store(y, o, pack([19595, 38470, 7471], 0));
            store(cb, o, pack([-11059, -21709, 32768], 128 << 16));
            store(cr, o, pack([32768, -27439, -5329], 128 << 16));
        }
        steps * STEP
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod simd {
    /// No SIMD path here: the scalar loop converts every pixel.
    pub(super) fn convert(_: &[u8], _: &mut [u8], _: &mut [u8], _: &mut [u8]) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Natively this checks the scalar loop; the WASM build's SIMD path is
    /// checked against the native build by the host's
    /// `thumbnail_component_matches_its_native_build`.
    #[test]
    fn rows_match_jpeg_encoders_conversion() {
        // 261 pixels: 16 whole steps of 16 and a tail of 5; every value in
        // each channel.
        let rgb: Vec<u8> = (0..261)
            .flat_map(|i: i32| [(i * 7) as u8, (i * 13 + 5) as u8, (255 - i) as u8])
            .collect();
        let n = rgb.len() / 3;
        let (mut y, mut cb, mut cr) = (vec![0; n], vec![0; n], vec![0; n]);
        convert(&rgb, &mut y, &mut cb, &mut cr);
        for (i, p) in rgb.chunks_exact(3).enumerate() {
            assert_eq!(
                (y[i], cb[i], cr[i]),
                rgb_to_ycbcr(p[0], p[1], p[2]),
                "pixel {i}"
            );
        }
    }
}
