//! The soak test (issue #18 §4): the real app under egui_kittest, with its real worker, loader,
//! writer, dialog and robustness threads and the real engines, driven through a long run of random
//! events from a seeded generator: ε drags, attack/norm/target/steps/tap/channel/engine switches,
//! the denoise bypass, bundled image clicks, switches among the built-in models, bad files
//! (truncated PNG, garbage models), good images, starting and cancelling the robustness curve,
//! exports to a temp folder (and one that cannot be written), the error window.
//!
//! Asserted throughout: nothing panics (a panicking background thread shows up as an error), every
//! error reaches the status bar, no error arrives that no event explains, the worker's queue stays
//! within [`MAX_WORKER_QUEUE`], each UI event did what it says, exports land on disk; and resident
//! memory after the last event is within [`RSS_MARGIN_BYTES`] of what it was after event
//! [`BASELINE_EVENT`]. The CI version runs [`SHORT_EVENTS`] events; the full one
//! (`cargo test --release --test soak -- --ignored`) runs [`LONG_EVENTS`]. Both print their numbers.
//! `SOAK_TRACE=1` prints every event with the attack settings, the model and the image, to find
//! the event a failure follows.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use advlens::analysis::Export;
use advlens::app::{
    AdvlensApp, DialogBackend, DialogPurpose, ImageSource, Settings, TargetChoice, tap_choices,
    tap_label,
};
use advlens::attack::AttackKind;
use advlens::engine::EngineChoice;
use eframe::egui;
use eframe::egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT as _, Queryable as _};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;

/// Events of the CI run.
const SHORT_EVENTS: usize = 200;
/// Events of the full run (`--ignored`).
const LONG_EVENTS: usize = 1000;
/// Resident memory after this many events is the baseline the end is compared with (the first
/// events fill caches that then stay: every built-in model, the engines' buffers, egui's fonts).
const BASELINE_EVENT: usize = 100;
/// How far resident memory may grow from the baseline to the end. See [`Report::assert_memory`]
/// for why this much.
const RSS_MARGIN_BYTES: u64 = 128 << 20;
/// The most jobs that may wait behind the running one: a new job is submitted only once the
/// worker has taken the one before (before that fix a drag queued a job per frame for as long as
/// the worker took to finish a cancelled step: 12 in a run on this loaded machine).
const MAX_WORKER_QUEUE: usize = 1;
/// The generator's seed (the number): every run makes the same events.
const SEED: u64 = 18;
/// How long one wait for the app (a result, a file, an answer) may take.
const PATIENCE: Duration = Duration::from_secs(120);

#[test]
fn soak_short_run_of_random_events() {
    let report = Soak::new(SEED).run(SHORT_EVENTS);
    report.print("short");
    report.assert_memory();
}

#[test]
#[ignore = "the full soak run, minutes: cargo test --release --test soak -- --ignored"]
fn soak_long_run_of_random_events() {
    let report = Soak::new(SEED).run(LONG_EVENTS);
    report.print("long");
    report.assert_memory();
}

/// Changes faster than the worker can follow (here: many in one frame's time while it runs a
/// job) leave at most one job waiting, and the newest change is the one computed in the end.
/// Before the fix every change queued a job until the worker finished its cancelled step.
#[test]
fn changes_faster_than_the_worker_leave_at_most_one_job_waiting() {
    let settings = Settings {
        engine: EngineChoice::Cpu,
        ..Settings::default()
    };
    let mut app =
        AdvlensApp::with_settings(&egui::Context::default(), settings, None, None).unwrap();
    app.submit_if_changed();
    let mut most = 0;
    for level in 1..=40 {
        app.settings.attack.eps = level as f32 / 255.0;
        app.submit_if_changed();
        most = most.max(app.worker_queue());
    }
    assert!(most <= 1, "{most} jobs waited for the worker");
    let newest = 40.0 / 255.0;
    let deadline = Instant::now() + PATIENCE;
    while !app
        .snapshot()
        .is_some_and(|s| s.cfg.eps == newest && !app.is_busy())
    {
        assert!(
            Instant::now() < deadline,
            "the newest change was never computed"
        );
        std::thread::sleep(Duration::from_millis(5));
        app.poll_worker();
        app.submit_if_changed();
        assert!(app.worker_queue() <= 1);
    }
}

/// What one run measured.
struct Report {
    events: usize,
    frames: usize,
    seconds: f64,
    rss_baseline: Option<u64>,
    rss_end: Option<u64>,
    /// `(event, resident bytes)` every [`BASELINE_EVENT`] events.
    rss: Vec<(usize, Option<u64>)>,
    max_worker_queue: usize,
    /// The activations one result of the default model holds (what a leak per job would leak).
    snapshot_bytes: usize,
    errors: usize,
    exports: usize,
    counts: BTreeMap<&'static str, usize>,
}

