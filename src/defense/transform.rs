//! One input transformation: its description (`jpeg:75`), its checks against an image size, its
//! forward pass on one image and its backward rules.

use std::fmt;
use std::str::FromStr;

use super::resize_pad::{self, Canvas, Pattern};
use super::{DefenseError, Dims, GradientMode, bits, jpeg, median};

/// The largest median window side.
pub const MAX_MEDIAN: usize = 25;

/// One transformation of an image in [0, 1].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// JPEG compression and decompression at `quality` (1–100), through the `image` crate's
    /// codec. Pixels are quantised to 8 bits by rounding (`round(255·x)`, clamped); one channel
    /// is coded as greyscale, three as RGB, any other count channel by channel as greyscale.
    Jpeg {
        /// Quality, 1 to 100.
        quality: u8,
    },
    /// Bit-depth reduction to `bits` (1–8): `round(x·(2ᵇ − 1)) / (2ᵇ − 1)` on x clamped to
    /// [0, 1], halves rounded away from zero.
    BitDepth {
        /// Bits kept, 1 to 8.
        bits: u8,
    },
    /// Median smoothing over a `size`×`size` window (odd, up to [`MAX_MEDIAN`]) per channel,
    /// borders reflected with the edge pixel repeated (`d c b a | a b c d`).
    Median {
        /// Window side.
        size: usize,
    },
    /// Random resize and pad (Xie et al. 2018): resize the H×W image to r×r′ with r uniform in
    /// [H, S), place it at a uniform random offset on an S×S′ canvas of grey 0.5, and resize
    /// the canvas back to H×W (bilinear, half-pixel centres, throughout). `size` is S, by
    /// default `round(H·331/299)` (the paper's 299 → 331): 28 → 31, 224 → 248.
    ResizePad {
        /// The padded side S, or `None` for the paper's ratio.
        size: Option<usize>,
    },
}

/// What the backward pass of one transform needs from its forward pass on one image.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Trace {
    /// Nothing (JPEG, bit depth).
    None,
    /// The source index within the image of each output value (median).
    Median(Vec<u32>),
    /// The drawn pattern (resize and pad).
    ResizePad(Pattern),
}

impl Transform {
    /// Whether the transform draws randomness.
    pub fn is_random(&self) -> bool {
        matches!(self, Transform::ResizePad { .. })
    }

    /// Whether its output has a derivative with respect to its input almost everywhere that is
    /// useful to an attack (median: routed to the median pixel; resize and pad: exact).
    pub fn is_differentiable(&self) -> bool {
        matches!(self, Transform::Median { .. } | Transform::ResizePad { .. })
    }

    /// Checks the parameters and that the transform fits `[C, H, W]` images.
    pub fn check(&self, dims: Dims) -> Result<(), DefenseError> {
        let [c, h, w] = dims;
        let shape = |message: String| DefenseError::Shape {
            transform: self.to_string(),
            channels: c,
            height: h,
            width: w,
            message,
        };
        let param = |message: String| DefenseError::Parameter {
            transform: self.to_string(),
            message,
        };
        if c == 0 || h == 0 || w == 0 {
            return Err(shape("empty images".into()));
        }
        match *self {
            Transform::Jpeg { quality } => {
                if !(1..=100).contains(&quality) {
                    return Err(param(format!("quality {quality}; use 1 to 100")));
                }
                if h > jpeg::MAX_SIDE || w > jpeg::MAX_SIDE {
                    return Err(shape(format!("JPEG sides are at most {}", jpeg::MAX_SIDE)));
                }
            }
            Transform::BitDepth { bits } => {
                if !(1..=8).contains(&bits) {
                    return Err(param(format!("{bits} bits; use 1 to 8")));
                }
            }
            Transform::Median { size } => {
                if size == 0 || size % 2 == 0 {
                    return Err(param(format!(
                        "window {size}; the side must be odd (3, 5, …)"
                    )));
                }
                if size > MAX_MEDIAN {
                    return Err(param(format!("window {size}; at most {MAX_MEDIAN}")));
                }
            }
            Transform::ResizePad { .. } => {
                self.canvas(dims)?;
            }
        }
        Ok(())
    }

    /// S of a resize-and-pad on images of height `h` (the given one or the paper's ratio).
    fn padded_side(&self, h: usize) -> usize {
        match *self {
            Transform::ResizePad { size: Some(s) } => s,
            _ => resize_pad::padded_size(h),
        }
    }

    /// The canvas of a resize-and-pad on `dims` images.
    fn canvas(&self, dims: Dims) -> Result<Canvas, DefenseError> {
        let [c, h, w] = dims;
        resize_pad::canvas(self.padded_side(h), h, w).map_err(|message| DefenseError::Shape {
            transform: self.to_string(),
            channels: c,
            height: h,
            width: w,
            message,
        })
    }

