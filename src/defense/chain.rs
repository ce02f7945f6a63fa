//! A chain of transforms applied to a batch, and the way back for gradients.

use std::fmt;
use std::str::FromStr;

use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::Dims;
use super::draws::{Draws, image_rng};
use super::resize_pad::Pattern;
use super::transform::{Trace, Transform};
use super::{DefenseError, GradientMode};
use crate::array::Array;

/// One transformed image and what each transform recorded on it.
type Image = (Vec<f32>, Vec<Trace>);

/// The most transforms one chain may hold.
pub const MAX_CHAIN: usize = 16;

/// Transforms applied in order to images in [0, 1]; written `jpeg:75,bits:5` (`none` for
/// none).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Chain {
    transforms: Vec<Transform>,
}

/// A batch after a chain, with what its gradients need to come back.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The transformed batch, shaped like the input.
    pub x: Array,
    chain: Chain,
    dims: Dims,
    /// `traces[i][t]`: what transform `t` recorded on image `i`.
    traces: Vec<Vec<Trace>>,
}

impl Chain {
    /// A chain of `transforms`.
    pub fn new(transforms: Vec<Transform>) -> Self {
        Self { transforms }
    }

    /// The transforms in order.
    pub fn transforms(&self) -> &[Transform] {
        &self.transforms
    }

    /// Whether the chain has no transform.
    pub fn is_empty(&self) -> bool {
        self.transforms.is_empty()
    }

    /// Whether any transform draws randomness.
    pub fn is_random(&self) -> bool {
        self.transforms.iter().any(Transform::is_random)
    }

    /// Whether naive and BPDA gradients differ on this chain: it holds a JPEG, bit-depth or
    /// median step. Resize and pad pass its exact adjoint under both modes, so a chain of those
    /// alone has one gradient.
    pub fn gradient_modes_differ(&self) -> bool {
        self.transforms
            .iter()
            .any(|t| !matches!(t, Transform::ResizePad { .. }))
    }

    /// Checks every transform against `[C, H, W]` images.
    pub fn check(&self, dims: [usize; 3]) -> Result<(), DefenseError> {
        if self.transforms.len() > MAX_CHAIN {
            return Err(DefenseError::Parameter {
                transform: self.to_string(),
                message: format!("{} transforms; at most {MAX_CHAIN}", self.transforms.len()),
            });
        }
        self.transforms.iter().try_for_each(|t| t.check(dims))
    }

    /// Every combination of the random transforms' patterns on `dims` images, with its
    /// probability (one empty combination for a chain without randomness).
    pub fn patterns(&self, dims: [usize; 3]) -> Vec<(Vec<Pattern>, f64)> {
        let mut all = vec![(Vec::new(), 1.0)];
        for t in self.transforms.iter().filter(|t| t.is_random()) {
            let choices = t.patterns(dims);
            all = all
                .into_iter()
                .flat_map(|(prefix, p): (Vec<Pattern>, f64)| {
                    choices.iter().map(move |(c, q)| {
                        let mut v = prefix.clone();
                        v.push(*c);
                        (v, p * q)
                    })
                })
                .collect();
        }
        all
    }

    /// Applies the chain to a batch `[N, C, H, W]`, each image with its own randomness.
    pub fn apply(&self, x: &Array, draws: &Draws) -> Result<Applied, DefenseError> {
        let dims = dims_of(x)?;
        self.check(dims)?;
        let per_image: Vec<Result<Image, DefenseError>> = (0..x.batch())
            .into_par_iter()
            .map(|i| self.apply_one(x.example(i), dims, draws))
            .collect();
        let mut data = Vec::with_capacity(x.len());
        let mut traces = Vec::with_capacity(x.batch());
        for r in per_image {
            let (img, tr) = r?;
            data.extend(img);
            traces.push(tr);
        }
        let x = Array::new(x.shape().to_vec(), data)?;
        Ok(Applied {
            x,
            chain: self.clone(),
            dims,
            traces,
        })
    }

