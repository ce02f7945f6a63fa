//! JPEG compression and decompression through the `image` crate's codec.

use std::io::Cursor;

use image::codecs::jpeg::{JpegDecoder, JpegEncoder};
use image::{DynamicImage, ExtendedColorType};

use super::DefenseError;
use super::Dims;

/// The largest side a JPEG image may have.
pub(crate) const MAX_SIDE: usize = 65_500;

/// `round(255·x)` clamped to 0–255: the 8-bit value JPEG codes for x.
pub(crate) fn to_u8(v: f32) -> u8 {
    (v * 255.0).round().clamp(0.0, 255.0) as u8
}

/// Encodes one image at `quality` and decodes it again. Three channels are coded together as
/// RGB (with the encoder's chroma subsampling); any other count channel by channel as greyscale.
pub(crate) fn round_trip(img: &[f32], dims: Dims, quality: u8) -> Result<Vec<f32>, DefenseError> {
    let [c, h, w] = dims;
    let plane = h * w;
    let mut out = vec![0.0f32; img.len()];
    if c == 3 {
        let mut rgb = vec![0u8; 3 * plane];
        for p in 0..plane {
            for ch in 0..3 {
                rgb[3 * p + ch] = to_u8(img[ch * plane + p]);
            }
        }
        let back = code(&rgb, w, h, ExtendedColorType::Rgb8, quality)?.to_rgb8();
        for (p, px) in back.pixels().enumerate() {
            for ch in 0..3 {
                out[ch * plane + p] = f32::from(px.0[ch]) / 255.0;
            }
        }
    } else {
        for ch in 0..c {
            let grey: Vec<u8> = img[ch * plane..(ch + 1) * plane]
                .iter()
                .map(|&v| to_u8(v))
                .collect();
            let back = code(&grey, w, h, ExtendedColorType::L8, quality)?.to_luma8();
            for (o, px) in out[ch * plane..(ch + 1) * plane]
                .iter_mut()
                .zip(back.pixels())
            {
                *o = f32::from(px.0[0]) / 255.0;
            }
        }
    }
    Ok(out)
}

/// One encode and decode of 8-bit pixels.
pub(crate) fn code(
    pixels: &[u8],
    w: usize,
    h: usize,
    color: ExtendedColorType,
    quality: u8,
) -> Result<DynamicImage, DefenseError> {
    let codec = |e: image::ImageError| DefenseError::Codec(e.to_string());
    let side =
        |v: usize| u32::try_from(v).map_err(|_| DefenseError::Codec("image too large".into()));
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode(pixels, side(w)?, side(h)?, color)
        .map_err(codec)?;
    let decoder = JpegDecoder::new(Cursor::new(bytes)).map_err(codec)?;
    let back = DynamicImage::from_decoder(decoder).map_err(codec)?;
    if back.width() as usize != w || back.height() as usize != h {
        return Err(DefenseError::Codec(format!(
            "decoded {}×{}, encoded {w}×{h}",
            back.width(),
            back.height()
        )));
    }
    Ok(back)
}
