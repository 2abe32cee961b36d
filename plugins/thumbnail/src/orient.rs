//! EXIF orientation: a tiny reader for IFD0 tag 0x0112 in JPEG APP1 (found
//! by the SDK's segment walker) or a raw TIFF, and the eight pixel transforms
//! on packed RGB buffers.

/// Reads the EXIF orientation (1–8) of a JPEG or TIFF file, if present.
pub fn exif_orientation(b: &[u8]) -> Option<u8> {
    if b.starts_with(b"II*\0") || b.starts_with(b"MM\0*") {
        return tiff_orientation(b);
    }
    tiff_orientation(lumilio_sdk::jpeg::exif(b)?)
}

fn tiff_orientation(t: &[u8]) -> Option<u8> {
    let le = match t.get(0..2)? {
        b"II" => true,
        b"MM" => false,
        _ => return None,
    };
    let u16_at = |at: usize| {
        t.get(at..at + 2).map(|s| {
            if le {
                u16::from_le_bytes([s[0], s[1]])
            } else {
                u16::from_be_bytes([s[0], s[1]])
            }
        })
    };
    let u32_at = |at: usize| {
        t.get(at..at + 4).map(|s| {
            let a = [s[0], s[1], s[2], s[3]];
            if le {
                u32::from_le_bytes(a)
            } else {
                u32::from_be_bytes(a)
            }
        })
    };
    let ifd = u32_at(4)? as usize;
    let n = u16_at(ifd)? as usize;
    for k in 0..n.min(512) {
        let e = ifd + 2 + k * 12;
        if u16_at(e)? == 0x0112 {
            let v = u16_at(e + 8)?;
            return (1..=8).contains(&v).then_some(v as u8);
        }
    }
    None
}

/// An RGB8 image, packed rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes.
    pub data: Vec<u8>,
}

/// Returns `img` turned upright for EXIF orientation `o` (1 or unknown: as is).
pub fn apply(img: Rgb, o: u8) -> Rgb {
    if !(2..=8).contains(&o) {
        return img;
    }
    let (w, h) = (img.width as usize, img.height as usize);
    let swap = o >= 5;
    let (ow, oh) = if swap { (h, w) } else { (w, h) };
    let mut out = vec![0u8; img.data.len()];
    for dy in 0..oh {
        for dx in 0..ow {
            // Destination pixel -> source pixel, per orientation.
            let (sx, sy) = match o {
                2 => (w - 1 - dx, dy),
                3 => (w - 1 - dx, h - 1 - dy),
                4 => (dx, h - 1 - dy),
                5 => (dy, dx),
                6 => (dy, h - 1 - dx),
                7 => (w - 1 - dy, h - 1 - dx),
                _ => (w - 1 - dy, dx),
            };
            let s = (sy * w + sx) * 3;
            let d = (dy * ow + dx) * 3;
            out[d..d + 3].copy_from_slice(&img.data[s..s + 3]);
        }
    }
    Rgb {
        width: ow as u32,
        height: oh as u32,
        data: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2x1 image: red, green.
    fn rg() -> Rgb {
        Rgb {
            width: 2,
            height: 1,
            data: vec![255, 0, 0, 0, 255, 0],
        }
    }

    #[test]
    fn rotations_move_pixels() {
        // 6 = rotate 90° clockwise: left pixel ends on top.
        let r = apply(rg(), 6);
        assert_eq!((r.width, r.height), (1, 2));
        assert_eq!(&r.data[0..3], &[255, 0, 0]);
        // 8 = rotate 90° counter-clockwise: right pixel ends on top.
        let r = apply(rg(), 8);
        assert_eq!(&r.data[0..3], &[0, 255, 0]);
        assert_eq!(apply(rg(), 2).data, vec![0, 255, 0, 255, 0, 0]);
        assert_eq!(apply(rg(), 1), rg());
    }
}
