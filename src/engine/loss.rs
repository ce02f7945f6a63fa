//! Losses over logits, evaluated on the host for every engine: the value per example and its
//! gradient with respect to the logits, which engines then propagate back to the input.

use crate::array::Array;

use super::EngineError;

/// A per-example loss on the logits `Z` (`[N, K]`).
#[derive(Clone, Debug, PartialEq)]
pub enum Loss {
    /// Softmax cross-entropy against `classes[n]`. Attacks ascend it for the true label
    /// (untargeted) or descend it for a target class (targeted).
    CrossEntropy {
        /// One class per example.
        classes: Vec<usize>,
    },
    /// The Carlini–Wagner margin `f`, to be minimised. Untargeted, with `classes` the true labels:
    /// `max(Z_y − max_{i≠y} Z_i, −κ)`. Targeted, with `classes` the targets:
    /// `max(max_{i≠t} Z_i − Z_t, −κ)`.
    Margin {
        /// True labels or targets.
        classes: Vec<usize>,
        /// Whether `classes` are targets.
        targeted: bool,
        /// Confidence κ ≥ 0.
        kappa: f32,
    },
    /// The difference-of-logits-ratio loss of Croce & Hein (2020), to be maximised:
    /// `−(Z_y − max_{i≠y} Z_i) / (Z_π1 − Z_π3 + 10⁻¹²)` with `Z_π1 ≥ Z_π2 ≥ …` the sorted
    /// logits. Unchanged when the logits are shifted or scaled; needs at least 3 classes.
    Dlr {
        /// True labels.
        classes: Vec<usize>,
    },
    /// The targeted DLR loss, to be maximised:
    /// `−(Z_y − Z_t) / (Z_π1 − (Z_π3 + Z_π4)/2 + 10⁻¹²)`; needs at least 4 classes.
    DlrTargeted {
        /// True labels.
        classes: Vec<usize>,
        /// Target classes.
        targets: Vec<usize>,
    },
    /// A linear function of the logits, `Σ_k w_nk Z_nk` (DeepFool uses `Z_k − Z_k̂`).
    LogitWeights {
        /// Weights `[N, K]`, row-major.
        weights: Vec<f32>,
    },
}

impl Loss {
    /// The same loss for examples `range` of the batch (`k` logits per example).
    pub fn slice(&self, range: std::ops::Range<usize>, k: usize) -> Loss {
        match self {
            Loss::CrossEntropy { classes } => Loss::CrossEntropy {
                classes: classes.get(range).unwrap_or_default().to_vec(),
            },
            Loss::Margin {
                classes,
                targeted,
                kappa,
            } => Loss::Margin {
                classes: classes.get(range).unwrap_or_default().to_vec(),
                targeted: *targeted,
                kappa: *kappa,
            },
            Loss::Dlr { classes } => Loss::Dlr {
                classes: classes.get(range).unwrap_or_default().to_vec(),
            },
            Loss::DlrTargeted { classes, targets } => Loss::DlrTargeted {
                classes: classes.get(range.clone()).unwrap_or_default().to_vec(),
                targets: targets.get(range).unwrap_or_default().to_vec(),
            },
            Loss::LogitWeights { weights } => Loss::LogitWeights {
                weights: weights
                    .get(range.start * k..range.end * k)
                    .unwrap_or_default()
                    .to_vec(),
            },
        }
    }

