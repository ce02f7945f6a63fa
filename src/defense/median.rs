//! Median smoothing over a k×k window per channel, borders reflected (edge repeated).

use super::Dims;

/// The index of `i` (possibly outside `0..n`) after reflecting at the borders with the edge
/// value repeated: `… 1 0 | 0 1 … n−1 | n−1 n−2 …`.
fn reflect(mut i: isize, n: usize) -> usize {
    let n = n as isize;
    loop {
        if i < 0 {
            i = -i - 1;
        } else if i >= n {
            i = 2 * n - i - 1;
        } else {
            return i as usize;
        }
    }
}

/// The smoothed image and, for every output value, the index in `img` of the value chosen (ties
/// between equal values go to the lowest index).
pub(crate) fn smooth(img: &[f32], dims: Dims, size: usize) -> (Vec<f32>, Vec<u32>) {
    let [c, h, w] = dims;
    let r = (size / 2) as isize;
    let mut out = vec![0.0f32; img.len()];
    let mut src = vec![0u32; img.len()];
    let mut window: Vec<(f32, u32)> = Vec::with_capacity(size * size);
    for ch in 0..c {
        let base = ch * h * w;
        for y in 0..h {
            for x in 0..w {
                window.clear();
                for dy in -r..=r {
                    let yy = reflect(y as isize + dy, h);
                    for dx in -r..=r {
                        let xx = reflect(x as isize + dx, w);
                        let idx = base + yy * w + xx;
                        window.push((img[idx], idx as u32));
                    }
                }
                let mid = window.len() / 2;
                let (_, m, _) = window
                    .select_nth_unstable_by(mid, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                out[base + y * w + x] = m.0;
                src[base + y * w + x] = m.1;
            }
        }
    }
    (out, src)
}

/// The median's own derivative: each output's gradient goes to the pixel it copied.
pub(crate) fn route(g: &[f32], src: &[u32]) -> Vec<f32> {
    let mut out = vec![0.0f32; g.len()];
    for (&gv, &s) in g.iter().zip(src) {
        out[s as usize] += gv;
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn reflection_repeats_the_edge() {
        let idx: Vec<usize> = (-3..7).map(|i| super::reflect(i, 4)).collect();
        assert_eq!(idx, [2, 1, 0, 0, 1, 2, 3, 3, 2, 1]);
    }
}
