//! Square attack (Andriushchenko et al., ECCV 2020), L∞ and L2, with AutoAttack's settings:
//! random search over square windows using forward passes only (so it sees through masked
//! gradients), the margin loss `z_y − max_{j≠y} z_j` (targeted: `max_{j≠t} z_j − z_t`), a
//! candidate accepted when it lowers the margin or reaches success, 5000 iterations after the
//! initialisation by default, and AutoAttack's schedule for the window size (`p_init` halved at
//! iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000, not rescaled to the budget).
//!
//! Differences from AutoAttack's code, on purpose: every image draws its own windows and signs
//! from its own random stream (AutoAttack shares one window per batch), so an image's result does
//! not depend on its batch; window offsets cover every position (AutoAttack's `randint(0, h − s)`
//! never uses the last one); non-square and small images are handled (the side is capped at
//! `min(H, W) − 1`, or 1). Queries are batched: each iteration is one forward pass over the
//! images not yet fooled.

use rand::Rng as _;
use rand_chacha::ChaCha8Rng;

use super::project::l2;
use super::{AttackError, Context, Norm, Progress, StepRecord, record, success_margin};
use crate::array::Array;
use crate::engine::Engine;

/// The fraction of pixels a window covers at iteration `it` (AutoAttack's schedule).
pub fn p_schedule(p_init: f32, it: usize) -> f32 {
    let halvings = match it {
        0..=10 => 0,
        11..=50 => 1,
        51..=200 => 2,
        201..=500 => 3,
        501..=1000 => 4,
        1001..=2000 => 5,
        2001..=4000 => 6,
        4001..=6000 => 7,
        6001..=8000 => 8,
        _ => 9,
    };
    p_init / (1u32 << halvings) as f32
}

/// The side of the square window at iteration `it` for an `h × w` image.
pub fn window_side(p_init: f32, it: usize, h: usize, w: usize, norm: Norm) -> usize {
    let p = p_schedule(p_init, it);
    let side = ((p * (h * w) as f32).sqrt().round() as usize).max(1);
    let cap = h.min(w).saturating_sub(1).max(1);
    match norm {
        Norm::Linf => side.min(cap),
        Norm::L2 => {
            let side = side.max(3);
            let side = if side.is_multiple_of(2) {
                side + 1
            } else {
                side
            };
            side.min(cap)
        }
    }
}

/// The image geometry.
#[derive(Clone, Copy, Debug)]
struct Shape {
    c: usize,
    h: usize,
    w: usize,
}

impl Shape {
    fn at(&self, ch: usize, r: usize, col: usize) -> usize {
        (ch * self.h + r) * self.w + col
    }
}

/// Runs Square on every image of `ctx`.
pub fn run(
    engine: &mut dyn Engine,
    ctx: &Context<'_>,
    rngs: &mut [ChaCha8Rng],
) -> Result<(Array, Vec<Vec<StepRecord>>), AttackError> {
    let x = ctx.x;
    let n = x.batch();
    let shape = match x.shape() {
        [_, c, h, w] => Shape {
            c: *c,
            h: *h,
            w: *w,
        },
        other => {
            return Err(AttackError::Config(format!(
                "Square needs images shaped [N, C, H, W], not {other:?}"
            )));
        }
    };
    let cfg = ctx.cfg;
    let (eps, norm) = (cfg.eps, cfg.norm);
    let mut best = x.clone();
    for (i, rng) in rngs.iter_mut().enumerate().take(n) {
        let init = match norm {
            Norm::Linf => stripes(x.example(i), eps, shape, rng),
            Norm::L2 => bumps(x.example(i), eps, shape, rng),
        };
        best.example_mut(i).copy_from_slice(&init);
    }
    let logits = engine.forward(&best, ctx.opts)?.logits;
    let mut margin: Vec<f32> = (0..n)
        .map(|i| success_margin(logits.example(i), ctx.labels[i], ctx.target(i)))
        .collect();
    let mut history: Vec<Vec<StepRecord>> = (0..n)
        .map(|i| {
            vec![record(
                0,
                margin[i],
                logits.example(i),
                ctx.labels[i],
                ctx.target(i),
                best.example(i),
                x.example(i),
            )]
        })
        .collect();
    let queries = cfg.square.queries;
    for it in 0..queries {
        ctx.cancel.check()?;
        let active: Vec<usize> = (0..n).filter(|&i| margin[i] > 0.0).collect();
        if active.is_empty() {
            break;
        }
        let side = window_side(cfg.square.p_init, it, shape.h, shape.w, norm);
        let mut candidates = best.select(&active);
        for (j, &i) in active.iter().enumerate() {
            let cand = candidates.example_mut(j);
            match norm {
                Norm::Linf => linf_step(cand, x.example(i), eps, side, shape, &mut rngs[i]),
                Norm::L2 => l2_step(cand, x.example(i), eps, side, shape, &mut rngs[i]),
            }
        }
        let logits = engine.forward(&candidates, ctx.opts)?.logits;
        for (j, &i) in active.iter().enumerate() {
            let z = logits.example(j);
            let m = success_margin(z, ctx.labels[i], ctx.target(i));
            if m < margin[i] || m <= 0.0 {
                margin[i] = m;
                best.example_mut(i).copy_from_slice(candidates.example(j));
                history[i].push(record(
                    it + 1,
                    m,
                    z,
                    ctx.labels[i],
                    ctx.target(i),
                    best.example(i),
                    x.example(i),
                ));
            }
        }
        if it % 25 == 0 {
            (ctx.progress)(Progress {
                stage: "square",
                done: it as f32 / queries as f32,
            });
        }
    }
    (ctx.progress)(Progress {
        stage: "square",
        done: 1.0,
    });
    Ok((best, history))
}

