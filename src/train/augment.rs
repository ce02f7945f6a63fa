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

    /// What a crop at offset (dy, dx) from the image padded by zeros, then a left–right flip,
    /// gives, computed the long way: build the padded image, cut the window, reverse the rows.
    fn expected(
        img: &[f32],
        h: usize,
        w: usize,
        pad: usize,
        dy: i64,
        dx: i64,
        mirror: bool,
    ) -> Vec<f32> {
        let (ph, pw) = (h + 2 * pad, w + 2 * pad);
        let mut padded = vec![0f32; ph * pw];
        for y in 0..h {
            padded[(y + pad) * pw + pad..(y + pad) * pw + pad + w]
                .copy_from_slice(&img[y * w..(y + 1) * w]);
        }
        let (top, left) = ((pad as i64 + dy) as usize, (pad as i64 + dx) as usize);
        let mut out = Vec::new();
        for y in 0..h {
            let mut row = padded[(top + y) * pw + left..(top + y) * pw + left + w].to_vec();
            if mirror {
                row.reverse();
            }
            out.extend(row);
        }
        out
    }

    #[test]
    fn crops_and_flips_match_a_padded_window() {
        let data: Vec<f32> = (1..=3 * 16).map(|v| v as f32).collect();
        let x = Array::new(vec![3, 1, 4, 4], data).unwrap();
        let mut same = x.clone();
        crop_flip(&mut same, 0, false, &mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(same, x);
        let pad = 2;
        let mut out = x.clone();
        crop_flip(&mut out, pad, true, &mut ChaCha8Rng::seed_from_u64(3));
        // The same draws, in the documented order: dy, dx, then the flip.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (mut changed, mut mirrored) = (0, 0);
        for i in 0..3 {
            let p = pad as i64;
            let dy = rng.random_range(-p..=p);
            let dx = rng.random_range(-p..=p);
            let mirror = rng.random_bool(0.5);
            let want = expected(x.example(i), 4, 4, pad, dy, dx, mirror);
            assert_eq!(
                out.example(i),
                &want[..],
                "image {i}: dy {dy} dx {dx} flip {mirror}"
            );
            changed += usize::from(out.example(i) != x.example(i));
            mirrored += usize::from(mirror);
        }
        assert!(changed > 0, "seed 3 should move at least one image");
        assert!(mirrored > 0, "seed 3 should flip at least one image");
        // Same seed, same result.
        let mut again = x.clone();
        crop_flip(&mut again, pad, true, &mut ChaCha8Rng::seed_from_u64(3));
        assert_eq!(again, out);
    }
}
