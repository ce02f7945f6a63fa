//! Runs a loader on mutated seeds and checks each input: no panic (caught per input), no hang
//! (a time bound per input, and a watchdog that ends the process with the input's description
//! when one never returns), no allocation over the loader's bound (counted on the loader's
//! thread by tests/counting_alloc). Input `index` of base seed `seed` is mutated by
//! `ChaCha8Rng::seed_from_u64(seed)` on stream `index`, so every input can be rebuilt alone.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;

use crate::counting_alloc;
use crate::mutation::{self, Mutation};

/// The largest number of failures one run lists before it stops.
const MAX_FAILURES: usize = 20;

/// How long an input may take: a loader reads a few hundred kilobytes here, in milliseconds;
/// two seconds is far outside that yet short enough that a run of 10 000 inputs cannot hide a
/// quadratic path. Unoptimised builds are about ten times slower.
pub fn time_bound() -> Duration {
    if cfg!(debug_assertions) {
        Duration::from_secs(20)
    } else {
        Duration::from_secs(2)
    }
}

/// After this long in one input the watchdog reports it and ends the process: a loop that never
/// returns would otherwise hang the test run instead of failing it.
const HANG: Duration = Duration::from_secs(60);

/// What a loader under test returns: its typed error, boxed so that one harness runs them all.
pub type Loaded = Result<(), Box<dyn std::error::Error>>;

/// A loader under test.
pub struct Target {
    /// The loader's name in reports.
    pub name: &'static str,
    /// Valid files to mutate.
    pub seeds: Vec<Vec<u8>>,
    /// Reads the bytes as the loader does; an error is the loader's typed error, boxed.
    pub load: fn(&[u8]) -> Loaded,
    /// Bytes any input may allocate at once (peak live) on top of `per_byte` times its length.
    pub fixed_bytes: usize,
    /// Allowed peak live bytes per byte of input.
    pub per_byte: usize,
}

impl Target {
    /// The allocation bound for an input of `len` bytes.
    pub fn bound(&self, len: usize) -> usize {
        self.fixed_bytes
            .saturating_add(self.per_byte.saturating_mul(len))
    }
}

/// Input `index` of base seed `seed`: the seed file it starts from, the mutations and the bytes.
pub fn input(target: &Target, seed: u64, index: u64) -> (usize, Vec<Mutation>, Vec<u8>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index);
    let which = rng.random_range(0..target.seeds.len());
    let mut data = target.seeds[which].clone();
    let hints = mutation::hints(&data);
    let mutations = mutation::mutate(&mut rng, &mut data, &hints);
    (which, mutations, data)
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct Summary {
    /// Inputs run.
    pub inputs: usize,
    /// Inputs the loader accepted.
    pub accepted: usize,
    /// The slowest input's time and index.
    pub slowest: (Duration, u64),
    /// The highest peak of live bytes of one input.
    pub peak_live: usize,
    /// The largest single allocation.
    pub largest: usize,
    /// The highest peak as a fraction of that input's bound.
    pub worst_fraction_of_bound: f64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

thread_local! {
    /// Whether this thread is running fuzz inputs, whose panics are caught and reported.
    static FUZZING: Cell<bool> = const { Cell::new(false) };
    /// The message and location of the last panic of a fuzz input on this thread.
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Silences the panic message of fuzz inputs (each is reported with its input instead) and
/// keeps the default for everything else, on every thread of the test binary.
fn quiet_fuzz_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if FUZZING.with(Cell::get) {
                LAST_PANIC.with(|p| *p.borrow_mut() = info.to_string());
            } else {
                default(info);
            }
        }));
    });
}

/// Time and memory of one input, whether the loader accepted it; a message when it broke a rule.
type Checked = Result<(Duration, counting_alloc::Usage, bool), String>;

/// Runs one input.
fn check_one(target: &Target, data: &[u8]) -> Checked {
    let start = Instant::now();
    FUZZING.with(|f| f.set(true));
    let (result, usage) =
        counting_alloc::measure(|| catch_unwind(AssertUnwindSafe(|| (target.load)(data))));
    FUZZING.with(|f| f.set(false));
    let took = start.elapsed();
    let accepted = match result {
        Ok(outcome) => outcome.is_ok(),
        Err(_) => {
            return Err(LAST_PANIC.with(|p| p.borrow().clone()));
        }
    };
    if took > time_bound() {
        return Err(format!("took {took:?}, more than {:?}", time_bound()));
    }
    let bound = target.bound(data.len());
    if usage.peak_live > bound {
        return Err(format!(
            "allocated {} bytes at its peak ({} at once), more than the bound of {bound}",
            usage.peak_live, usage.largest
        ));
    }
    Ok((took, usage, accepted))
}

/// Keeps the input being run where a watchdog thread can see it.
struct Watchdog {
    current: Arc<Mutex<Option<(Instant, String)>>>,
    done: Arc<AtomicBool>,
}

impl Watchdog {
    fn start(name: &str) -> Self {
        let current: Arc<Mutex<Option<(Instant, String)>>> = Arc::default();
        let done = Arc::new(AtomicBool::new(false));
        let (c, d) = (current.clone(), done.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("fuzz watchdog {name}"))
            .spawn(move || {
                while !d.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    let stuck = c
                        .lock()
                        .ok()
                        .and_then(|g| g.clone())
                        .filter(|(t, _)| t.elapsed() > HANG);
                    if let Some((_, what)) = stuck {
                        eprintln!("HANG: {what} has run for more than {HANG:?}");
                        std::process::exit(101);
                    }
                }
            });
        assert!(spawned.is_ok(), "cannot start the watchdog thread");
        Self { current, done }
    }

    fn enter(&self, what: String) {
        if let Ok(mut g) = self.current.lock() {
            *g = Some((Instant::now(), what));
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// Describes input `index` for a failure report.
fn describe(target: &Target, seed: u64, index: u64, which: usize, m: &[Mutation]) -> String {
    format!(
        "{} seed {seed:#x} index {index} (seed file #{which}, mutations {m:?})",
        target.name
    )
}

/// Runs `inputs` mutated inputs of base seed `seed` and panics listing every input that
/// panicked, overran its time or allocated over its bound.
pub fn run(target: &Target, seed: u64, inputs: u64) -> Summary {
    quiet_fuzz_panics();
    let watchdog = Watchdog::start(target.name);
    let start = Instant::now();
    let mut summary = Summary::default();
    let mut failures = Vec::new();
    for index in 0..inputs {
        let (which, mutations, data) = input(target, seed, index);
        watchdog.enter(describe(target, seed, index, which, &mutations));
        match check_one(target, &data) {
            Ok((took, usage, accepted)) => {
                summary.accepted += usize::from(accepted);
                summary.slowest = summary.slowest.max((took, index));
                summary.peak_live = summary.peak_live.max(usage.peak_live);
                summary.largest = summary.largest.max(usage.largest);
                let fraction = usage.peak_live as f64 / target.bound(data.len()) as f64;
                summary.worst_fraction_of_bound = summary.worst_fraction_of_bound.max(fraction);
            }
            Err(what) => {
                failures.push(format!(
                    "{}: {what}",
                    describe(target, seed, index, which, &mutations)
                ));
            }
        }
        summary.inputs += 1;
        if failures.len() >= MAX_FAILURES {
            break;
        }
    }
    drop(watchdog);
    summary.elapsed = start.elapsed();
    eprintln!("{}: {summary:?}", target.name);
    assert!(
        failures.is_empty(),
        "{} of {} inputs broke a rule:\n{}",
        failures.len(),
        summary.inputs,
        failures.join("\n")
    );
    summary
}
