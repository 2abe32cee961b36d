//! The descriptor behaves like an image-similarity embedding: a re-encoded,
//! resized copy is closer to its original than a different photo is.

use image::{
    DynamicImage, ImageEncoder, RgbImage, codecs::jpeg::JpegEncoder, imageops::FilterType,
};
use lumilio_infer::descriptor::{self, DIM, cosine};
use lumilio_infer::{labels, text};

fn photo(rel: &str) -> Vec<u8> {
    testdata::read(&format!("jpg/{rel}"))
}

/// Resizes to `w`×`h` and re-encodes as JPEG at `quality`, like the host's `clip` rendition.
fn reencode(img: &DynamicImage, w: u32, h: u32, quality: u8) -> Vec<u8> {
    let small = img.resize_exact(w, h, FilterType::Lanczos3).to_rgb8();
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, quality)
        .write_image(&small, w, h, image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

#[test]
fn a_reencoded_resized_copy_is_closer_than_other_photos() {
    let original = photo("orientation/landscape_1.jpg");
    let img = descriptor::decode(&original).unwrap();
    let a = descriptor::analyse(&img).vector;
    let copy = descriptor::analyse_bytes(&reencode(&img, 224, 168, 60))
        .unwrap()
        .vector;
    let square = descriptor::analyse_bytes(&reencode(&img, 224, 224, 75))
        .unwrap()
        .vector;
    assert_eq!(a.len(), DIM);
    let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "not normalised: {norm}");

    let near = cosine(&a, &copy);
    let near_square = cosine(&a, &square);
    let others = [
        "orientation/portrait_1.jpg",
        "gps/DSCN0010.jpg",
        "gps/DSCN0012.jpg",
        "Canon_40D.jpg",
    ];
    for other in others {
        let b = descriptor::analyse_bytes(&photo(other)).unwrap().vector;
        let far = cosine(&a, &b);
        eprintln!("landscape_1: copy {near:.4}, square copy {near_square:.4}, {other} {far:.4}");
        assert!(
            near > far,
            "re-encoded copy ({near}) not closer than {other} ({far})"
        );
        assert!(
            near_square > far,
            "squashed copy ({near_square}) not closer than {other} ({far})"
        );
    }
    assert!(
        near > 0.97,
        "re-encoded copy should be a near-duplicate, cosine {near}"
    );
}

#[test]
fn descriptors_are_deterministic() {
    let bytes = photo("gps/DSCN0010.jpg");
    let a = descriptor::analyse_bytes(&bytes).unwrap();
    let b = descriptor::analyse_bytes(&bytes).unwrap();
    assert_eq!(a.vector, b.vector);
}

fn uniform(rgb: [u8; 3]) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_pixel(64, 48, image::Rgb(rgb)))
}

#[test]
fn labels_describe_colour_and_tone() {
    let sky = descriptor::analyse(&uniform([40, 90, 200]));
    let top = labels::top_labels(&sky.stats, 5);
    assert!(
        top.iter().any(|l| l.label == "blue" && l.score == 1.0),
        "{top:?}"
    );
    assert!(top.iter().all(|l| (0.0..=1.0).contains(&l.score)));
    assert!(
        labels::all_labels(&sky.stats)
            .iter()
            .any(|l| l.label == "cool")
    );

    let night = descriptor::analyse(&uniform([10, 10, 12]));
    let top = labels::top_labels(&night.stats, 3);
    assert!(top.iter().any(|l| l.label == "dark"), "{top:?}");
    assert!(
        top.iter()
            .any(|l| l.label == "black" || l.label == "monochrome"),
        "{top:?}"
    );
    assert_eq!(labels::top_labels(&night.stats, 2).len(), 2);
}

#[test]
fn colour_words_rank_images_of_that_colour_first() {
    let blue = descriptor::analyse(&uniform([30, 80, 210])).vector;
    let green = descriptor::analyse(&uniform([40, 150, 50])).vector;
    let q_blue = text::embed_text(b"blue sky").unwrap();
    let q_green = text::embed_text(b"Green").unwrap();
    assert!(cosine(&q_blue, &blue) > cosine(&q_blue, &green));
    assert!(cosine(&q_green, &green) > cosine(&q_green, &blue));
    // A word with no colour meaning matches no image: it lives in dims images never use.
    let cat = text::embed_text(b"cat").unwrap();
    assert_eq!(cosine(&cat, &blue), 0.0);
    assert!(text::embed_text(b"  ").is_err());
    assert!(text::embed_text(&[0xff, 0xfe]).is_err());
}

#[test]
fn not_an_image_is_an_error() {
    assert!(descriptor::analyse_bytes(b"definitely not a jpeg").is_err());
}