impl Report {
    fn print(&self, name: &str) {
        let mib = |b: Option<u64>| b.map_or("n/a".into(), |b| format!("{:.1} MiB", to_mib(b)));
        let growth = self.growth().map_or("n/a".into(), |g| {
            format!("{:+.1} MiB", g as f64 / 1048576.0)
        });
        println!(
            "soak {name}: {} events, {} frames in {:.1} s; RSS after event {BASELINE_EVENT} {}, \
             after event {} {} (growth {growth}, margin {} MiB; one result of the default model \
             holds {:.2} MiB); max worker queue {}; {} errors, each shown and expected; {} \
             exports written",
            self.events,
            self.frames,
            self.seconds,
            mib(self.rss_baseline),
            self.events,
            mib(self.rss_end),
            RSS_MARGIN_BYTES >> 20,
            to_mib(self.snapshot_bytes as u64),
            self.max_worker_queue,
            self.errors,
            self.exports,
        );
        let series: Vec<String> = self
            .rss
            .iter()
            .map(|&(i, b)| format!("{i}: {}", mib(b)))
            .collect();
        println!("soak {name}: RSS by event {}", series.join(", "));
        println!("soak {name}: events by kind {:?}", self.counts);
    }

    fn growth(&self) -> Option<i64> {
        Some(self.rss_end? as i64 - self.rss_baseline? as i64)
    }

    /// Resident memory at the end is within [`RSS_MARGIN_BYTES`] of the baseline. 128 MiB is
    /// about 220 results of the default model (0.58 MiB each): a leak of a result (or an engine)
    /// per job, several hundred jobs over the long run, exceeds it. Memory that does not leak
    /// still moves: measured from event 100 to event 1000, +23 MiB without an adapter and +32 to
    /// +94 MiB on lavapipe (the same seed; the allocator's high-water marks and lavapipe's
    /// buffers depend on thread timing), levelling off (+2 MiB over the last 400 events).
    fn assert_memory(&self) {
        let Some(growth) = self.growth() else {
            println!("skipped the memory check: /proc/self/status has no VmRSS on this system");
            return;
        };
        assert!(
            growth <= RSS_MARGIN_BYTES as i64,
            "resident memory grew by {:.1} MiB from event {BASELINE_EVENT} to event {} (margin \
             {} MiB)",
            growth as f64 / 1048576.0,
            self.events,
            RSS_MARGIN_BYTES >> 20
        );
    }
}

fn to_mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

/// Resident memory of this process (Linux), or `None` where /proc has no such line.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The files the events open: bad ones (each name says what it is, and errors name the file)
/// and one good image.
struct Files {
    /// Removed with the run (every path below is in it).
    _dir: tempfile::TempDir,
    bad_images: Vec<PathBuf>,
    bad_models: Vec<PathBuf>,
    good_image: PathBuf,
    /// Where exports go.
    exports: PathBuf,
    /// A regular file: an export "into" it cannot be written.
    not_a_folder: PathBuf,
}

impl Files {
    fn new(rng: &mut ChaCha8Rng) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name);
        let mut png = std::io::Cursor::new(vec![]);
        image::GrayImage::from_fn(64, 64, |x, y| image::Luma([((x * y) % 251) as u8]))
            .write_to(&mut png, image::ImageFormat::Png)
            .unwrap();
        let png = png.into_inner();
        let noise: Vec<u8> = (0..4096).map(|_| rng.random()).collect();
        let shipped = advlens::zoo::SHIPPED[2].bytes;
        // A safetensors header that claims far more bytes than the file has.
        let mut huge_header = u64::MAX.to_le_bytes().to_vec();
        huge_header.extend_from_slice(b"{\"a\":");
        let mut zip_junk = b"PK\x03\x04".to_vec();
        zip_junk.extend_from_slice(&noise[..512]);
        let bad_images: Vec<(&str, &[u8])> = vec![
            ("truncated.png", &png[..png.len() / 2]),
            ("garbage.png", &noise),
            ("empty.png", &[]),
        ];
        let bad_models: Vec<(&str, &[u8])> = vec![
            ("garbage.safetensors", &noise),
            ("truncated.safetensors", &shipped[..shipped.len() / 2]),
            ("huge-header.safetensors", &huge_header),
            ("garbage.npz", &zip_junk),
            ("garbage.pth", &noise[..1000]),
        ];
        let write = |files: Vec<(&str, &[u8])>| -> Vec<PathBuf> {
            files
                .into_iter()
                .map(|(name, bytes)| {
                    std::fs::write(at(name), bytes).unwrap();
                    at(name)
                })
                .collect()
        };
        let bad_images = write(bad_images);
        let bad_models = write(bad_models);
        let good_image = at("good.png");
        image::GrayImage::from_fn(40, 30, |x, y| image::Luma([(x * 6 + y) as u8]))
            .save(&good_image)
            .unwrap();
        let exports = at("exports");
        std::fs::create_dir(&exports).unwrap();
        let not_a_folder = at("not-a-folder.txt");
        std::fs::write(&not_a_folder, b"a file").unwrap();
        Self {
            _dir: dir,
            bad_images,
            bad_models,
            good_image,
            exports,
            not_a_folder,
        }
    }
}

