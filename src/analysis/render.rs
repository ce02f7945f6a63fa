//! Results drawn as images without egui: the feature-map panel composed at full resolution
//! (title, row and column labels in the built-in [`super::glyphs`] font, the shared colour bar and,
//! when the |Δ| rows have their own scale, a second bar for them) and the perturbation as a signed
//! colour map. The app's export and `advlens maps` both use it.

use image::{Rgb, RgbImage};

use super::colormap::perturbation_image;
use super::feature_grid::{FeatureGrid, Row, colour};
use super::glyphs::{draw_text, text_height, text_width};
use super::snapshot::Snapshot;

/// Each cell is scaled up by an integer factor until its longer side reaches at least this.
pub const CELL_TARGET: usize = 224;
/// Border around the composition, pixels.
pub const MARGIN: u32 = 16;
/// Gap between cells, pixels.
pub const GAP: u32 = 8;
/// Colour-bar width, pixels.
pub const BAR_W: u32 = 24;

/// The integer scale factor for `h × w` maps.
pub fn cell_factor(h: usize, w: usize) -> usize {
    CELL_TARGET.div_ceil(h.max(w).max(1)).max(1)
}

/// Font scale of the labels.
const TEXT_SCALE: u32 = 2;
/// Label colour.
const TEXT: [u8; 3] = [230, 230, 230];

/// The pieces of the export's layout, in pixels.
struct Layout {
    cell: (u32, u32),
    factor: usize,
    label_w: u32,
    line_h: u32,
    grid_x0: u32,
    grid_y0: u32,
    bar_x0: u32,
    top: String,
    bottom: String,
    /// The |Δ| bar's left edge and top label, when the |Δ| rows have their own scale.
    delta_bar: Option<(u32, String)>,
    width: u32,
    height: u32,
}

fn row_label(row: Row) -> &'static str {
    match row {
        Row::Clean => "clean",
        Row::Adversarial => "adversarial",
        Row::Delta => DIFF,
    }
}

fn layout(grid: &FeatureGrid) -> Layout {
    let factor = cell_factor(grid.h, grid.w);
    let cell = ((grid.w * factor) as u32, (grid.h * factor) as u32);
    let cols = grid.columns.len() as u32;
    let rows = Row::ALL.len() as u32;
    let label_w = Row::ALL
        .iter()
        .map(|r| text_width(row_label(*r), TEXT_SCALE))
        .max()
        .unwrap_or(0);
    let line_h = text_height(TEXT_SCALE) + GAP;
    let top = format!("+{:.3}", grid.scale);
    let bottom = format!("-{:.3}", grid.scale);
    let value_w = text_width(&top, TEXT_SCALE).max(text_width(&bottom, TEXT_SCALE));
    let grid_x0 = MARGIN + label_w + GAP;
    let grid_y0 = MARGIN + 2 * line_h;
    let grid_w = cols * cell.0 + cols.saturating_sub(1) * GAP;
    let bar_x0 = grid_x0 + grid_w + 2 * GAP;
    let mut right = bar_x0 + BAR_W + GAP + value_w;
    let delta_bar = grid.delta_own_scale.then(|| {
        let x0 = right + 2 * GAP;
        let label = format!("+{:.3}", grid.delta_scale);
        right = x0 + BAR_W + GAP + text_width(&label, TEXT_SCALE).max(text_width(DIFF, TEXT_SCALE));
        (x0, label)
    });
    let title_w = text_width(&title(grid), TEXT_SCALE);
    let width = (right + MARGIN).max(MARGIN + title_w + MARGIN);
    let height = grid_y0 + rows * cell.1 + (rows - 1) * GAP + MARGIN;
    Layout {
        cell,
        factor,
        label_w,
        line_h,
        grid_x0,
        grid_y0,
        bar_x0,
        top,
        bottom,
        delta_bar,
        width,
        height,
    }
}

/// The |Δ| row's label.
const DIFF: &str = "|diff|";

fn title(grid: &FeatureGrid) -> String {
    let tap = grid.columns.first().map_or("", |c| c.tap.as_str());
    let block = ["/before", "/op", "/after"]
        .iter()
        .find_map(|s| tap.strip_suffix(s))
        .unwrap_or(tap);
    format!("{block} channel {} ({}x{})", grid.channel, grid.h, grid.w)
}

/// `(width, height)` of the exported feature-map image.
pub fn feature_export_size(grid: &FeatureGrid) -> (u32, u32) {
    let l = layout(grid);
    (l.width, l.height)
}

