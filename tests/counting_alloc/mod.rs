//! A counting global allocator for the tests that bound memory (tests/alloc.rs, tests/fuzz.rs).
//! Declaring `mod counting_alloc;` installs it for the whole test binary. It forwards every call
//! to the system allocator and records two things:
//! - across threads, the bytes allocated outside the `gemm` crate ([`TOTAL`]) and the largest
//!   such allocation ([`LARGEST`]): `gemm` sizes its packing buffers by its cache blocking, not
//!   by the problem, and advlens cannot change that;
//! - per thread, everything: the bytes live, their peak and the largest single allocation, for
//!   [`measure`] to read around one call (a loader runs on the calling thread).
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use advlens::engine::cpu::gemm::in_gemm;

/// Bytes allocated outside the `gemm` crate, on every thread.
pub static TOTAL: AtomicUsize = AtomicUsize::new(0);
/// The largest single allocation outside the `gemm` crate since it was last reset.
pub static LARGEST: AtomicUsize = AtomicUsize::new(0);

/// One thread's allocations since its counters were last reset.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// Bytes allocated minus bytes freed (negative when older memory is freed).
    live: isize,
    /// The highest `live` reached.
    pub peak_live: usize,
    /// The largest single allocation (or reallocation's new size).
    pub largest: usize,
}

thread_local! {
    // Const-initialised and without a destructor: safe to touch from inside the allocator.
    static THREAD: Cell<Usage> = const {
        Cell::new(Usage {
            live: 0,
            peak_live: 0,
            largest: 0,
        })
    };
}

fn on_thread(grow: usize, shrink: usize) {
    let _ = THREAD.try_with(|t| {
        let mut u = t.get();
        u.live = u
            .live
            .saturating_add_unsigned(grow)
            .saturating_sub_unsigned(shrink);
        u.peak_live = u.peak_live.max(usize::try_from(u.live).unwrap_or(0));
        u.largest = u.largest.max(grow);
        t.set(u);
    });
}

fn on_alloc(size: usize) {
    if !in_gemm() {
        TOTAL.fetch_add(size, Ordering::Relaxed);
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
    on_thread(size, 0);
}

/// Runs `f` and returns its result with what it allocated on this thread: the peak of live bytes
/// above those live at the start, and the largest single allocation.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Usage) {
    THREAD.with(|t| t.set(Usage::default()));
    let out = f();
    (out, THREAD.with(Cell::get))
}

struct Counting;

// SAFETY: forwards every call to the system allocator unchanged; only counts bytes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_thread(0, layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !in_gemm() {
            TOTAL.fetch_add(new_size, Ordering::Relaxed);
            LARGEST.fetch_max(new_size, Ordering::Relaxed);
        }
        // Live bytes change by the difference: both blocks coexist only for an instant while a
        // block moves, which the system allocator may avoid by growing in place.
        on_thread(new_size, layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;