/// What the scripted "user" answers in the next file dialog.
#[derive(Default)]
struct DialogScript {
    /// The file to pick in the next open dialog.
    open: Option<PathBuf>,
    /// Where the next export goes (the test sets it before asking).
    save: Option<PathBuf>,
    /// Every purpose the backend was asked for.
    asked: Vec<DialogPurpose>,
}

fn scripted_backend(script: Arc<Mutex<DialogScript>>) -> DialogBackend {
    Arc::new(move |purpose| {
        let mut s = script.lock().unwrap();
        s.asked.push(purpose);
        match purpose {
            DialogPurpose::OpenImage | DialogPurpose::OpenModel => s.open.take(),
            DialogPurpose::Export(_) | DialogPurpose::Screenshot => s.save.take(),
        }
    })
}

/// An error the test caused on purpose: the next new error must contain `needle`.
struct Expected {
    needle: String,
}

/// Errors seen so far, found by the newest entry's identity (the app keeps the last 100).
#[derive(Default)]
struct ErrorWatch {
    last: Option<(SystemTime, String)>,
    seen: usize,
    /// New errors not yet matched to an event.
    fresh: Vec<String>,
}

impl ErrorWatch {
    fn collect(&mut self, list: &[advlens::app::AppError]) {
        let start = match &self.last {
            None => 0,
            Some((when, detail)) => list
                .iter()
                .rposition(|e| e.when == *when && e.detail == *detail)
                .map_or(0, |i| i + 1),
        };
        for e in &list[start..] {
            self.fresh.push(e.detail.clone());
            self.seen += 1;
        }
        self.last = list.last().map(|e| (e.when, e.detail.clone()));
    }
}

/// One kind of event, with its weight in the random choice.
#[derive(Clone, Copy, Debug)]
enum Event {
    EpsDrag,
    Attack,
    Steps,
    Norm,
    Target,
    Tap,
    Channel,
    Engine,
    Bypass,
    Bundled,
    Builtin,
    BadImage,
    BadModel,
    GoodImage,
    RobustnessRun,
    RobustnessCancel,
    Export,
    BadExport,
    ErrorWindow,
    Pause,
}

const EVENTS: [(Event, u32); 20] = [
    (Event::EpsDrag, 12),
    (Event::Attack, 5),
    (Event::Steps, 3),
    (Event::Norm, 3),
    (Event::Target, 3),
    (Event::Tap, 4),
    (Event::Channel, 4),
    (Event::Engine, 2),
    (Event::Bypass, 3),
    (Event::Bundled, 6),
    (Event::Builtin, 3),
    (Event::BadImage, 2),
    (Event::BadModel, 2),
    (Event::GoodImage, 1),
    (Event::RobustnessRun, 2),
    (Event::RobustnessCancel, 2),
    (Event::Export, 3),
    (Event::BadExport, 1),
    (Event::ErrorWindow, 1),
    (Event::Pause, 3),
];

/// The attacks the events choose, with their weights: C&W (6 × 100 Adam steps) and DeepFool (up
/// to 50 × 9 gradients) ignore the steps setting and take seconds, so they come up less often.
/// APGD runs live on the slider like PGD (APGD-T: 9 targets × the steps). Square and AutoAttack
/// (background jobs of thousands of passes) are tested in tests/app.rs.
const ATTACKS: [(AttackKind, u32); 9] = [
    (AttackKind::Fgsm, 4),
    (AttackKind::Bim, 4),
    (AttackKind::Pgd, 4),
    (AttackKind::MiFgsm, 4),
    (AttackKind::Cw, 1),
    (AttackKind::Deepfool, 1),
    (AttackKind::ApgdCe, 2),
    (AttackKind::ApgdDlr, 1),
    (AttackKind::ApgdT, 1),
];

/// Whether the attack ignores the steps setting (the control is disabled for it).
fn ignores_steps(kind: AttackKind) -> bool {
    matches!(
        kind,
        AttackKind::Fgsm | AttackKind::Cw | AttackKind::Deepfool
    )
}

fn expensive(kind: AttackKind) -> bool {
    matches!(kind, AttackKind::Cw | AttackKind::Deepfool)
}

/// One of `choices`, each as likely as its weight.
fn pick_weighted<T: Copy>(rng: &mut ChaCha8Rng, choices: &[(T, u32)]) -> T {
    let total: u32 = choices.iter().map(|(_, w)| w).sum();
    let mut r = rng.random_range(0..total);
    for &(c, w) in choices {
        if r < w {
            return c;
        }
        r -= w;
    }
    choices[choices.len() - 1].0
}

