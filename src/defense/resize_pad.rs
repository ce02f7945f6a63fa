//! Random resize and pad (Xie et al., ICLR 2018), scaled to the model's input and brought back
//! to it: H×W → r×r′ (r uniform in [H, S)) → placed at a uniform offset on an S×S′ canvas of
//! grey 0.5 → H×W. Every step is linear in the image for a fixed pattern, so the gradient is the
//! exact adjoint. Resizing is bilinear with half-pixel centres and no antialiasing (PyTorch's
//! `interpolate(mode="bilinear", align_corners=False)`).

use super::Dims;

/// The grey value of the canvas around the resized image.
pub const PAD_VALUE: f32 = 0.5;

/// The paper's padded side for images of height `h`: `round(h · 331/299)` (28 → 31, 32 → 35,
/// 224 → 248, 299 → 331).
pub fn padded_size(h: usize) -> usize {
    ((h as f64) * 331.0 / 299.0).round() as usize
}

/// One draw of the randomness: the resized size and its offset on the canvas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pattern {
    /// Resized height r.
    pub height: usize,
    /// Resized width r′.
    pub width: usize,
    /// Rows of canvas above the image.
    pub top: usize,
    /// Columns of canvas left of the image.
    pub left: usize,
}

/// The canvas of a resize and pad on H×W images.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Canvas {
    h: usize,
    w: usize,
    /// Canvas height S.
    side_h: usize,
    /// Canvas width S′ (S scaled by W/H).
    side_w: usize,
}

/// The canvas for padded side `side` on `h`×`w` images, or why it cannot be used. `side` must
/// exceed the height and be at most twice it.
pub(crate) fn canvas(side: usize, h: usize, w: usize) -> Result<Canvas, String> {
    if h < 2 || w < 2 {
        return Err("images need at least 2×2 pixels".into());
    }
    if side <= h {
        return Err(format!(
            "the padded side {side} must be larger than the image's height {h}"
        ));
    }
    if side > 2 * h {
        return Err(format!(
            "the padded side {side} is over the limit of twice the height ({})",
            2 * h
        ));
    }
    let side_w = ((w as f64) * side as f64 / h as f64).round() as usize;
    Ok(Canvas {
        h,
        w,
        side_h: side,
        side_w: side_w.max(w + 1),
    })
}

impl Canvas {
    /// The resized width that goes with resized height `r`: W for r = H, growing in proportion.
    fn width_for(&self, r: usize) -> usize {
        let extra =
            (r - self.h) as f64 * (self.side_w - self.w) as f64 / (self.side_h - self.h) as f64;
        self.w + extra.round() as usize
    }

    /// Draws r uniformly in [H, S), then the offset uniformly among the positions that fit.
    pub(crate) fn draw(&self, rng: &mut impl rand::Rng) -> Pattern {
        let height = rng.random_range(self.h..self.side_h);
        let width = self.width_for(height);
        Pattern {
            height,
            width,
            top: rng.random_range(0..=self.side_h - height),
            left: rng.random_range(0..=self.side_w - width),
        }
    }

    /// Every pattern with its probability under [`Canvas::draw`].
    pub(crate) fn patterns(&self) -> Vec<(Pattern, f64)> {
        let mut out = Vec::new();
        let sizes = (self.side_h - self.h) as f64;
        for height in self.h..self.side_h {
            let width = self.width_for(height);
            let (rows, cols) = (self.side_h - height + 1, self.side_w - width + 1);
            let p = 1.0 / (sizes * (rows * cols) as f64);
            for top in 0..rows {
                for left in 0..cols {
                    out.push((
                        Pattern {
                            height,
                            width,
                            top,
                            left,
                        },
                        p,
                    ));
                }
            }
        }
        out
    }
}

/// Bilinear interpolation weights from `from` samples to `to`: for each output index the two
/// source indices and the weight of the second.
fn taps(from: usize, to: usize) -> Vec<(usize, usize, f32)> {
    let scale = from as f64 / to as f64;
    (0..to)
        .map(|o| {
            let s = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (s.floor() as usize).min(from - 1);
            let i1 = (i0 + 1).min(from - 1);
            (i0, i1, (s - i0 as f64) as f32)
        })
        .collect()
}