    fn apply_one(&self, img: &[f32], dims: Dims, draws: &Draws) -> Result<Image, DefenseError> {
        let mut rng: Option<ChaCha8Rng> = match draws {
            Draws::Seeded { seed, call, draw } if self.is_random() => {
                Some(image_rng(*seed, *call, *draw, img))
            }
            _ => None,
        };
        let mut fixed = match draws {
            Draws::Fixed(p) => p.iter().copied(),
            Draws::Seeded { .. } => [].iter().copied(),
        };
        let mut cur = img.to_vec();
        let mut traces = Vec::with_capacity(self.transforms.len());
        for t in &self.transforms {
            let pattern = if t.is_random() {
                match rng.as_mut() {
                    Some(r) => t.draw(dims, r),
                    None => fixed.next(),
                }
            } else {
                None
            };
            let (next, trace) = t.forward(&cur, dims, pattern)?;
            cur = next;
            traces.push(trace);
        }
        Ok((cur, traces))
    }
}

impl Applied {
    /// Maps `g`, the gradient with respect to the transformed batch, to the gradient with
    /// respect to the batch the chain was applied to.
    pub fn backward(&self, g: &Array, mode: GradientMode) -> Result<Array, DefenseError> {
        if g.shape() != self.x.shape() {
            return Err(DefenseError::GradientShape {
                expected: self.x.shape().to_vec(),
                actual: g.shape().to_vec(),
            });
        }
        let per_image: Vec<Result<Vec<f32>, DefenseError>> = (0..g.batch())
            .into_par_iter()
            .map(|i| {
                let mut cur = g.example(i).to_vec();
                for (t, trace) in self.chain.transforms.iter().zip(&self.traces[i]).rev() {
                    cur = t.backward(cur, self.dims, trace, mode)?;
                }
                Ok(cur)
            })
            .collect();
        let mut data = Vec::with_capacity(g.len());
        for r in per_image {
            data.extend(r?);
        }
        Ok(Array::new(g.shape().to_vec(), data)?)
    }

    /// The patterns drawn for image `i`, one per random transform in order.
    pub fn patterns(&self, i: usize) -> Vec<Pattern> {
        self.traces
            .get(i)
            .map(|t| {
                t.iter()
                    .filter_map(|tr| match tr {
                        Trace::ResizePad(p) => Some(*p),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// `[C, H, W]` of a batch.
fn dims_of(x: &Array) -> Result<Dims, DefenseError> {
    match *x.shape() {
        [_, c, h, w] => Ok([c, h, w]),
        _ => Err(DefenseError::Shape {
            transform: "defence".into(),
            channels: 0,
            height: 0,
            width: 0,
            message: format!("expected an NCHW batch, got shape {:?}", x.shape()),
        }),
    }
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.transforms.is_empty() {
            return f.write_str("none");
        }
        for (i, t) in self.transforms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{t}")?;
        }
        Ok(())
    }
}

impl FromStr for Chain {
    type Err = DefenseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("none") {
            return Ok(Self::default());
        }
        let transforms = s
            .split(',')
            .map(str::parse)
            .collect::<Result<Vec<Transform>, _>>()?;
        let chain = Self { transforms };
        if chain.transforms.len() > MAX_CHAIN {
            return Err(DefenseError::Parameter {
                transform: s.to_string(),
                message: format!("{} transforms; at most {MAX_CHAIN}", chain.transforms.len()),
            });
        }
        Ok(chain)
    }
}

impl From<Chain> for String {
    fn from(c: Chain) -> String {
        c.to_string()
    }
}

impl TryFrom<String> for Chain {
    type Error = DefenseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_jpeg_bits_and_median_make_the_gradient_modes_differ() {
        let differ = |s: &str| s.parse::<Chain>().unwrap().gradient_modes_differ();
        assert!(!differ("none"));
        assert!(!differ("resize-pad"));
        assert!(differ("jpeg:75"));
        assert!(differ("bits:5"));
        assert!(differ("median:3"));
        assert!(differ("resize-pad,median:3"));
    }
}
