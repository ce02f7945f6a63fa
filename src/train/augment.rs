//! Data augmentation for training: random crops from a zero-padded image and horizontal flips,
//! drawn from a seeded generator so that a run is reproducible.

use rand::Rng as _;
use rand_chacha::ChaCha8Rng;

use crate::array::Array;

/// Shifts each image of `x` (NCHW) by a random offset in `[-pad, pad]` on both axes (what a
/// random crop from the image padded by `pad` zeros gives) and flips it left–right with
/// probability ½ when `flip` is set.
pub fn crop_flip(x: &mut Array, pad: usize, flip: bool, rng: &mut ChaCha8Rng) {
    let &[_, c, h, w] = x.shape() else { return };
    let pad = pad as i64;
    let mut src = vec![0f32; c * h * w];
    for i in 0..x.batch() {
        let dy = rng.random_range(-pad..=pad) as isize;
        let dx = rng.random_range(-pad..=pad) as isize;
        let mirror = flip && rng.random_bool(0.5);
        let ex = x.example_mut(i);
        src.copy_from_slice(ex);
        for ch in 0..c {
            for y in 0..h {
                for xx in 0..w {
                    let sy = y as isize + dy;
                    let sx0 = if mirror { w - 1 - xx } else { xx } as isize + dx;
                    let inside = (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx0);
                    ex[(ch * h + y) * w + xx] = if inside {
                        src[(ch * h + sy as usize) * w + sx0 as usize]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    #[test]
    fn no_shift_no_flip_is_identity_and_shifts_keep_values() {
        let data: Vec<f32> = (0..2 * 16).map(|v| v as f32).collect();
        let x = Array::new(vec![2, 1, 4, 4], data).unwrap();
        let mut same = x.clone();
        crop_flip(&mut same, 0, false, &mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(same, x);
        let mut flipped = x.clone();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        crop_flip(&mut flipped, 1, true, &mut rng);
        for i in 0..2 {
            // Every value is zero padding or one of the image's own values.
            assert!(
                flipped
                    .example(i)
                    .iter()
                    .all(|v| *v == 0.0 || x.example(i).contains(v))
            );
        }
        // Same seed, same result.
        let mut again = x.clone();
        crop_flip(&mut again, 1, true, &mut ChaCha8Rng::seed_from_u64(3));
        assert_eq!(again, flipped);
    }
}