    /// The loss of the examples `idx` of the batch, in that order (`k` classes per example).
    /// An index past the batch is skipped.
    pub fn select(&self, idx: &[usize], k: usize) -> Loss {
        let pick = |v: &[usize]| idx.iter().filter_map(|&i| v.get(i).copied()).collect();
        match self {
            Loss::CrossEntropy { classes } => Loss::CrossEntropy {
                classes: pick(classes),
            },
            Loss::Margin {
                classes,
                targeted,
                kappa,
            } => Loss::Margin {
                classes: pick(classes),
                targeted: *targeted,
                kappa: *kappa,
            },
            Loss::Dlr { classes } => Loss::Dlr {
                classes: pick(classes),
            },
            Loss::DlrTargeted { classes, targets } => Loss::DlrTargeted {
                classes: pick(classes),
                targets: pick(targets),
            },
            Loss::LogitWeights { weights } => Loss::LogitWeights {
                weights: idx
                    .iter()
                    .filter_map(|&i| weights.get(i * k..(i + 1) * k))
                    .flatten()
                    .copied()
                    .collect(),
            },
        }
    }

    /// Evaluates the loss on `logits`: the value per example and `∂loss/∂Z`.
    pub fn evaluate(&self, logits: &Array) -> Result<(Vec<f32>, Array), EngineError> {
        let n = logits.batch();
        let k = logits.example_len();
        let mut dz = Array::zeros(vec![n, k]);
        let mut values = Vec::with_capacity(n);
        let check_classes = |classes: &[usize]| {
            if classes.len() != n {
                return Err(EngineError::Loss(format!(
                    "{} classes for a batch of {n}",
                    classes.len()
                )));
            }
            if let Some(c) = classes.iter().find(|&&c| c >= k) {
                return Err(EngineError::Loss(format!(
                    "class {c} is out of range for {k} logits"
                )));
            }
            Ok(())
        };
        match self {
            Loss::CrossEntropy { classes } => {
                check_classes(classes)?;
                for (i, &y) in classes.iter().enumerate() {
                    let z = logits.example(i);
                    let p = crate::array::softmax(z);
                    values.push(-(p[y].max(f32::MIN_POSITIVE)).ln());
                    let row = dz.example_mut(i);
                    row.copy_from_slice(&p);
                    row[y] -= 1.0;
                }
            }
            Loss::Margin {
                classes,
                targeted,
                kappa,
            } => {
                check_classes(classes)?;
                for (i, &c) in classes.iter().enumerate() {
                    let z = logits.example(i);
                    let other = best_other(z, c);
                    let (raw, plus, minus) = if *targeted {
                        (z[other] - z[c], other, c)
                    } else {
                        (z[c] - z[other], c, other)
                    };
                    let row = dz.example_mut(i);
                    if raw > -kappa {
                        values.push(raw);
                        row[plus] += 1.0;
                        row[minus] -= 1.0;
                    } else {
                        values.push(-kappa);
                    }
                }
            }
            Loss::Dlr { classes } => {
                check_classes(classes)?;
                if k < 3 {
                    return Err(EngineError::Loss(format!(
                        "the DLR loss needs at least 3 classes; this model has {k} (use a \
                         cross-entropy attack such as apgd-ce)"
                    )));
                }
                for (i, &y) in classes.iter().enumerate() {
                    values.push(dlr(logits.example(i), y, None, dz.example_mut(i)));
                }
            }
            Loss::DlrTargeted { classes, targets } => {
                check_classes(classes)?;
                check_classes(targets)?;
                if k < 4 {
                    return Err(EngineError::Loss(format!(
                        "the targeted DLR loss needs at least 4 classes; this model has {k} \
                         (use a cross-entropy attack such as apgd-ce)"
                    )));
                }
                for (i, (&y, &t)) in classes.iter().zip(targets).enumerate() {
                    values.push(dlr(logits.example(i), y, Some(t), dz.example_mut(i)));
                }
            }
            Loss::LogitWeights { weights } => {
                if weights.len() != n * k {
                    return Err(EngineError::Loss(format!(
                        "{} logit weights for a [{n}, {k}] batch",
                        weights.len()
                    )));
                }
                for i in 0..n {
                    let z = logits.example(i);
                    let w = &weights[i * k..(i + 1) * k];
                    values.push(z.iter().zip(w).map(|(a, b)| a * b).sum());
                }
                dz.data_mut().copy_from_slice(weights);
            }
        }
        Ok((values, dz))
    }
}