fn sign(rng: &mut ChaCha8Rng) -> f32 {
    if rng.random::<bool>() { 1.0 } else { -1.0 }
}

/// L∞ initialisation: each column of each channel moves by ±ε (vertical stripes).
fn stripes(x: &[f32], eps: f32, s: Shape, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let mut out = x.to_vec();
    for ch in 0..s.c {
        for col in 0..s.w {
            let d = eps * sign(rng);
            for r in 0..s.h {
                let k = s.at(ch, r, col);
                out[k] = (x[k] + d).clamp(0.0, 1.0);
            }
        }
    }
    out
}

/// A window position for a `side`-wide square.
fn window(side: usize, s: Shape, rng: &mut ChaCha8Rng) -> (usize, usize) {
    (
        rng.random_range(0..=s.h.saturating_sub(side)),
        rng.random_range(0..=s.w.saturating_sub(side)),
    )
}

/// One L∞ candidate: a random window of `cand` set to `x ± ε` (one sign per channel).
fn linf_step(cand: &mut [f32], x: &[f32], eps: f32, side: usize, s: Shape, rng: &mut ChaCha8Rng) {
    let (r0, c0) = window(side, s, rng);
    for ch in 0..s.c {
        let d = eps * sign(rng);
        for r in r0..(r0 + side).min(s.h) {
            for col in c0..(c0 + side).min(s.w) {
                let k = s.at(ch, r, col);
                cand[k] = (x[k] + d).clamp(0.0, 1.0);
            }
        }
    }
}

/// The "two bumps" pattern of side `side`: concentric rectangles weighted 1/(k+1)², positive in
/// the top half and negative in the bottom half, unit L2 norm, transposed at random.
fn bump(side: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let half = side / 2;
    let mut d = vec![0.0f32; side * side];
    for (rows, offset, sgn) in [(half, 0, 1.0f32), (side - half, half, -1.0)] {
        let part = rectangles(rows, side);
        for r in 0..rows {
            for c in 0..side {
                d[(offset + r) * side + c] = sgn * part[r * side + c];
            }
        }
    }
    let n = l2(&d).max(f32::MIN_POSITIVE);
    d.iter_mut().for_each(|v| *v /= n);
    if rng.random::<bool>() {
        let t = d.clone();
        for r in 0..side {
            for c in 0..side {
                d[r * side + c] = t[c * side + r];
            }
        }
    }
    d
}

/// Concentric rectangles around the centre of an `rows × cols` patch, weighted 1/(k+1)², unit
/// L2 norm.
fn rectangles(rows: usize, cols: usize) -> Vec<f32> {
    let mut d = vec![0.0f32; rows * cols];
    let (rc, cc) = (rows / 2 + 1, cols / 2 + 1);
    for k in 0..rc.max(cc) {
        let w = 1.0 / ((k + 1) * (k + 1)) as f32;
        let r_lo = (rc as isize - 1 - k as isize).max(0) as usize;
        let c_lo = (cc as isize - 1 - k as isize).max(0) as usize;
        let r_hi = ((rc as isize - 1 - k as isize) + 2 * k as isize + 1).clamp(0, rows as isize);
        let c_hi = ((cc as isize - 1 - k as isize) + 2 * k as isize + 1).clamp(0, cols as isize);
        for r in r_lo..r_hi as usize {
            for c in c_lo..c_hi as usize {
                d[r * cols + c] += w;
            }
        }
    }
    let n = l2(&d).max(f32::MIN_POSITIVE);
    d.iter_mut().for_each(|v| *v /= n);
    d
}

/// `δ` rescaled to L2 norm `eps`, added to `x` and clipped to [0, 1].
fn place(x: &[f32], delta: &[f32], eps: f32) -> Vec<f32> {
    let n = l2(delta) + 1e-12;
    x.iter()
        .zip(delta)
        .map(|(&v, &d)| (v + d * eps / n).clamp(0.0, 1.0))
        .collect()
}