/// The short column title of the export.
fn column_label(title: &str) -> &str {
    match title {
        "block input" => "input",
        "op output" => "op",
        "block output" => "output",
        other => other,
    }
}

/// Composes the grid: a title, column titles, rows clean / adversarial / |diff| with their
/// labels, one column per tap, nearest-neighbour scaling by an integer factor, and the shared
/// colour bar with its end values on the right (top = +scale, bottom = −scale); when the |Δ|
/// rows have their own scale, a second bar beside it, from 0 (bottom) to that scale (top).
pub fn feature_maps_image(grid: &FeatureGrid) -> RgbImage {
    let l = layout(grid);
    let k = l.factor;
    let (cw, ch) = l.cell;
    let mut img = RgbImage::from_pixel(l.width, l.height, Rgb([40, 40, 40]));
    draw_text(&mut img, MARGIN, MARGIN, &title(grid), TEXT_SCALE, TEXT);
    for (ci, col) in grid.columns.iter().enumerate() {
        let x0 = l.grid_x0 + ci as u32 * (cw + GAP);
        let name = column_label(&col.title);
        draw_text(&mut img, x0, MARGIN + l.line_h, name, TEXT_SCALE, TEXT);
        for (ri, row) in Row::ALL.into_iter().enumerate() {
            let y0 = l.grid_y0 + ri as u32 * (ch + GAP);
            if ci == 0 {
                let ty = y0 + ch / 2 - text_height(TEXT_SCALE) / 2;
                let tx = MARGIN + l.label_w - text_width(row_label(row), TEXT_SCALE);
                draw_text(&mut img, tx, ty, row_label(row), TEXT_SCALE, TEXT);
            }
            let map = col.map(row);
            let scale = grid.row_scale(row);
            for y in 0..ch {
                for x in 0..cw {
                    let (sy, sx) = ((y as usize) / k, (x as usize) / k);
                    let v = map.get(sy * grid.w + sx).copied().unwrap_or(0.0);
                    img.put_pixel(x0 + x, y0 + y, Rgb(colour(v, scale)));
                }
            }
        }
    }
    let bar_h = l.height - l.grid_y0 - MARGIN;
    for y in 0..bar_h {
        let t = 1.0 - 2.0 * y as f32 / (bar_h.max(2) - 1) as f32;
        let c = colour(t * grid.scale, grid.scale);
        for x in 0..BAR_W {
            img.put_pixel(l.bar_x0 + x, l.grid_y0 + y, Rgb(c));
        }
    }
    let vx = l.bar_x0 + BAR_W + GAP;
    draw_text(&mut img, vx, l.grid_y0, &l.top, TEXT_SCALE, TEXT);
    let by = l.grid_y0 + bar_h - text_height(TEXT_SCALE);
    draw_text(&mut img, vx, by, &l.bottom, TEXT_SCALE, TEXT);
    let mid = l.grid_y0 + bar_h / 2 - text_height(TEXT_SCALE) / 2;
    draw_text(&mut img, vx, mid, "0", TEXT_SCALE, TEXT);
    if let Some((x0, top)) = &l.delta_bar {
        for y in 0..bar_h {
            let t = 1.0 - y as f32 / (bar_h.max(2) - 1) as f32;
            let c = colour(t, 1.0);
            for x in 0..BAR_W {
                img.put_pixel(x0 + x, l.grid_y0 + y, Rgb(c));
            }
        }
        let vx = x0 + BAR_W + GAP;
        draw_text(&mut img, vx, l.grid_y0, top, TEXT_SCALE, TEXT);
        draw_text(&mut img, vx, mid, DIFF, TEXT_SCALE, TEXT);
        draw_text(&mut img, vx, by, "0", TEXT_SCALE, TEXT);
    }
    img
}

/// The perturbation as a signed colour map scaled to its own L∞ (red +, blue −), and the
/// amplification factor applied.
pub fn perturbation_rgb(snap: &Snapshot) -> Result<(RgbImage, f32), ShapeError> {
    let shape = chw(snap)?;
    let delta = snap.delta();
    let linf = delta.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    Ok(perturbation_image(&delta, shape, linf))
}

/// An image that is not one example `[1, C, H, W]`.
#[derive(Debug, thiserror::Error)]
#[error("image has shape {0:?}, expected [1, C, H, W]")]
pub struct ShapeError(pub Vec<usize>);

/// `[C, H, W]` of the snapshot's image.
pub fn chw(snap: &Snapshot) -> Result<[usize; 3], ShapeError> {
    match snap.x.shape() {
        &[_, c, h, w] => Ok([c, h, w]),
        s => Err(ShapeError(s.to_vec())),
    }
}