/// The (targeted, when `target` is given) DLR loss of one logits row `z` with label `y`; writes
/// its gradient with respect to `z` into `dz` (zeroed by the caller) and returns its value.
/// Needs `z.len() ≥ 3` (untargeted) or `≥ 4` (targeted).
pub fn dlr(z: &[f32], y: usize, target: Option<usize>, dz: &mut [f32]) -> f32 {
    let mut order: Vec<usize> = (0..z.len()).collect();
    order.sort_by(|&a, &b| z[b].total_cmp(&z[a]));
    let other = target.unwrap_or_else(|| best_other(z, y));
    let numerator = z[y] - z[other];
    // The denominator and the classes it is built from, with their weights.
    let parts: &[(usize, f32)] = match target {
        None => &[(order[0], 1.0), (order[2], -1.0)],
        Some(_) => &[(order[0], 1.0), (order[2], -0.5), (order[3], -0.5)],
    };
    let denominator = parts.iter().map(|&(c, w)| w * z[c]).sum::<f32>() + 1e-12;
    // f = −N/D: ∂f/∂N = −1/D, ∂f/∂D = N/D².
    dz[y] -= 1.0 / denominator;
    dz[other] += 1.0 / denominator;
    for &(c, w) in parts {
        dz[c] += w * numerator / (denominator * denominator);
    }
    -numerator / denominator
}