/// L2 initialisation: a grid of bumps of side ⌊H/5⌋ with a random sign per channel, scaled to
/// ‖δ‖₂ = ε.
fn bumps(x: &[f32], eps: f32, s: Shape, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let side = (s.h / 5).max(1);
    let start = (s.h - side * 5) / 2;
    let mut delta = vec![0.0f32; x.len()];
    for tr in 0..s.h / side {
        for tc in 0..s.w / side {
            let (r0, c0) = (start + tr * side, start + tc * side);
            let pattern = bump(side, rng);
            for ch in 0..s.c {
                let sg = sign(rng);
                for r in 0..side {
                    for c in 0..side {
                        let (rr, cc) = (r0 + r, c0 + c);
                        if rr < s.h && cc < s.w {
                            delta[s.at(ch, rr, cc)] += sg * pattern[r * side + c];
                        }
                    }
                }
            }
        }
    }
    place(x, &delta, eps)
}

/// One L2 candidate: window 1 gets a fresh bump plus its old content, rescaled so that the mass
/// taken from window 2 (zeroed) moves into it and ‖δ‖₂ stays ε.
fn l2_step(cand: &mut [f32], x: &[f32], eps: f32, side: usize, s: Shape, rng: &mut ChaCha8Rng) {
    let mut delta: Vec<f32> = cand.iter().zip(x).map(|(a, b)| a - b).collect();
    let (r1, c1) = window(side, s, rng);
    let (r2, c2) = window(side, s, rng);
    let in_w = |r: usize, c: usize, r0: usize, c0: usize| {
        r >= r0 && r < r0 + side && c >= c0 && c < c0 + side
    };
    let image_norm = l2(&delta);
    let pattern = bump(side, rng);
    let mut fresh = vec![0.0f32; s.c * side * side];
    for ch in 0..s.c {
        let (mut w1, mut both) = (0.0f32, 0.0f32);
        for r in 0..s.h {
            for c in 0..s.w {
                let v = delta[s.at(ch, r, c)];
                if in_w(r, c, r1, c1) {
                    w1 += v * v;
                }
                if in_w(r, c, r1, c1) || in_w(r, c, r2, c2) {
                    both += v * v;
                }
            }
        }
        let w1 = w1.sqrt();
        let sg = sign(rng);
        let patch = &mut fresh[ch * side * side..(ch + 1) * side * side];
        for r in 0..side {
            for c in 0..side {
                let old = delta[s.at(ch, r1 + r, c1 + c)] / (1e-12 + w1);
                patch[r * side + c] = sg * pattern[r * side + c] + old;
            }
        }
        let target = ((eps * eps - image_norm * image_norm).max(0.0) / s.c as f32 + both).sqrt();
        let pn = l2(patch) + 1e-12;
        patch.iter_mut().for_each(|v| *v *= target / pn);
    }
    for ch in 0..s.c {
        for r in 0..side {
            for c in 0..side {
                delta[s.at(ch, r2 + r, c2 + c)] = 0.0;
            }
        }
        for r in 0..side {
            for c in 0..side {
                delta[s.at(ch, r1 + r, c1 + c)] = fresh[(ch * side + r) * side + c];
            }
        }
    }
    cand.copy_from_slice(&place(x, &delta, eps));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_sides_follow_autoattacks_schedule() {
        let at = [0, 11, 51, 201, 501, 1001, 2001, 4001];
        let sides = |h, w| -> Vec<usize> {
            at.iter()
                .map(|&i| window_side(0.8, i, h, w, Norm::Linf))
                .collect()
        };
        assert_eq!(sides(28, 28), vec![25, 18, 13, 9, 6, 4, 3, 2]);
        assert_eq!(sides(32, 32), vec![29, 20, 14, 10, 7, 5, 4, 3]);
        assert_eq!(sides(224, 224), vec![200, 142, 100, 71, 50, 35, 25, 18]);
        // The boundaries are inclusive on the left: iteration 10 still uses p_init.
        assert_eq!(p_schedule(0.8, 10), 0.8);
        assert_eq!(p_schedule(0.8, 11), 0.4);
        assert_eq!(p_schedule(0.8, 8001), 0.8 / 512.0);
        // Tiny and non-square images never ask for a window larger than they are.
        assert_eq!(window_side(0.8, 0, 2, 40, Norm::Linf), 1);
        assert_eq!(window_side(0.8, 0, 1, 1, Norm::Linf), 1);
        assert_eq!(window_side(0.8, 9000, 28, 28, Norm::L2), 3);
        assert_eq!(window_side(0.8, 0, 28, 28, Norm::L2), 25);
    }

    #[test]
    fn bumps_have_unit_norm_and_opposite_halves() {
        let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
        for side in [1, 3, 5, 6] {
            let b = bump(side, &mut rng);
            assert!((l2(&b) - 1.0).abs() < 1e-5, "side {side}: {}", l2(&b));
        }
        let r = rectangles(2, 5);
        assert!((l2(&r) - 1.0).abs() < 1e-5);
        // The centre is weighted most.
        assert!(r[2] >= r[0] && r[7] >= r[5]);
    }
}