/// Resizes an `h`×`w` plane to `oh`×`ow`.
fn resize(src: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
    let (ty, tx) = (taps(h, oh), taps(w, ow));
    let mut rows = vec![0.0f32; h * ow];
    for y in 0..h {
        for (x, &(a, b, t)) in tx.iter().enumerate() {
            rows[y * ow + x] = src[y * w + a] * (1.0 - t) + src[y * w + b] * t;
        }
    }
    let mut out = vec![0.0f32; oh * ow];
    for (y, &(a, b, t)) in ty.iter().enumerate() {
        for x in 0..ow {
            out[y * ow + x] = rows[a * ow + x] * (1.0 - t) + rows[b * ow + x] * t;
        }
    }
    out
}

/// The adjoint of [`resize`]: maps a gradient on the `oh`×`ow` output to the `h`×`w` input.
fn resize_adjoint(g: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
    let (ty, tx) = (taps(h, oh), taps(w, ow));
    let mut rows = vec![0.0f32; h * ow];
    for (y, &(a, b, t)) in ty.iter().enumerate() {
        for x in 0..ow {
            let v = g[y * ow + x];
            rows[a * ow + x] += v * (1.0 - t);
            rows[b * ow + x] += v * t;
        }
    }
    let mut out = vec![0.0f32; h * w];
    for y in 0..h {
        for (x, &(a, b, t)) in tx.iter().enumerate() {
            let v = rows[y * ow + x];
            out[y * w + a] += v * (1.0 - t);
            out[y * w + b] += v * t;
        }
    }
    out
}

/// The forward pass on one image for a drawn pattern.
pub(crate) fn forward_on(img: &[f32], dims: Dims, canvas: Canvas, p: Pattern) -> Vec<f32> {
    let [c, h, w] = dims;
    let (sh, sw) = (canvas.side_h, canvas.side_w);
    let mut out = Vec::with_capacity(img.len());
    for ch in 0..c {
        let plane = &img[ch * h * w..(ch + 1) * h * w];
        let small = resize(plane, h, w, p.height, p.width);
        let mut big = vec![PAD_VALUE; sh * sw];
        for y in 0..p.height {
            let row = (p.top + y) * sw + p.left;
            big[row..row + p.width].copy_from_slice(&small[y * p.width..(y + 1) * p.width]);
        }
        out.extend(resize(&big, sh, sw, h, w));
    }
    out
}

/// The exact adjoint of [`forward_on`] for the same pattern.
pub(crate) fn backward_on(g: &[f32], dims: Dims, canvas: Canvas, p: Pattern) -> Vec<f32> {
    let [c, h, w] = dims;
    let (sh, sw) = (canvas.side_h, canvas.side_w);
    let mut out = Vec::with_capacity(g.len());
    for ch in 0..c {
        let big = resize_adjoint(&g[ch * h * w..(ch + 1) * h * w], sh, sw, h, w);
        let mut small = vec![0.0f32; p.height * p.width];
        for y in 0..p.height {
            let row = (p.top + y) * sw + p.left;
            small[y * p.width..(y + 1) * p.width].copy_from_slice(&big[row..row + p.width]);
        }
        out.extend(resize_adjoint(&small, h, w, p.height, p.width));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_papers_sizes() {
        assert_eq!([28, 32, 224, 299].map(padded_size), [31, 35, 248, 331]);
    }

    #[test]
    fn resizing_to_the_same_size_is_the_identity() {
        let v: Vec<f32> = (0..12).map(|i| i as f32).collect();
        assert_eq!(resize(&v, 3, 4, 3, 4), v);
    }

    #[test]
    fn at_28_there_are_29_patterns_whose_probabilities_sum_to_one() {
        let c = canvas(31, 28, 28).expect("canvas");
        let all = c.patterns();
        assert_eq!(all.len(), 29);
        let total: f64 = all.iter().map(|(_, p)| p).sum();
        assert!((total - 1.0).abs() < 1e-12);
    }
}