impl Event {
    fn pick(rng: &mut ChaCha8Rng) -> Self {
        pick_weighted(rng, &EVENTS)
    }

    fn name(self) -> &'static str {
        match self {
            Event::EpsDrag => "eps-drag",
            Event::Attack => "attack",
            Event::Steps => "steps",
            Event::Norm => "norm",
            Event::Target => "target",
            Event::Tap => "tap",
            Event::Channel => "channel",
            Event::Engine => "engine",
            Event::Bypass => "bypass",
            Event::Bundled => "bundled-image",
            Event::Builtin => "builtin-model",
            Event::BadImage => "bad-image",
            Event::BadModel => "bad-model",
            Event::GoodImage => "good-image",
            Event::RobustnessRun => "robustness-run",
            Event::RobustnessCancel => "robustness-cancel",
            Event::Export => "export",
            Event::BadExport => "bad-export",
            Event::ErrorWindow => "error-window",
            Event::Pause => "pause",
        }
    }
}

/// How a file reaches the app.
#[derive(Clone, Copy, Debug)]
enum Route {
    /// Dropped on the window.
    Drop,
    /// Through the open dialog (Ctrl+O or the File menu).
    Dialog,
    /// The public method (what the recent-files menu calls).
    Method,
}

/// A file dropped on the window, as the integration would hand it over.
#[derive(Debug)]
struct Dropped(PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

/// The app under test and everything the run keeps.
struct Soak {
    harness: Harness<'static, AdvlensApp>,
    rng: ChaCha8Rng,
    files: Files,
    script: Arc<Mutex<DialogScript>>,
    errors: ErrorWatch,
    expected: Vec<Expected>,
    max_queue: usize,
    frames: usize,
    exports: usize,
    snapshot_bytes: usize,
    gpu: bool,
    counts: BTreeMap<&'static str, usize>,
}

impl Soak {
    fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let files = Files::new(&mut rng);
        let settings = Settings {
            engine: EngineChoice::Cpu,
            ..Settings::default()
        };
        let mut harness = Harness::builder()
            .with_size([1400.0, 1000.0])
            .build_eframe(move |cc| {
                AdvlensApp::with_settings(&cc.egui_ctx, settings, None, None).unwrap()
            });
        let script = Arc::new(Mutex::new(DialogScript::default()));
        harness
            .state_mut()
            .set_dialog_backend(scripted_backend(script.clone()));
        // The gpu engine is offered where an adapter exists (lavapipe in CI); it is slow there,
        // so the events visit it briefly.
        let gpu = common::gpu_context().map(|ctx| harness.state_mut().set_gpu(ctx));
        let mut soak = Self {
            harness,
            rng,
            files,
            script,
            errors: ErrorWatch::default(),
            expected: vec![],
            max_queue: 0,
            frames: 0,
            exports: 0,
            snapshot_bytes: 0,
            gpu: gpu.is_some(),
            counts: BTreeMap::new(),
        };
        soak.wait_until("the first result", |a| {
            a.snapshot().is_some() && !a.is_busy()
        });
        soak.snapshot_bytes = soak.app().snapshot().map_or(0, |s| {
            let taps: usize = s.taps.iter().map(|t| t.clean.len() + t.adv.len()).sum();
            4 * (taps + s.x.len() + s.x_adv.len())
        });
        soak.cheap_settings();
        soak
    }

    /// Keeps every attack and the curve cheap, through the controls: a fixed number of steps
    /// (C&W and DeepFool too), a curve over few images and ε values.
    fn cheap_settings(&mut self) {
        let autos: Vec<_> = self
            .harness
            .get_all_by_role_and_label(Role::CheckBox, "auto")
            .collect();
        assert_eq!(autos.len(), 2, "step size and steps");
        autos[1].click();
        self.frame();
        assert_eq!(self.app().settings.attack.steps, Some(10));
        self.set_steps(4);
        self.harness
            .get_by_role_and_label(Role::SpinButton, "N")
            .set_value_accesskit(12.0);
        self.frame();
        self.harness
            .get_by_role_and_label(Role::SpinButton, "points")
            .set_value_accesskit(3.0);
        self.frame();
        let r = &self.app().settings.robustness;
        assert_eq!((r.images, r.points), (12, 3));
    }

    fn app(&self) -> &AdvlensApp {
        self.harness.state()
    }

    /// One frame (a frame per queued input event), then the checks that hold after every frame.
    fn frame(&mut self) {
        self.harness.step();
        self.frames += 1;
        let queued = self.app().worker_queue();
        self.max_queue = self.max_queue.max(queued);
        assert!(
            queued <= MAX_WORKER_QUEUE,
            "{queued} jobs wait for the worker (bound {MAX_WORKER_QUEUE})"
        );
        self.check_errors();
    }

    /// New errors: each must be one an event caused on purpose, and the status bar must show
    /// the newest (drawn from the next frame on when it arrived after the bar was drawn).
    fn check_errors(&mut self) {
        let before = self.errors.seen;
        self.errors.collect(&self.harness.state().errors.list);
        if self.errors.seen == before {
            return;
        }
        for detail in std::mem::take(&mut self.errors.fresh) {
            let Some(i) = self
                .expected
                .iter()
                .position(|e| detail.contains(&e.needle))
            else {
                panic!("an error no event explains: {detail}");
            };
            self.expected.remove(i);
        }
        self.harness.step();
        self.errors.collect(&self.harness.state().errors.list);
        let list = &self.harness.state().errors.list;
        let last = list.last().unwrap();
        let shown = format!("error: {} ({})", last.summary, list.len());
        let Some(link) = self.harness.query_all_by_label_contains(&shown).next() else {
            panic!("the status bar does not show {shown:?}");
        };
        // On screen, with room to read its start (a long one runs off the right edge).
        let room = self.harness.ctx.content_rect().right() - link.rect().left();
        assert!(
            room >= 200.0,
            "{shown:?} starts {room} points before the edge"
        );
    }

    /// Steps frames until `done` holds (the threads run in real time).
    fn wait_until(&mut self, what: &str, done: impl Fn(&AdvlensApp) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done(self.app()) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
            self.frame();
        }
        self.frame();
    }

    /// Waits until nothing is computed, read, written or asked.
    fn settle(&mut self) {
        self.wait_until("the app to settle", |a| {
            !a.is_busy() && !a.is_loading() && a.pending_writes() == 0 && a.open_dialog().is_none()
        });
    }

    /// Runs `n` events and returns what was measured.
    fn run(mut self, n: usize) -> Report {
        let start = Instant::now();
        let mut rss = vec![];
        for i in 1..=n {
            let event = Event::pick(&mut self.rng);
            *self.counts.entry(event.name()).or_default() += 1;
            if std::env::var_os("SOAK_TRACE").is_some() {
                let a = self.app();
                let c = &a.settings.attack;
                eprintln!(
                    "event {i}: {event:?} [{:?} {:?} steps {:?} {:?} {:?} bypass {} eps {:.1} {} {:?} busy {} last {:?}]",
                    c.kind,
                    c.norm,
                    c.steps,
                    c.target,
                    a.settings.engine,
                    c.bypass_denoise,
                    c.eps * 255.0,
                    a.model_name(),
                    a.settings.image,
                    a.is_busy(),
                    a.snapshot()
                        .map(|s| (s.record.engine.clone(), s.elapsed_ms as u64))
                );
            }
            self.event(event);
            // A user's pace varies: most events follow each other within a few frames, some
            // wait a little.
            for _ in 0..self.rng.random_range(1..=3) {
                std::thread::sleep(Duration::from_millis(self.rng.random_range(0..8)));
                self.frame();
            }
            assert!(
                self.expected.is_empty() || matches!(event, Event::Pause),
                "event {i} ({event:?}) expected errors that did not arrive"
            );
            // Memory is sampled with nothing under way, every BASELINE_EVENT events, so the
            // report shows whether it levels off or keeps climbing.
            if i % BASELINE_EVENT == 0 {
                self.settle();
                rss.push((i, resident_bytes()));
            }
        }
        self.settle();
        let rss_end = resident_bytes();
        let rss_baseline = rss.first().and_then(|&(_, b)| b);
        self.still_works();
        Report {
            events: n,
            frames: self.frames,
            seconds: start.elapsed().as_secs_f64(),
            rss_baseline,
            rss_end,
            rss,
            max_worker_queue: self.max_queue,
            snapshot_bytes: self.snapshot_bytes,
            errors: self.errors.seen,
            exports: self.exports,
            counts: self.counts,
        }
    }

    /// After the run the app still computes: a new ε gives a result on the current model.
    fn still_works(&mut self) {
        let eps = 13.0 / 255.0;
        self.harness.state_mut().settings.attack.eps = eps;
        self.wait_until("a result after the run", |a| {
            a.snapshot().is_some_and(|s| s.cfg.eps == eps) && !a.is_busy()
        });
        assert!(self.expected.is_empty());
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::EpsDrag => self.eps_drag(),
            Event::Attack => self.attack(),
            Event::Steps => {
                let n = self.rng.random_range(1..=6);
                if !ignores_steps(self.app().settings.attack.kind) {
                    self.set_steps(n);
                }
            }
            Event::Norm => self.norm(),
            Event::Target => self.target(),
            Event::Tap => self.tap(),
            Event::Channel => self.channel(),
            Event::Engine => self.engine(),
            Event::Bypass => self.bypass(),
            Event::Bundled => self.bundled(),
            Event::Builtin => self.builtin(),
            Event::BadImage => self.bad_image(),
            Event::BadModel => self.bad_model(),
            Event::GoodImage => self.good_image(),
            Event::RobustnessRun => self.robustness("Run"),
            Event::RobustnessCancel => self.robustness("Cancel"),
            Event::Export => self.export(),
            Event::BadExport => self.bad_export(),
            Event::ErrorWindow => self.error_window(),
            Event::Pause => self.settle(),
        }
    }

    /// Drags the ε slider with the pointer from one random point to another, a frame per move
    /// (each frame submits a job and cancels the one before).
    fn eps_drag(&mut self) {
        let rail = self.harness.get_by_role(Role::Slider).rect();
        let y = rail.center().y;
        let mut x = rail.left() + self.rng.random::<f32>() * rail.width();
        self.harness.hover_at(egui::pos2(x, y));
        self.harness.drag_at(egui::pos2(x, y));
        self.frame();
        for _ in 0..self.rng.random_range(1..=6) {
            x = rail.left() + self.rng.random::<f32>() * rail.width();
            self.harness.hover_at(egui::pos2(x, y));
            self.frame();
        }
        self.harness.drop_at(egui::pos2(x, y));
        self.frame();
        // The handle sits inside the rail by its radius: allow a few levels either way.
        let want = 64.0 * (x - rail.left()) / rail.width();
        let got = self.app().settings.attack.eps * 255.0;
        assert!(
            (got - want).abs() < 8.0,
            "ε {got}/255 after a drag to {want}"
        );
    }

    /// Opens the combo box `label` and clicks the option `option`.
    fn choose(&mut self, combo: &str, option: &str) {
        self.harness
            .get_by_role_and_label(Role::ComboBox, combo)
            .click();
        // The popup opens on the frame after the click.
        self.frame();
        self.frame();
        // Its options are clicked through AccessKit: the positions AccessKit reports for the
        // options of a popup that scrolled to the selected one can be a few rows off.
        self.harness
            .get_by_role_and_label(Role::Button, option)
            .click_accesskit();
        self.frame();
        // Unlike a pointer click, that leaves the popup open: close it as a user would.
        if self
            .harness
            .query_by_role_and_label(Role::Button, option)
            .is_some()
        {
            self.harness.key_press(egui::Key::Escape);
            self.frame();
        }
        self.frame();
    }

    /// Clicks the menu button `label`; its menu shows from the frame after the click.
    fn open_menu(&mut self, label: &str) {
        self.harness.get_by_label(label).click();
        self.frame();
        self.frame();
    }

    fn attack(&mut self) {
        let kind = pick_weighted(&mut self.rng, &ATTACKS);
        // The combo box is named by the tooltip of the attack it shows.
        let current = self.app().settings.attack.kind.id();
        let combo = self
            .harness
            .get_by(|n| n.role() == Role::ComboBox && n.value().as_deref() == Some(current))
            .accesskit_node()
            .label()
            .unwrap();
        self.choose(&combo, kind.id());
        assert_eq!(self.app().settings.attack.kind, kind);
    }

    fn set_steps(&mut self, n: usize) {
        self.harness
            .get_by_role_and_label(Role::SpinButton, "Iterations of the attack")
            .set_value_accesskit(n as f64);
        self.frame();
        assert_eq!(self.app().settings.attack.steps, Some(n));
    }

    fn norm(&mut self) {
        if self.app().settings.attack.kind == AttackKind::Cw {
            return; // the combo box is disabled: C&W is always L2
        }
        let (label, norm) = if self.rng.random() {
            ("L∞", advlens::attack::Norm::Linf)
        } else {
            ("L2", advlens::attack::Norm::L2)
        };
        self.choose(
            "Threat model: L∞ (every pixel moves ≤ ε) or L2 (||δ||₂ ≤ ε); C&W is always L2",
            label,
        );
        assert_eq!(self.app().settings.attack.norm, norm);
    }

    fn target(&mut self) {
        let t = TargetChoice::ALL[self.rng.random_range(0..TargetChoice::ALL.len())];
        self.choose(
            "Untargeted (any wrong class), a chosen class, a random class, or the least likely class",
            t.label(),
        );
        assert_eq!(self.app().settings.attack.target, t);
        if t == TargetChoice::Class {
            let class = self.rng.random_range(0..10);
            let name = format!("{class}: {}", self.app().network().class_names[class]);
            self.choose("The class the attack aims for", &name);
            assert_eq!(self.app().settings.attack.target_class, class);
        }
    }

    fn tap(&mut self) {
        // The list comes from the latest result (a model switch adds or removes the denoise
        // taps at its top): choose from a settled one, as the user chooses from what they see.
        self.settle();
        let Some(snap) = self.app().snapshot() else {
            return;
        };
        let choices: Vec<(String, String)> =
            tap_choices(snap, &self.app().network().graph.taps_denoise_first())
                .into_iter()
                .map(|name| {
                    let label = tap_label(&name, snap.tap(&name).map(|t| t.kind));
                    (name, label)
                })
                .collect();
        let (name, label) = choices[self.rng.random_range(0..choices.len())].clone();
        self.choose(
            "The activation to show; • marks denoise-block taps (listed first)",
            &label,
        );
        assert_eq!(self.app().settings.tap.as_deref(), Some(name.as_str()));
    }

    /// A channel, by its number box or by clicking its thumbnail.
    fn channel(&mut self) {
        if self.rng.random() {
            // Sorted by |Δ|, the thumbnails change places when a result arrives: click them
            // once the view has settled, as the user clicks what they see.
            self.settle();
            let thumbs: Vec<String> = self
                .harness
                .query_all_by_label_contains(": mean |Δ|")
                .filter_map(|n| n.accesskit_node().label())
                .collect();
            if thumbs.is_empty() {
                return;
            }
            let label = thumbs[self.rng.random_range(0..thumbs.len())].clone();
            self.harness.get_by_label(&label).scroll_to_me();
            self.frame();
            // Through AccessKit: scroll_to_me leaves a thumbnail of the grid's last row under
            // the plot panel's top edge here (the diagnostics line made the images row taller),
            // where a pointer click lands on the panel.
            self.harness.get_by_label(&label).click_accesskit();
            self.frame();
            let want: usize = label["channel ".len()..label.find(':').unwrap()]
                .parse()
                .unwrap();
            assert_eq!(self.app().settings.channel, want, "{label}");
        } else {
            let node = self.harness.get_by_role_and_label(
                Role::SpinButton,
                "Channel of the tap (also: click a thumbnail below)",
            );
            node.set_value_accesskit(f64::from(self.rng.random_range(0..8u8)));
            self.frame();
        }
    }

    /// cpu or auto (cpu on a software adapter) most of the time; where an adapter exists, now
    /// and then a visit to the gpu engine that waits for its result and comes back.
    fn engine(&mut self) {
        const COMBO: &str = "Which engine runs the attack and the forward passes";
        if self.gpu && self.rng.random_range(0..4) == 0 {
            self.choose(COMBO, "gpu");
            assert_eq!(self.app().settings.engine, EngineChoice::Gpu);
            *self.counts.entry("gpu-visit").or_default() += 1;
            // C&W and DeepFool take minutes on lavapipe: those are cancelled by the way back.
            if !expensive(self.app().settings.attack.kind) {
                self.wait_until("a result of the gpu engine", |a| {
                    a.snapshot()
                        .is_some_and(|s| s.record.engine.starts_with("gpu"))
                        && !a.is_busy()
                });
            }
            self.choose(COMBO, "cpu");
            return;
        }
        let (label, choice) = if self.rng.random() {
            ("cpu", EngineChoice::Cpu)
        } else {
            ("auto", EngineChoice::Auto)
        };
        self.choose(COMBO, label);
        assert_eq!(self.app().settings.engine, choice);
    }

    fn bypass(&mut self) {
        let before = self.app().settings.attack.bypass_denoise;
        self.harness.get_by_label("bypass denoise blocks").click();
        self.frame();
        assert_ne!(self.app().settings.attack.bypass_denoise, before);
    }

    fn bundled(&mut self) {
        let i = self.rng.random_range(0..advlens::app::STRIP_LEN);
        let label = format!("fashion:{i}");
        self.harness.get_by_label(&label).scroll_to_me();
        self.frame();
        self.harness.get_by_label(&label).click();
        self.frame();
        assert_eq!(self.app().settings.image, ImageSource::Bundled(i));
    }

    fn builtin(&mut self) {
        let shipped = &advlens::zoo::SHIPPED;
        let i = self.rng.random_range(0..shipped.len());
        let label = if i == 0 {
            format!("builtin:{} (default)", shipped[0].name)
        } else {
            format!("builtin:{}", shipped[i].name)
        };
        self.open_menu("built-in");
        self.harness.get_by_label(&label).click();
        self.frame();
        assert_eq!(
            self.app().model_name(),
            format!("builtin:{}", shipped[i].name),
            "after choosing {label}"
        );
    }

    /// Opens `path` by `route`; a model when `model`.
    fn open(&mut self, path: &Path, model: bool, route: Route) {
        match route {
            Route::Drop => {
                self.harness
                    .input_mut()
                    .dropped_files
                    .push(Arc::new(Dropped(path.to_path_buf())));
            }
            Route::Dialog => {
                self.script.lock().unwrap().open = Some(path.to_path_buf());
                if model {
                    self.open_menu("File");
                    self.harness.get_by_label("Open model…").click();
                } else {
                    self.harness
                        .key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::O);
                }
            }
            Route::Method if model => self.harness.state_mut().open_model(path.to_path_buf()),
            Route::Method => self.harness.state_mut().open_image(path),
        }
        self.frame();
    }

    fn route(&mut self) -> Route {
        [Route::Drop, Route::Dialog, Route::Method][self.rng.random_range(0..3)]
    }

    /// Opens a bad file and waits for its error (which names the file).
    fn open_bad(&mut self, path: PathBuf, model: bool) {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        self.expected.push(Expected { needle: name });
        let route = self.route();
        self.open(&path, model, route);
        self.wait_until("the error of a bad file", |a| {
            !a.is_loading() && a.open_dialog().is_none()
        });
        assert!(
            self.expected.is_empty(),
            "no error for {} opened by {route:?}",
            path.display()
        );
    }

    fn bad_image(&mut self) {
        let files = &self.files.bad_images;
        let path = files[self.rng.random_range(0..files.len())].clone();
        self.open_bad(path, false);
    }

    fn bad_model(&mut self) {
        let files = &self.files.bad_models;
        let path = files[self.rng.random_range(0..files.len())].clone();
        let model = self.app().model_name().to_string();
        self.open_bad(path, true);
        assert_eq!(
            self.app().model_name(),
            model,
            "a bad model replaced the model"
        );
    }

    fn good_image(&mut self) {
        let path = self.files.good_image.clone();
        let route = self.route();
        self.open(&path, false, route);
        let file = ImageSource::File(path);
        self.wait_until("a good image to open", |a| a.settings.image == file);
    }

    /// Clicks the robustness panel's `button` if it shows now (Run while idle, Cancel while
    /// running); a click on Cancel stops the curve.
    fn robustness(&mut self, button: &str) {
        if self.harness.query_by_label(button).is_none() {
            return;
        }
        self.harness.get_by_label(button).click();
        self.frame();
        // The panel shows the other button from the frame after the click.
        self.frame();
        if button == "Cancel" {
            assert!(self.harness.query_by_label("Run").is_some());
        }
    }

    /// Exports something through the File menu or Ctrl+S into the temp folder, then checks the
    /// file.
    fn export(&mut self) {
        let all = [
            Export::FeatureMaps,
            Export::Adversarial,
            Export::Perturbation,
            Export::Record,
        ];
        let what = all[self.rng.random_range(0..all.len())];
        self.exports += 1;
        let path = self
            .files
            .exports
            .join(format!("{}-{}", self.exports, what.default_name()));
        self.save_as(what, &path);
        self.wait_until("an export", |a| {
            a.open_dialog().is_none() && a.pending_writes() == 0
        });
        let len = std::fs::metadata(&path).map_or(0, |m| m.len());
        assert!(len > 0, "{} was not written", path.display());
    }

    /// Asks for `what` and answers the save dialog with `path`.
    fn save_as(&mut self, what: Export, path: &Path) {
        self.script.lock().unwrap().save = Some(path.to_path_buf());
        if what == Export::FeatureMaps && self.rng.random() {
            self.harness
                .key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::S);
            self.frame();
            return;
        }
        let label = match what {
            Export::FeatureMaps => "Export feature maps…  (Ctrl+S)",
            Export::Adversarial => "Export adversarial image…",
            Export::Perturbation => "Export perturbation…",
            Export::Record => "Export record (JSON)…",
        };
        self.open_menu("File");
        self.harness.get_by_label(label).click();
        self.frame();
    }

    /// An export into a path that cannot exist (under a regular file): its error shows.
    fn bad_export(&mut self) {
        let path = self.files.not_a_folder.join("adversarial.png");
        self.expected.push(Expected {
            needle: "not written".into(),
        });
        self.save_as(Export::Adversarial, &path);
        self.wait_until("a failed export", |a| {
            a.open_dialog().is_none() && a.pending_writes() == 0
        });
        assert!(
            self.expected.is_empty(),
            "no error for an export that failed"
        );
    }

    /// Clicks the status bar's error (when there is one): the window lists it; then closes it.
    fn error_window(&mut self) {
        let Some(last) = self.app().errors.list.last() else {
            return;
        };
        let first_line = last.summary.clone();
        // A long error runs off the right edge of the status bar: click its visible part.
        let link = self.harness.get_by_label_contains("error: ").rect();
        let right = self.harness.ctx.content_rect().right() - 10.0;
        let at = egui::pos2(link.center().x.min(right), link.center().y);
        self.harness.hover_at(at);
        self.harness.drag_at(at);
        self.harness.event(egui::Event::PointerButton {
            pos: at,
            button: egui::PointerButton::Primary,
            pressed: false,
            modifiers: egui::Modifiers::NONE,
        });
        self.frame();
        // A new window is laid out unseen on its first frame.
        self.frame();
        assert!(self.app().errors.open);
        assert!(
            self.harness
                .query_all_by_label_contains(&first_line)
                .count()
                >= 2,
            "the error window does not list {first_line:?}"
        );
        self.harness.state_mut().errors.open = false;
        self.frame();
    }
}
