//! A plain host-side f32 array with a shape: the currency between engines, attacks, the CLI and the
//! app. Engines convert to their own device tensors at the boundary.

use serde::{Deserialize, Serialize};

/// Errors raised when an array's data and shape do not agree.
#[derive(Debug, thiserror::Error)]
pub enum ArrayError {
    /// The product of the shape does not equal the number of values.
    #[error("shape {shape:?} holds {expected} values but {actual} were given")]
    ShapeMismatch {
        /// The requested shape.
        shape: Vec<usize>,
        /// Product of the shape.
        expected: usize,
        /// Length of the data.
        actual: usize,
    },
    /// An axis permutation that does not fit the array.
    #[error("{perm:?} is not a permutation of {rank} axes")]
    BadPermutation {
        /// The permutation given.
        perm: Vec<usize>,
        /// The array's rank.
        rank: usize,
    },
}

/// A dense, row-major f32 array (NCHW for images and feature maps, `[N, K]` for logits).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Array {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Array {
    /// Wraps `data` with `shape`, checking that the sizes agree.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, ArrayError> {
        let expected: usize = shape.iter().product();
        if expected != data.len() {
            return Err(ArrayError::ShapeMismatch {
                shape,
                expected,
                actual: data.len(),
            });
        }
        Ok(Self { shape, data })
    }

    /// An array of zeros.
    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Self {
            shape,
            data: vec![0.0; n],
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The values, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Mutable access to the values; the shape cannot change.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Consumes the array and returns its values.
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the array holds no values.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Size of the leading (batch) dimension, 1 for a scalar.
    pub fn batch(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Number of values per example (everything after the batch dimension).
    pub fn example_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// The values of example `i` along the batch dimension.
    pub fn example(&self, i: usize) -> &[f32] {
        let n = self.example_len();
        &self.data[i * n..(i + 1) * n]
    }

    /// Mutable values of example `i`.
    pub fn example_mut(&mut self, i: usize) -> &mut [f32] {
        let n = self.example_len();
        &mut self.data[i * n..(i + 1) * n]
    }

    /// A new array holding the examples at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Self {
        let mut shape = self.shape.clone();
        if let Some(b) = shape.first_mut() {
            *b = indices.len();
        }
        let mut data = Vec::with_capacity(indices.len() * self.example_len());
        for &i in indices {
            data.extend_from_slice(self.example(i));
        }
        Self { shape, data }
    }

    /// Concatenates arrays along the batch dimension; all must share the per-example shape.
    pub fn concat(parts: &[Array]) -> Result<Self, ArrayError> {
        let Some(first) = parts.first() else {
            return Ok(Self::zeros(vec![0]));
        };
        let mut shape = first.shape.clone();
        let batch = parts.iter().map(Array::batch).sum();
        if let Some(b) = shape.first_mut() {
            *b = batch;
        }
        let data: Vec<f32> = parts.iter().flat_map(|p| p.data.iter().copied()).collect();
        Self::new(shape, data)
    }

    /// The axes reordered (NumPy's `transpose`): output axis `i` is input axis `perm[i]`.
    /// `perm` must be a permutation of the axes.
    pub fn permuted(&self, perm: &[usize]) -> Result<Self, ArrayError> {
        let rank = self.shape.len();
        let bad = || ArrayError::BadPermutation {
            perm: perm.to_vec(),
            rank,
        };
        let mut seen = vec![false; rank];
        for &p in perm {
            if p >= rank || std::mem::replace(&mut seen[p], true) {
                return Err(bad());
            }
        }
        if perm.len() != rank {
            return Err(bad());
        }
        let shape: Vec<usize> = perm.iter().map(|&p| self.shape[p]).collect();
        // Row-major strides of the input, read in output order.
        let mut strides = vec![1usize; rank];
        for i in (0..rank.saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * self.shape[i + 1];
        }
        let src: Vec<usize> = perm.iter().map(|&p| strides[p]).collect();
        let mut data = Vec::with_capacity(self.data.len());
        let mut idx = vec![0usize; rank];
        for _ in 0..self.data.len() {
            let off: usize = idx.iter().zip(&src).map(|(i, s)| i * s).sum();
            data.push(self.data[off]);
            for ax in (0..rank).rev() {
                idx[ax] += 1;
                if idx[ax] < shape[ax] {
                    break;
                }
                idx[ax] = 0;
            }
        }
        Self::new(shape, data)
    }

    /// Whether every value is finite.
    pub fn all_finite(&self) -> bool {
        self.data.iter().all(|v| v.is_finite())
    }
}

