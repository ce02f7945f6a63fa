//! Target selection for targeted attacks, and the per-example random streams every random choice
//! draws from.

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;

use super::{AttackError, TargetMode};
use crate::array::{Array, argmin};

/// A random stream for one example, derived from the attack seed and the example's pixels, so
/// that an image gets the same random start and target whatever batch or position it is in.
pub fn example_rng(seed: u64, pixels: &[f32]) -> ChaCha8Rng {
    // FNV-1a over the bit patterns.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in pixels {
        for b in v.to_bits().to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    ChaCha8Rng::seed_from_u64(seed ^ h)
}

/// Chooses one target per example; `None` for untargeted attacks.
pub fn choose_targets(
    mode: &TargetMode,
    labels: &[usize],
    clean_logits: &Array,
    rngs: &mut [ChaCha8Rng],
) -> Result<Option<Vec<usize>>, AttackError> {
    let k = clean_logits.example_len();
    match mode {
        TargetMode::Untargeted => Ok(None),
        TargetMode::Class(c) => {
            if *c >= k {
                return Err(AttackError::Config(format!(
                    "target class {c} is out of range: the model has {k} classes"
                )));
            }
            Ok(Some(vec![*c; labels.len()]))
        }
        TargetMode::Random => {
            if k < 2 {
                return Err(AttackError::Config(
                    "a random target needs at least two classes".into(),
                ));
            }
            Ok(Some(
                labels
                    .iter()
                    .zip(rngs.iter_mut())
                    .map(|(&y, rng)| (y + rng.random_range(1..k)) % k)
                    .collect(),
            ))
        }
        TargetMode::LeastLikely => Ok(Some(
            (0..labels.len())
                .map(|i| argmin(clean_logits.example(i)).unwrap_or(0))
                .collect(),
        )),
    }
}
