//! Image files ↔ `[1, C, H, W]` arrays in [0, 1].

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, GenericImageView as _, ImageReader, Limits, imageops::FilterType};

use crate::array::Array;

/// Largest accepted image side, in pixels.
pub const MAX_SIDE: u32 = 16_384;
/// Largest accepted image file, in bytes.
pub const MAX_FILE_BYTES: u64 = 256 << 20;
/// The most the decoder may allocate for one image (a 16 384² RGBA image is exactly this).
pub const MAX_ALLOC: u64 = 1 << 30;
/// The most pixels an image is resized to for a model's evaluation resize (64 Mi: 1 GiB as the
/// 16-byte float pixels the resize works in).
pub const MAX_RESIZE_PIXELS: u64 = 1 << 26;

/// Errors reading or writing images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The bytes are not an image advlens can decode.
    #[error("{path}: cannot decode image: {source}")]
    Decode {
        /// The file.
        path: String,
        /// Why.
        source: DecodeError,
    },
    /// Encoding or the shape of the data is wrong.
    #[error("cannot encode image: {0}")]
    Encode(String),
}

/// Why bytes are not an image advlens can decode.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes start like no format advlens decodes.
    #[error("unrecognised image format")]
    UnknownFormat,
    /// Reading the bytes failed while guessing the format.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The decoder refused the data: broken, unsupported, or over the size limits.
    #[error("{0}")]
    Image(#[from] image::ImageError),
}

/// Decodes an image file (PNG, JPEG, BMP, WebP, GIF first frame), refusing huge files and
/// dimensions before allocating.
pub fn load(path: &Path) -> Result<DynamicImage, ImageError> {
    let bytes = crate::io::read_limited(path, MAX_FILE_BYTES).map_err(|source| ImageError::Io {
        path: path.display().to_string(),
        source,
    })?;
    decode(&bytes).map_err(|source| ImageError::Decode {
        path: path.display().to_string(),
        source,
    })
}

/// Decodes image bytes with limits.
pub fn decode(bytes: &[u8]) -> Result<DynamicImage, DecodeError> {
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format()?;
    if reader.format().is_none() {
        return Err(DecodeError::UnknownFormat);
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    Ok(reader.decode()?)
}

/// Converts an image to a `[1, C, H, W]` array in [0, 1] of the given size: grey for one
/// channel, RGB for three; resized with a triangle filter when the size differs. With a model's
/// evaluation resize (`eval_resize` is `Some(r)`), the
/// shorter side is scaled to `r` (bicubic, the longer side rounded to the nearest pixel) and
/// the centre `size` is cropped, as ImageNet models are evaluated.
pub fn to_array_with(
    img: &DynamicImage,
    channels: usize,
    size: [usize; 2],
    eval_resize: Option<usize>,
) -> Result<Array, ImageError> {
    let [h, w] = size;
    let img = match eval_resize {
        Some(r) if img.dimensions() != (w as u32, h as u32) => {
            let (iw, ih) = img.dimensions();
            let short = iw.min(ih).max(1) as f64;
            let scale = r as f64 / short;
            let (fw, fh) = (iw as f64 * scale + 0.5, ih as f64 * scale + 0.5);
            // The longer side grows with the aspect ratio: a 16 384×1 image scaled to a
            // shorter side of 256 would be four million pixels wide.
            if fw * fh > MAX_RESIZE_PIXELS as f64 {
                return Err(ImageError::Encode(format!(
                    "a {iw}×{ih} image scaled to a shorter side of {r} would have {:.0} \
                     pixels, more than the {MAX_RESIZE_PIXELS} advlens resizes to",
                    fw * fh
                )));
            }
            let nw = (fw as u32).max(w as u32);
            let nh = (fh as u32).max(h as u32);
            let resized = img.resize_exact(nw, nh, FilterType::CatmullRom);
            let x0 = (nw - w as u32) / 2;
            let y0 = (nh - h as u32) / 2;
            resized.crop_imm(x0, y0, w as u32, h as u32)
        }
        _ if img.dimensions() != (w as u32, h as u32) => {
            img.resize_exact(w as u32, h as u32, FilterType::Triangle)
        }
        _ => img.clone(),
    };
    let data: Vec<f32> = match channels {
        1 => img
            .to_luma32f()
            .pixels()
            .map(|p| p.0[0].clamp(0.0, 1.0))
            .collect(),
        3 => {
            let rgb = img.to_rgb32f();
            let mut planes = vec![0f32; 3 * h * w];
            for (i, p) in rgb.pixels().enumerate() {
                for c in 0..3 {
                    planes[c * h * w + i] = p.0[c].clamp(0.0, 1.0);
                }
            }
            planes
        }
        c => {
            return Err(ImageError::Encode(format!(
                "models with {c} input channels cannot take images"
            )));
        }
    };
    Array::new(vec![1, channels, h, w], data).map_err(|e| ImageError::Encode(e.to_string()))
}

/// Loads an image file straight into a model-shaped array.
pub fn load_for_model(
    path: &Path,
    channels: usize,
    size: [usize; 2],
    eval_resize: Option<usize>,
) -> Result<Array, ImageError> {
    to_array_with(&load(path)?, channels, size, eval_resize)
}

/// Turns one `[C, H, W]` example in [0, 1] into an 8-bit image (grey or RGB).
pub fn example_to_image(values: &[f32], shape: [usize; 3]) -> Result<DynamicImage, ImageError> {
    let [c, h, w] = shape;
    if values.len() != c * h * w {
        return Err(ImageError::Encode("data does not match its shape".into()));
    }
    let q = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    match c {
        1 => image::GrayImage::from_raw(w as u32, h as u32, values.iter().map(|&v| q(v)).collect())
            .map(DynamicImage::ImageLuma8),
        3 => {
            let mut buf = Vec::with_capacity(3 * h * w);
            for i in 0..h * w {
                for ch in 0..3 {
                    buf.push(q(values[ch * h * w + i]));
                }
            }
            image::RgbImage::from_raw(w as u32, h as u32, buf).map(DynamicImage::ImageRgb8)
        }
        _ => None,
    }
    .ok_or_else(|| ImageError::Encode(format!("cannot show {c} channels as an image")))
}

/// Encodes an image as PNG bytes.
pub fn png_bytes(img: &DynamicImage) -> Result<Vec<u8>, ImageError> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| ImageError::Encode(e.to_string()))?;
    Ok(out.into_inner())
}

