//! A bounds-checked wrapper around the `gemm` crate's matrix product, the only unsafe code in
//! advlens: every call checks that each strided matrix lies inside its slice first.
#![allow(unsafe_code)]

use std::cell::Cell;

/// A read-only strided matrix view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    /// Backing values.
    pub data: &'a [f32],
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A view of `data` with row stride `rs` and column stride `cs`.
    pub fn new(data: &'a [f32], rs: usize, cs: usize) -> Self {
        Self { data, rs, cs }
    }
}

/// A mutable strided matrix view.
#[derive(Debug)]
pub struct MatMut<'a> {
    /// Backing values.
    pub data: &'a mut [f32],
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

impl<'a> MatMut<'a> {
    /// A view of `data` with row stride `rs` and column stride `cs`.
    pub fn new(data: &'a mut [f32], rs: usize, cs: usize) -> Self {
        Self { data, rs, cs }
    }
}

thread_local! {
    static IN_GEMM: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is inside the `gemm` crate, which allocates its packing buffers at every
/// call (their size is set by its cache blocking, not by the problem). Lets allocation-counting
/// tests tell those apart from advlens's own allocations.
#[doc(hidden)]
pub fn in_gemm() -> bool {
    IN_GEMM.with(Cell::get)
}

fn fits(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < len
}

/// How many threads one product may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// The calling thread only (the caller parallelises).
    One,
    /// The rayon pool.
    All,
}

/// `dst (m×n) = lhs (m×k) · rhs (k×n)`, or `dst += …` when `accumulate`. (BLAS-shaped, hence
/// the argument count.)
///
/// # Panics
/// When a view does not fit its slice (a bug in the caller, never user input).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: MatMut<'_>,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    accumulate: bool,
    threads: Threads,
) {
    assert!(
        fits(dst.data.len(), m, n, dst.rs, dst.cs),
        "gemm: dst out of bounds"
    );
    assert!(
        fits(lhs.data.len(), m, k, lhs.rs, lhs.cs),
        "gemm: lhs out of bounds"
    );
    assert!(
        fits(rhs.data.len(), k, n, rhs.rs, rhs.cs),
        "gemm: rhs out of bounds"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst.data[i * dst.rs + j * dst.cs] = 0.0;
                }
            }
        }
        return;
    }
    let par = match threads {
        Threads::One => gemm::Parallelism::None,
        Threads::All => gemm::Parallelism::Rayon(rayon::current_num_threads()),
    };
    IN_GEMM.with(|f| f.set(true));
    // SAFETY: the three views were checked above to lie inside their slices for the given
    // (m, n, k) and strides; `dst` is borrowed mutably and cannot alias `lhs` or `rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            dst.cs as isize,
            dst.rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
    IN_GEMM.with(|f| f.set(false));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_product_matches_naive() {
        // lhs 2x3 row-major, rhs 3x2 given transposed (column-major), dst 2x2.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let bt = [7.0, 9.0, 11.0, 8.0, 10.0, 12.0];
        let mut c = [1.0; 4];
        gemm(
            2,
            2,
            3,
            MatMut::new(&mut c, 2, 1),
            MatRef::new(&a, 3, 1),
            MatRef::new(&bt, 1, 3),
            true,
            Threads::One,
        );
        assert_eq!(c, [59.0, 65.0, 140.0, 155.0]);
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn out_of_bounds_views_panic() {
        let a = [0.0; 4];
        let mut c = [0.0; 4];
        gemm(
            2,
            2,
            3,
            MatMut::new(&mut c, 2, 1),
            MatRef::new(&a, 3, 1),
            MatRef::new(&a, 2, 1),
            false,
            Threads::One,
        );
    }
}
