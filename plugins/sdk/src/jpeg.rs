//! The JPEG marker-segment walker every stage shares: from SOI up to and
//! including the first SOS, never into the entropy-coded data. Every read
//! is bounds-checked; hostile input ends the walk with a [`SegmentError`],
//! never a panic.
//!
//! Stages that only look for metadata stop at the first problem with
//! `segments(b).map_while(Result::ok)`; `validate` reports the error.

/// One marker segment before the image data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    /// The marker byte, e.g. `0xE1` for APP1, `0xC0` for SOF0, `0xDA` for SOS.
    pub marker: u8,
    /// Offset of the `0xFF` just before the marker byte (after fill bytes).
    pub offset: usize,
    /// The payload after the two length bytes.
    pub payload: &'a [u8],
}

impl Segment<'_> {
    /// Offset just past the segment: the next marker, or for SOS the start
    /// of the entropy-coded data.
    pub fn end(&self) -> usize {
        self.offset + 4 + self.payload.len()
    }
}

/// Why the walk stopped early. The texts complete "the JPEG file ...".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    /// The bytes do not start with SOI (`FF D8`).
    #[error("does not start with a start-of-image marker")]
    NotJpeg,
    /// The file ends where a marker should be.
    #[error("ends before the image data (truncated)")]
    Truncated,
    /// A byte other than `0xFF` where a marker should start.
    #[error("has a corrupt marker at byte {0}")]
    CorruptMarker(usize),
    /// A second SOI before any image data.
    #[error("has a second start-of-image marker before any image data")]
    SecondSoi,
    /// EOI before any SOS.
    #[error("ends (EOI) before any image data")]
    EarlyEoi,
    /// A segment's length runs past the end of the file (or is below 2).
    #[error("ends inside a marker segment (truncated)")]
    SegmentTruncated,
}

/// Walks the marker segments of `b` up to and including the first SOS.
pub fn segments(b: &[u8]) -> Segments<'_> {
    Segments {
        b,
        i: 0,
        done: false,
    }
}

/// The iterator [`segments`] returns. It ends after SOS or after the first error.
#[derive(Debug, Clone)]
pub struct Segments<'a> {
    b: &'a [u8],
    i: usize,
    done: bool,
}

impl<'a> Iterator for Segments<'a> {
    type Item = Result<Segment<'a>, SegmentError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.step();
        if !matches!(r, Ok(s) if s.marker != 0xDA) {
            self.done = true;
        }
        Some(r)
    }
}

impl<'a> Segments<'a> {
    fn step(&mut self) -> Result<Segment<'a>, SegmentError> {
        let b = self.b;
        if self.i == 0 {
            if !b.starts_with(&[0xFF, 0xD8]) {
                return Err(SegmentError::NotJpeg);
            }
            self.i = 2;
        }
        loop {
            let i = self.i;
            match b.get(i) {
                None => return Err(SegmentError::Truncated),
                Some(0xFF) => {}
                Some(_) => return Err(SegmentError::CorruptMarker(i)),
            }
            // Markers may be preceded by any number of 0xFF fill bytes.
            let mut at = i;
            while b.get(at + 1) == Some(&0xFF) {
                at += 1;
            }
            let m = *b.get(at + 1).ok_or(SegmentError::Truncated)?;
            self.i = at + 2;
            match m {
                // Standalone markers carry no length.
                0x01 | 0xD0..=0xD7 => continue,
                0xD8 => return Err(SegmentError::SecondSoi),
                0xD9 => return Err(SegmentError::EarlyEoi),
                _ => {}
            }
            let len = b
                .get(at + 2..at + 4)
                .map(|s| u16::from_be_bytes([s[0], s[1]]) as usize)
                .ok_or(SegmentError::SegmentTruncated)?;
            if len < 2 || at + 2 + len > b.len() {
                return Err(SegmentError::SegmentTruncated);
            }
            self.i = at + 2 + len;
            return Ok(Segment {
                marker: m,
                offset: at,
                payload: &b[at + 4..at + 2 + len],
            });
        }
    }
}

/// The TIFF block of the first APP1 `Exif\0\0` segment, if any.
pub fn exif(b: &[u8]) -> Option<&[u8]> {
    segments(b)
        .map_while(Result::ok)
        .find(|s| s.marker == 0xE1 && s.payload.starts_with(b"Exif\0\0"))
        .map(|s| &s.payload[6..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(m: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0xFF, m];
        v.extend_from_slice(&(payload.len() as u16 + 2).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn walks_to_sos_through_fill_bytes_and_standalone_markers() {
        let mut b = vec![0xFF, 0xD8];
        b.extend(seg(0xE1, b"Exif\0\0MM"));
        b.extend([0xFF, 0xFF, 0xD0]); // fill, then RST0 (no length)
        b.extend(seg(0xC0, &[8, 0, 2, 0, 3]));
        b.extend(seg(0xDA, &[1]));
        b.extend([0x12, 0x34, 0xFF, 0xD9]);
        let all: Vec<_> = segments(&b).collect::<Result<_, _>>().unwrap();
        let marks: Vec<(u8, usize)> = all.iter().map(|s| (s.marker, s.offset)).collect();
        assert_eq!(marks, [(0xE1, 2), (0xC0, 17), (0xDA, 26)]);
        assert_eq!(
            all[2].end(),
            b.len() - 4,
            "SOS ends where the entropy data starts"
        );
        assert_eq!(exif(&b), Some(&b"MM"[..]));
    }

    #[test]
    fn hostile_input_ends_the_walk_with_a_reason() {
        let cases: [(&[u8], SegmentError); 6] = [
            (b"GIF89a", SegmentError::NotJpeg),
            (&[0xFF, 0xD8], SegmentError::Truncated),
            (&[0xFF, 0xD8, 0x00], SegmentError::CorruptMarker(2)),
            (&[0xFF, 0xD8, 0xFF, 0xD8], SegmentError::SecondSoi),
            (&[0xFF, 0xD8, 0xFF, 0xD9], SegmentError::EarlyEoi),
            (
                &[0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x09, 0],
                SegmentError::SegmentTruncated,
            ),
        ];
        for (b, want) in cases {
            let got: Vec<_> = segments(b).collect();
            assert_eq!(got, [Err(want)], "{b:?}");
            assert_eq!(exif(b), None);
        }
        assert_eq!(
            segments(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 1]).next(),
            Some(Err(SegmentError::SegmentTruncated))
        );
    }
}
