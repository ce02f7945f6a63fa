//! The attack loop allocates no per-step buffers: after a warm-up call, the planned cpu
//! executor's input gradient (the hot call of every attack step), a whole PGD step and a forward
//! pass without taps allocate nothing larger than the input (the gradient they return), and
//! little in total, never anything of the size of the network's activations, workspaces or
//! kernels; a tap (a denoise operation's output) is copied out only when asked for. A counting global allocator
//! measures it. The `gemm` crate allocates its own packing buffers at every call (sized by its
//! cache blocking, not by the problem), which advlens cannot change; those are not counted
//! (tests/counting_alloc). This binary holds one test so that nothing else allocates while it
//! counts.

#![allow(clippy::unwrap_used)]

mod common;
mod counting_alloc;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use advlens::attack::{self, AttackConfig, AttackKind};
use advlens::cancel::Cancel;
use advlens::engine::cpu::{CpuEngine, Executor};
use advlens::engine::{Engine, ForwardOptions, Loss, TapSelection};
use counting_alloc::{LARGEST, TOTAL};

/// Bytes allocated by `f` in total and in its largest single allocation.
fn allocated_by(f: impl FnOnce()) -> (usize, usize) {
    LARGEST.store(0, Ordering::Relaxed);
    let before = TOTAL.load(Ordering::Relaxed);
    f();
    (
        TOTAL.load(Ordering::Relaxed) - before,
        LARGEST.load(Ordering::Relaxed),
    )
}

/// The steady state of `f`: the smallest total and the smallest largest allocation over a few
/// calls. A thread's reusable workspace may still grow the first time that thread happens to run
/// a bigger task (rayon decides which thread runs what), a one-time cost; an allocation made at
/// every call shows in every round.
fn steady(mut f: impl FnMut()) -> (usize, usize) {
    (0..5)
        .map(|_| allocated_by(&mut f))
        .fold((usize::MAX, usize::MAX), |(t, l), (t2, l2)| {
            (t.min(t2), l.min(l2))
        })
}

/// Asserts that `what` allocated at most `outputs` + 48 KiB per call, none of it at once above
/// `limit`.
fn check(what: &str, per_call: usize, largest: usize, outputs: usize, limit: usize) {
    let budget = outputs + 48 * 1024;
    eprintln!("{what} allocates {per_call} B per call, at most {largest} B at once");
    assert!(largest <= limit, "{what} allocated {largest} B at once");
    assert!(
        per_call <= budget,
        "{what} allocated {per_call} B per call, more than {budget} B"
    );
}

#[test]
fn attack_steps_allocate_only_their_results() {
    // Two threads whatever the machine: the batch-1 row tiles (and their few bytes of slice
    // lists) scale with the thread count.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    pool.install(measure);
}

fn measure() {
    let net = Arc::new(advlens::zoo::default_network().unwrap());
    // The smallest buffer the executor keeps per (network, batch): a 3×3 16→16 kernel (9 KiB);
    // the stem's activations are 16 channels at 28×28 per image (49 KiB).
    let smallest_buffer = 16 * 16 * 9 * 4;
    for batch in [1usize, 16] {
        let mut engine = CpuEngine::new(net.clone()).unwrap();
        assert_eq!(engine.executor(), Executor::Planned);
        let x = common::random_images(batch, [1, 28, 28], batch as u64);
        let input_bytes = x.data().len() * 4;
        // No single allocation may reach the size of a kept buffer (unless the input is larger).
        let limit = input_bytes.max(smallest_buffer - 1);
        let loss = Loss::CrossEntropy {
            classes: vec![3; batch],
        };
        let opts = ForwardOptions::default();
        // Warm-up: buffers are sized here, once per (network, batch).
        engine.input_grad(&x, &loss, &opts).unwrap();
        let (per_call, largest) = steady(|| {
            engine.input_grad(&x, &loss, &opts).unwrap();
        });
        // The gradient and the input copy (input-sized), logits, losses, and the row tiles'
        // slice lists of the batch-1 convolution (a few KiB).
        let what = format!("batch {batch}: input_grad");
        check(&what, per_call, largest, 3 * input_bytes, limit);

        // A whole PGD attack: per step, the update, projection and history add input-sized
        // arrays at most.
        let run = |steps: usize, engine: &mut CpuEngine| {
            let cfg = AttackConfig {
                kind: AttackKind::Pgd,
                eps: 0.1,
                steps: Some(steps),
                ..AttackConfig::default()
            };
            steady(|| {
                attack::run(engine, &x, None, &cfg, &Cancel::new()).unwrap();
            })
        };
        let ((short, _), (long, largest)) = (run(2, &mut engine), run(12, &mut engine));
        let per_step = long.saturating_sub(short) / 10;
        let what = format!("batch {batch}: a PGD step");
        check(&what, per_step, largest, 8 * input_bytes, limit);

        // A forward pass copies a denoise operation's output only when its tap is asked for.
        let block = &net.graph.denoise_blocks[0];
        let op_bytes = batch * net.graph.nodes[block.op].shape.iter().product::<usize>() * 4;
        assert!(op_bytes > limit, "the op tap is too small to tell apart");
        let mut forward = |taps: TapSelection| {
            let opts = ForwardOptions {
                taps,
                ..ForwardOptions::default()
            };
            engine.forward(&x, &opts).unwrap();
            steady(|| {
                engine.forward(&x, &opts).unwrap();
            })
        };
        let (per_call, largest) = forward(TapSelection::None);
        let what = format!("batch {batch}: a forward without taps");
        check(&what, per_call, largest, input_bytes, limit);
        let (_, largest) = forward(TapSelection::Names(vec![format!("{}/op", block.name)]));
        assert!(
            largest >= op_bytes,
            "batch {batch}: the op tap ({op_bytes} B) was not copied out ({largest} B at most)"
        );
    }
}