/// Index of the largest value (first on ties); `None` for an empty slice or one with only NaNs.
pub fn argmax(values: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in values.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        match best {
            Some((_, b)) if v <= b => {}
            _ => best = Some((i, v)),
        }
    }
    best.map(|(i, _)| i)
}

/// Index of the smallest value (first on ties).
pub fn argmin(values: &[f32]) -> Option<usize> {
    let negated: Vec<f32> = values.iter().map(|v| -v).collect();
    argmax(&negated)
}

/// The `k` largest values as `(index, value)`, largest first.
pub fn top_k(values: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx.into_iter().take(k).map(|i| (i, values[i])).collect()
}

/// Softmax of one row of logits, computed stably.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&z| (z - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// IEEE 754 half precision (binary16, NumPy's `f2`, torch's `HalfStorage`) to single precision,
/// exactly: every half value, subnormals, infinities and NaNs included, is an `f32`.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: normalise.
            let shift = f.leading_zeros() - 21;
            sign | ((127 - 15 + 1 - shift) << 23) | (((f << shift) & 0x3ff) << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// bfloat16 (torch's `BFloat16Storage`) to single precision: the upper half of an `f32`.
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_sizes() {
        assert!(Array::new(vec![2, 3], vec![0.0; 6]).is_ok());
        let err = Array::new(vec![2, 3], vec![0.0; 5]).unwrap_err();
        assert!(err.to_string().contains("6"), "{err}");
    }

    #[test]
    fn select_and_concat_round_trip() {
        let a = Array::new(vec![3, 2], vec![0., 1., 2., 3., 4., 5.]).unwrap();
        let s = a.select(&[2, 0]);
        assert_eq!(s.data(), &[4., 5., 0., 1.]);
        let c = Array::concat(&[a.select(&[0]), a.select(&[1, 2])]).unwrap();
        assert_eq!(c, a);
    }

    #[test]
    fn argmax_top_k_softmax() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), Some(1));
        assert_eq!(argmin(&[1.0, 3.0, -1.0]), Some(2));
        assert_eq!(argmax(&[f32::NAN]), None);
        assert_eq!(top_k(&[0.1, 0.5, 0.2], 2), vec![(1, 0.5), (2, 0.2)]);
        let p = softmax(&[1000.0, 1000.0]);
        assert!((p[0] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn half_and_bfloat_conversions_are_exact() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x03ff), 1023.0 * 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8400), -(2f32.powi(-14)));
        assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(bf16_to_f32((1.5f32.to_bits() >> 16) as u16), 1.5);
        assert_eq!(bf16_to_f32(0xc040), -3.0);
    }
}

#[cfg(test)]
mod permute_tests {
    use super::*;

    #[test]
    fn permuted_moves_axes_like_numpy_transpose() {
        // [2, 3] → [3, 2].
        let a = Array::new(vec![2, 3], vec![0., 1., 2., 3., 4., 5.]).unwrap();
        let t = a.permuted(&[1, 0]).unwrap();
        assert_eq!(t.shape(), &[3, 2]);
        assert_eq!(t.data(), &[0., 3., 1., 4., 2., 5.]);
        // HWIO [1, 2, 2, 3] → OIHW [3, 2, 1, 2]: element (h, w, i, o) lands at (o, i, h, w).
        let hwio = Array::new(vec![1, 2, 2, 3], (0..12).map(|v| v as f32).collect()).unwrap();
        let oihw = hwio.permuted(&[3, 2, 0, 1]).unwrap();
        assert_eq!(oihw.shape(), &[3, 2, 1, 2]);
        let at = |o: usize, i: usize, w: usize| oihw.data()[(o * 2 + i) * 2 + w];
        let src = |w: usize, i: usize, o: usize| hwio.data()[(w * 2 + i) * 3 + o];
        for o in 0..3 {
            for i in 0..2 {
                for w in 0..2 {
                    assert_eq!(at(o, i, w), src(w, i, o));
                }
            }
        }
        assert!(a.permuted(&[0, 0]).is_err());
        assert!(a.permuted(&[0]).is_err());
    }
}