/// The index of the largest logit other than `c` (first on ties).
pub fn best_other(z: &[f32], c: usize) -> usize {
    let mut best = if c == 0 { 1.min(z.len() - 1) } else { 0 };
    for (i, &v) in z.iter().enumerate() {
        if i != c && v > z[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Array {
        Array::new(vec![2, 3], vec![1.0, 2.0, 0.5, -1.0, 0.0, 3.0]).unwrap()
    }

    #[test]
    fn selecting_examples_keeps_every_kind_of_loss_whole() {
        let w = Loss::LogitWeights {
            weights: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        };
        let Loss::LogitWeights { weights } = w.select(&[1], 3) else {
            panic!("kind changed")
        };
        assert_eq!(weights, [4.0, 5.0, 6.0]);
        let m = Loss::Margin {
            classes: vec![7, 8, 9],
            targeted: true,
            kappa: 0.5,
        };
        assert_eq!(
            m.select(&[2, 0], 10),
            Loss::Margin {
                classes: vec![9, 7],
                targeted: true,
                kappa: 0.5
            }
        );
    }

    /// Central finite difference of each loss with respect to each logit.
    fn check_fd(loss: &Loss) {
        let z = logits();
        let (_, dz) = loss.evaluate(&z).unwrap();
        for j in 0..z.len() {
            let h = 1e-3;
            let mut zp = z.clone();
            zp.data_mut()[j] += h;
            let mut zm = z.clone();
            zm.data_mut()[j] -= h;
            let (vp, _) = loss.evaluate(&zp).unwrap();
            let (vm, _) = loss.evaluate(&zm).unwrap();
            let fd = (vp.iter().sum::<f32>() - vm.iter().sum::<f32>()) / (2.0 * h);
            assert!(
                (fd - dz.data()[j]).abs() < 1e-3,
                "{loss:?} logit {j}: fd {fd} vs {}",
                dz.data()[j]
            );
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        check_fd(&Loss::CrossEntropy {
            classes: vec![0, 2],
        });
        check_fd(&Loss::Margin {
            classes: vec![0, 1],
            targeted: false,
            kappa: 10.0,
        });
        check_fd(&Loss::Margin {
            classes: vec![2, 1],
            targeted: true,
            kappa: 10.0,
        });
        check_fd(&Loss::LogitWeights {
            weights: vec![1.0, -1.0, 0.0, 0.5, 0.0, -0.5],
        });
    }

    #[test]
    fn margin_values_and_clamp() {
        let (v, dz) = Loss::Margin {
            classes: vec![1, 2],
            targeted: false,
            kappa: 0.0,
        }
        .evaluate(&logits())
        .unwrap();
        // Example 0: Z_1 - Z_0 = 1; example 1: Z_2 - Z_1 = 3.
        assert_eq!(v, vec![1.0, 3.0]);
        let (v, dz0) = Loss::Margin {
            classes: vec![0, 0],
            targeted: false,
            kappa: 0.5,
        }
        .evaluate(&logits())
        .unwrap();
        // Both already misclassified by more than kappa: clamped, zero gradient.
        assert_eq!(v, vec![-0.5, -0.5]);
        assert!(dz0.data().iter().all(|&g| g == 0.0));
        assert_eq!(dz.data()[1], 1.0);
    }

    #[test]
    fn bad_labels_are_errors() {
        let z = logits();
        assert!(
            Loss::CrossEntropy { classes: vec![0] }
                .evaluate(&z)
                .is_err()
        );
        assert!(
            Loss::CrossEntropy {
                classes: vec![0, 3]
            }
            .evaluate(&z)
            .is_err()
        );
    }

    #[test]
    fn dlr_matches_its_formula_and_ignores_shift_and_scale() {
        // Sorted: 3 (class 0), 2 (class 2), 1 (class 1), 0.5 (class 3).
        let z = [3.0f32, 1.0, 2.0, 0.5];
        let mut dz = [0.0f32; 4];
        // Untargeted, label 0: −(3 − 2)/(3 − 1).
        assert!((dlr(&z, 0, None, &mut dz) + 0.5).abs() < 1e-6);
        // Label 1 (not the top): −(1 − 3)/(3 − 1) = 1.
        assert!((dlr(&z, 1, None, &mut [0.0; 4]) - 1.0).abs() < 1e-6);
        // Targeted, label 0 to 3: −(3 − 0.5)/(3 − (1 + 0.5)/2).
        assert!((dlr(&z, 0, Some(3), &mut [0.0; 4]) + 2.5 / 2.25).abs() < 1e-6);
        for target in [None, Some(3)] {
            let base = dlr(&z, 0, target, &mut [0.0; 4]);
            let moved: Vec<f32> = z.iter().map(|v| 2.5 * v - 7.0).collect();
            let after = dlr(&moved, 0, target, &mut [0.0; 4]);
            assert!((base - after).abs() < 1e-5, "{target:?}: {base} vs {after}");
        }
        // The gradient against central differences.
        for (y, target) in [(0, None), (1, None), (0, Some(3)), (2, Some(1))] {
            let mut g = [0.0f32; 4];
            dlr(&z, y, target, &mut g);
            for k in 0..4 {
                let h = 1e-3;
                let (mut up, mut down) = (z, z);
                up[k] += h;
                down[k] -= h;
                let fd = (dlr(&up, y, target, &mut [0.0; 4])
                    - dlr(&down, y, target, &mut [0.0; 4]))
                    / (2.0 * h);
                assert!(
                    (fd - g[k]).abs() < 2e-3,
                    "y {y} t {target:?} k {k}: {fd} vs {}",
                    g[k]
                );
            }
        }
    }

    #[test]
    fn dlr_needs_three_classes_and_targeted_four() {
        let z = Array::new(vec![1, 3], vec![1.0, 2.0, 3.0]).unwrap();
        assert!(Loss::Dlr { classes: vec![0] }.evaluate(&z).is_ok());
        let err = Loss::DlrTargeted {
            classes: vec![0],
            targets: vec![1],
        }
        .evaluate(&z)
        .unwrap_err();
        assert!(err.to_string().contains("at least 4 classes"), "{err}");
        let two = Array::new(vec![1, 2], vec![1.0, 2.0]).unwrap();
        let err = Loss::Dlr { classes: vec![0] }.evaluate(&two).unwrap_err();
        assert!(err.to_string().contains("at least 3 classes"), "{err}");
    }
}
