//! Shared per-example helpers: norms, steps and projections onto the ε ball ∩ [0, 1].

use super::Norm;

/// ‖v‖∞.
pub fn linf(v: &[f32]) -> f32 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// ‖v‖₂.
pub fn l2(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

/// ‖v‖₁.
pub fn l1(v: &[f32]) -> f32 {
    v.iter().map(|x| x.abs()).sum()
}

/// `‖a − b‖` in both norms: `(L∞, L2)`.
pub fn distances(a: &[f32], b: &[f32]) -> (f32, f32) {
    let d: Vec<f32> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    (linf(&d), l2(&d))
}

/// Moves `x_adv` by `scale` along the steepest-ascent direction of `g` for `norm`: `sign(g)` for
/// L∞, `g / ‖g‖₂` for L2 (no move where the gradient is zero).
pub fn step(x_adv: &mut [f32], g: &[f32], scale: f32, norm: Norm) {
    match norm {
        Norm::Linf => {
            for (x, &gi) in x_adv.iter_mut().zip(g) {
                *x += scale * sign(gi);
            }
        }
        Norm::L2 => {
            let n = l2(g);
            if n > 0.0 {
                for (x, &gi) in x_adv.iter_mut().zip(g) {
                    *x += scale * gi / n;
                }
            }
        }
    }
}

/// `sign` with `sign(0) = 0`, as the attack formulas use it.
pub fn sign(v: f32) -> f32 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// Projects `x_adv` onto `{‖x_adv − x‖ ≤ eps} ∩ [0, 1]`.
pub fn project(x_adv: &mut [f32], x: &[f32], eps: f32, norm: Norm) {
    match norm {
        Norm::Linf => {
            for (a, &o) in x_adv.iter_mut().zip(x) {
                *a = (o + (*a - o).clamp(-eps, eps)).clamp(0.0, 1.0);
            }
        }
        Norm::L2 => {
            let (_, n) = distances(x_adv, x);
            let factor = if n > eps && n > 0.0 { eps / n } else { 1.0 };
            for (a, &o) in x_adv.iter_mut().zip(x) {
                // Clipping to [0, 1] after scaling only shrinks |δ_i|, so ‖δ‖₂ stays ≤ ε.
                *a = (o + (*a - o) * factor).clamp(0.0, 1.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projections_respect_ball_and_box() {
        let x = vec![0.0, 0.5, 1.0, 0.2];
        let mut a = vec![-1.0, 0.9, 0.95, 0.2];
        project(&mut a, &x, 0.1, Norm::Linf);
        assert_eq!(a, vec![0.0, 0.6, 0.95, 0.2]);
        let mut b = vec![0.0, 1.5, 1.0, 1.2];
        project(&mut b, &x, 0.5, Norm::L2);
        // δ = (0, 1, 0, 1) has norm √2: scaled by 0.5/√2, then 1.0 + 0 stays in the box.
        let s = 0.5 / 2f32.sqrt();
        let want = [0.0, 0.5 + s, 1.0, 0.2 + s];
        assert!(
            b.iter().zip(want).all(|(a, w)| (a - w).abs() < 1e-6),
            "{b:?} vs {want:?}"
        );
        // Box clipping after scaling: δ = (0.3, 0.4) scales to (0.6, 0.8)·0.25 = (0.15, 0.2), and
        // 0.9 + 0.15 clips to 1.
        let mut c = vec![1.2, 0.9];
        project(&mut c, &[0.9, 0.5], 0.25, Norm::L2);
        assert!(
            (c[0] - 1.0).abs() < 1e-6 && (c[1] - 0.7).abs() < 1e-6,
            "{c:?}"
        );
    }

    #[test]
    fn steps_follow_norm() {
        let mut a = vec![0.0; 3];
        step(&mut a, &[2.0, -0.1, 0.0], 0.5, Norm::Linf);
        assert_eq!(a, vec![0.5, -0.5, 0.0]);
        let mut b = vec![0.0; 2];
        step(&mut b, &[3.0, 4.0], 1.0, Norm::L2);
        assert!((b[0] - 0.6).abs() < 1e-6 && (b[1] - 0.8).abs() < 1e-6);
    }
}