    /// The forward pass on one image `[C, H, W]` (already checked). `pattern` is the drawn
    /// pattern of a random transform.
    pub(crate) fn forward(
        &self,
        img: &[f32],
        dims: Dims,
        pattern: Option<Pattern>,
    ) -> Result<(Vec<f32>, Trace), DefenseError> {
        match *self {
            Transform::Jpeg { quality } => Ok((jpeg::round_trip(img, dims, quality)?, Trace::None)),
            Transform::BitDepth { bits } => Ok((bits::reduce(img, bits), Trace::None)),
            Transform::Median { size } => {
                let (out, src) = median::smooth(img, dims, size);
                Ok((out, Trace::Median(src)))
            }
            Transform::ResizePad { .. } => {
                let p = pattern.ok_or_else(|| DefenseError::Parameter {
                    transform: self.to_string(),
                    message: "no pattern was drawn".into(),
                })?;
                let out = resize_pad::forward_on(img, dims, self.canvas(dims)?, p);
                Ok((out, Trace::ResizePad(p)))
            }
        }
    }

    /// Draws a pattern for one image of size `dims` (random transforms only).
    pub(crate) fn draw(&self, dims: Dims, rng: &mut impl rand::Rng) -> Option<Pattern> {
        match *self {
            Transform::ResizePad { .. } => Some(self.canvas(dims).ok()?.draw(rng)),
            _ => None,
        }
    }

    /// Every pattern of a random transform on `dims` images with its probability.
    pub(crate) fn patterns(&self, dims: Dims) -> Vec<(Pattern, f64)> {
        match *self {
            Transform::ResizePad { .. } => {
                self.canvas(dims).map(|c| c.patterns()).unwrap_or_default()
            }
            _ => vec![],
        }
    }

    /// Maps the gradient `g` with respect to this transform's output on one image to the
    /// gradient with respect to its input, under `mode`.
    pub(crate) fn backward(
        &self,
        g: Vec<f32>,
        dims: Dims,
        trace: &Trace,
        mode: GradientMode,
    ) -> Result<Vec<f32>, DefenseError> {
        Ok(match (self, trace, mode) {
            (Transform::ResizePad { .. }, Trace::ResizePad(p), _) => {
                resize_pad::backward_on(&g, dims, self.canvas(dims)?, *p)
            }
            (Transform::Median { .. }, Trace::Median(src), GradientMode::Naive) => {
                median::route(&g, src)
            }
            (_, _, GradientMode::Bpda) => g,
            (_, _, GradientMode::Naive) => vec![0.0; g.len()],
        })
    }
}

impl fmt::Display for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Transform::Jpeg { quality } => write!(f, "jpeg:{quality}"),
            Transform::BitDepth { bits } => write!(f, "bits:{bits}"),
            Transform::Median { size } => write!(f, "median:{size}"),
            Transform::ResizePad { size: Some(s) } => write!(f, "resize-pad:{s}"),
            Transform::ResizePad { size: None } => f.write_str("resize-pad"),
        }
    }
}

impl FromStr for Transform {
    type Err = DefenseError;
    /// `jpeg[:Q]` (default 75), `bits[:B]` (5), `median[:K]` (3), `resize-pad[:S]` (the
    /// paper's ratio); `bit-depth` and `randpad` are accepted as other names.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (name, value) = match s.split_once(':') {
            Some((n, v)) => (n.trim().to_ascii_lowercase(), Some(v.trim())),
            None => (s.to_ascii_lowercase(), None),
        };
        let number = |default: usize, max: usize| -> Result<usize, DefenseError> {
            let Some(v) = value else { return Ok(default) };
            v.parse::<usize>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| DefenseError::Parameter {
                    transform: s.to_string(),
                    message: format!("{v:?} is not a whole number from 0 to {max}"),
                })
        };
        let t = match name.as_str() {
            "jpeg" => Transform::Jpeg {
                quality: u8::try_from(number(75, 255)?).unwrap_or(u8::MAX),
            },
            "bits" | "bit-depth" => Transform::BitDepth {
                bits: u8::try_from(number(5, 255)?).unwrap_or(u8::MAX),
            },
            "median" => Transform::Median {
                size: number(3, 1 << 20)?,
            },
            "resize-pad" | "randpad" => Transform::ResizePad {
                size: match value {
                    Some(_) => Some(number(0, 1 << 20)?),
                    None => None,
                },
            },
            _ => return Err(DefenseError::UnknownTransform(s.to_string())),
        };
        // Parameters that are wrong whatever the image size fail here already.
        if !matches!(t, Transform::ResizePad { .. }) {
            t.check([1, 1, 1])?;
        }
        Ok(t)
    }
}
