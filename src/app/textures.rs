//! Turning arrays and colour maps into egui textures (nearest-neighbour, so small maps stay crisp).

use eframe::egui;

use crate::array::Array;

/// Texture options for every map: pixels stay square when scaled up.
pub const CRISP: egui::TextureOptions = egui::TextureOptions::NEAREST;

/// A colour image of example 0 of a `[1, C, H, W]` image in [0, 1] (grey for one channel, RGB
/// for three, the channel mean otherwise).
pub fn image_of(x: &Array) -> Option<egui::ColorImage> {
    let &[_, c, h, w] = x.shape() else {
        return None;
    };
    let v = x.example(0);
    let px = |i: usize| (v[i].clamp(0.0, 1.0) * 255.0).round() as u8;
    let plane = h * w;
    Some(match c {
        1 => egui::ColorImage::from_gray([w, h], &(0..plane).map(px).collect::<Vec<_>>()),
        3 => {
            let rgb: Vec<u8> = (0..plane)
                .flat_map(|i| [px(i), px(plane + i), px(2 * plane + i)])
                .collect();
            egui::ColorImage::from_rgb([w, h], &rgb)
        }
        _ => {
            let grey: Vec<u8> = (0..plane)
                .map(|i| {
                    let m = (0..c).map(|ch| v[ch * plane + i]).sum::<f32>() / c as f32;
                    (m.clamp(0.0, 1.0) * 255.0).round() as u8
                })
                .collect();
            egui::ColorImage::from_gray([w, h], &grey)
        }
    })
}

/// Uploads RGB bytes as a texture.
pub fn rgb_texture(
    ctx: &egui::Context,
    name: &str,
    size: [usize; 2],
    rgb: &[u8],
) -> egui::TextureHandle {
    ctx.load_texture(name, egui::ColorImage::from_rgb(size, rgb), CRISP)
}

/// The vertical colour bar of the diverging map: top = +1, bottom = −1.
pub fn colour_bar(ctx: &egui::Context) -> egui::TextureHandle {
    let n = 128;
    let rgb: Vec<u8> = (0..n)
        .flat_map(|i| {
            let t = 1.0 - 2.0 * i as f32 / (n - 1) as f32;
            crate::analysis::diverging(t)
        })
        .collect();
    rgb_texture(ctx, "colour-bar", [1, n], &rgb)
}

/// The upper half of the diverging map as a vertical bar: top = +1 (red), bottom = 0 (white), for
/// values that are never negative (|Δ|).
pub fn positive_colour_bar(ctx: &egui::Context) -> egui::TextureHandle {
    let n = 128;
    let rgb: Vec<u8> = (0..n)
        .flat_map(|i| crate::analysis::diverging(1.0 - i as f32 / (n - 1) as f32))
        .collect();
    rgb_texture(ctx, "colour-bar-positive", [1, n], &rgb)
}
