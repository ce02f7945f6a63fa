//! Colour maps for perturbations and feature maps.

use image::{Rgb, RgbImage};

/// A diverging blue–white–red map of `v` in [-1, 1].
pub fn diverging(v: f32) -> [u8; 3] {
    let v = if v.is_finite() {
        v.clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let fade = |t: f32| (255.0 * (1.0 - t)).round() as u8;
    if v >= 0.0 {
        [255, fade(v), fade(v)]
    } else {
        [fade(-v), fade(-v), 255]
    }
}

/// Renders a perturbation `δ` (`[C, H, W]`) as a signed colour map: the channel mean of δ
/// divided by `scale` (red positive, blue negative, white zero). Returns the image and the
/// amplification factor `1/scale` applied.
pub fn perturbation_image(delta: &[f32], shape: [usize; 3], scale: f32) -> (RgbImage, f32) {
    let [c, h, w] = shape;
    let scale = if scale > 0.0 && scale.is_finite() {
        scale
    } else {
        1.0
    };
    let mut img = RgbImage::new(w as u32, h as u32);
    for y in 0..h {
        for x in 0..w {
            let m: f32 = (0..c).map(|ch| delta[ch * h * w + y * w + x]).sum::<f32>() / c as f32;
            img.put_pixel(x as u32, y as u32, Rgb(diverging(m / scale)));
        }
    }
    (img, 1.0 / scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diverging_ends_and_middle() {
        assert_eq!(diverging(0.0), [255, 255, 255]);
        assert_eq!(diverging(1.0), [255, 0, 0]);
        assert_eq!(diverging(-1.0), [0, 0, 255]);
        assert_eq!(diverging(f32::NAN), [255, 255, 255]);
    }
}