/// Writes an image as a PNG file, atomically.
pub fn save_png(img: &DynamicImage, path: &Path) -> Result<(), ImageError> {
    let bytes = png_bytes(img)?;
    crate::io::write_atomic(path, &bytes).map_err(|source| ImageError::Io {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trip_keeps_known_pixels() {
        let vals: Vec<f32> = (0..12).map(|i| i as f32 / 11.0).collect();
        let img = example_to_image(&vals, [3, 2, 2]).unwrap();
        let bytes = png_bytes(&img).unwrap();
        let back = to_array_with(&decode(&bytes).unwrap(), 3, [2, 2], None).unwrap();
        for (a, b) in back.data().iter().zip(&vals) {
            assert!((a - b).abs() <= 0.5 / 255.0 + 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn an_extreme_aspect_ratio_is_refused_before_the_evaluation_resize() {
        // 4096×1 scaled to a shorter side of 256 would be 1 048 576×256 pixels: refused before
        // anything is allocated; 2048×1 is still four times over; 8×1 (2048×256) is converted.
        let e = to_array_with(&DynamicImage::new_luma8(4096, 1), 1, [8, 8], Some(256));
        let e = e.unwrap_err().to_string();
        assert!(
            e.contains("a 4096×1 image") && e.contains("more than the 67108864"),
            "{e}"
        );
        assert!(to_array_with(&DynamicImage::new_luma8(2048, 1), 1, [8, 8], Some(256)).is_err());
        let a = to_array_with(&DynamicImage::new_luma8(8, 1), 1, [8, 8], Some(256)).unwrap();
        assert_eq!(a.shape(), &[1, 1, 8, 8]);
    }

    #[test]
    fn garbage_and_truncated_files_are_errors() {
        assert!(matches!(
            decode(b"definitely not an image"),
            Err(DecodeError::UnknownFormat)
        ));
        let img = example_to_image(&[0.5; 16], [1, 4, 4]).unwrap();
        let bytes = png_bytes(&img).unwrap();
        assert!(matches!(
            decode(&bytes[..bytes.len() / 2]),
            Err(DecodeError::Image(_))
        ));
    }
}
