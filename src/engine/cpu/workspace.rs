//! Per-thread scratch buffers for the host kernels (im2col/col2im columns, non-local gradients),
//! grown on demand and reused across calls so the hot loops allocate nothing beyond their
//! outputs.

use std::cell::RefCell;
use std::thread::LocalKey;

thread_local! {
    static WORKSPACE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's workspace of at least `len` values (contents unspecified).
pub(super) fn with_workspace<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_buffer(&WORKSPACE, len, f)
}

/// Runs `f` on this thread's buffer `key`, grown to at least `len` values (contents unspecified).
pub(super) fn with_buffer<R>(
    key: &'static LocalKey<RefCell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        // Re-entered on the same thread (a nested rayon task): use a fresh buffer.
        Err(_) => f(&mut vec![0.0; len]),
    })
}
