//! Accuracy under a random defence: how many images each independent draw of its randomness
//! classifies correctly, and their mean and spread.

use serde::{Deserialize, Serialize};

/// Accuracy over independent draws of a random defence's randomness, every image re-predicted
/// under each draw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrawStats {
    /// Images classified correctly under each draw, summed over the batches (draw `d` of every
    /// batch counts towards entry `d`).
    pub correct: Vec<usize>,
    /// Accuracy in percent under each draw.
    pub accuracy: Vec<f64>,
    /// Mean of `accuracy`.
    pub mean: f64,
    /// Sample standard deviation of `accuracy` (divided by draws − 1; 0 for one draw).
    pub sd: f64,
}

impl DrawStats {
    /// No images yet, `draws` draws.
    pub(crate) fn new(draws: usize) -> Self {
        Self {
            correct: vec![0; draws],
            accuracy: vec![],
            mean: 0.0,
            sd: 0.0,
        }
    }

    /// Adds one batch's counts, one per draw.
    pub(crate) fn add(&mut self, counts: &[usize]) {
        for (c, n) in self.correct.iter_mut().zip(counts) {
            *c += n;
        }
    }

    /// Computes the accuracies, their mean and spread over `images` images.
    pub(crate) fn finish(&mut self, images: usize) {
        self.accuracy = self
            .correct
            .iter()
            .map(|&c| {
                if images == 0 {
                    0.0
                } else {
                    100.0 * c as f64 / images as f64
                }
            })
            .collect();
        let n = self.accuracy.len();
        self.mean = if n == 0 {
            0.0
        } else {
            self.accuracy.iter().sum::<f64>() / n as f64
        };
        self.sd = if n < 2 {
            0.0
        } else {
            let ss: f64 = self.accuracy.iter().map(|a| (a - self.mean).powi(2)).sum();
            (ss / (n - 1) as f64).sqrt()
        };
    }

    /// `mean ± sd` with two decimals, e.g. `71.20 ± 0.80`.
    pub fn text(&self) -> String {
        format!("{:.2} ± {:.2}", self.mean, self.sd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_draw_counts_add_over_batches_into_a_mean_and_sample_sd() {
        let mut s = DrawStats::new(3);
        s.add(&[4, 5, 6]);
        s.add(&[4, 3, 6]);
        s.finish(20);
        assert_eq!(s.correct, vec![8, 8, 12]);
        assert_eq!(s.accuracy, vec![40.0, 40.0, 60.0]);
        assert!((s.mean - 140.0 / 3.0).abs() < 1e-9);
        // Deviations −20/3, −20/3, 40/3: squares sum to 2400/9, over 2 draws − 1 = 400/3.
        assert!((s.sd - (400.0f64 / 3.0).sqrt()).abs() < 1e-9, "{}", s.sd);
        assert_eq!(s.text(), format!("{:.2} ± {:.2}", s.mean, s.sd));
    }
}
