//! The app: persisted [`Settings`] plus runtime state (the network, the image, the worker, the
//! loader, the file dialogs, the latest [`Snapshot`], textures, errors). Each frame it drains the
//! worker, the loader and the open dialog, draws the panels, applies what they asked for, and
//! submits a new job when the inputs changed. It never blocks on work: attacks run on the worker,
//! image decoding and model files on the loader, dialogs on their own thread.

mod capture;
mod central;
mod jobs;
mod loading;
mod menu;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::Receiver;

use eframe::egui;
use image::DynamicImage;

use super::channels::ChannelsPanel;
use super::controls::{Loaded, Strip, controls_ui};
use super::dialogs::Dialogs;
use super::feature_maps::FeatureMapsPanel;
use super::images::ImagesPanel;
use super::loader::Loader;
use super::robustness::RobustnessRun;
use super::settings::{EngineChoice, ImageSource, Settings};
use super::slow_run::SlowRun;
use super::status::{Errors, StatusInfo, errors_window, status_ui};
use super::task::Waker;
use super::worker::Worker;
use super::writer::Writer;
use crate::analysis::Snapshot;
use crate::array::Array;
use crate::attack::AttackConfig;
use crate::data::Labelled;
use crate::defense::Defense;
use crate::engine::gpu::GpuContext;
use crate::model::Network;

/// Set this environment variable to a path to take a screenshot once the first result is shown,
/// save it there and close the window (smoke tests under `xvfb-run`).
pub const SCREENSHOT_ENV: &str = "ADVLENS_SCREENSHOT";

/// What a job depends on: a new job is submitted whenever this changes.
#[derive(Clone, Debug, PartialEq)]
struct JobKey {
    cfg: AttackConfig,
    defense: Defense,
    engine: EngineChoice,
    image_gen: u64,
    net: usize,
}

/// An image the loader is decoding or converting.
struct PendingImage {
    id: u64,
    source: ImageSource,
    /// What the status bar says meanwhile.
    status: String,
}

/// A window screenshot egui has not delivered yet.
struct PendingShot {
    path: PathBuf,
    rx: Receiver<Arc<egui::ColorImage>>,
    close_after: bool,
}

/// The advlens app.
pub struct AdvlensApp {
    /// Persisted settings.
    pub settings: Settings,
    net: Arc<Network>,
    model_name: String,
    bundled: Option<Labelled>,
    source_image: Option<Arc<DynamicImage>>,
    x: Arc<Array>,
    label: Option<usize>,
    image_gen: u64,
    worker: Option<Worker>,
    loader: Option<Loader>,
    writer: Option<Writer>,
    /// Jobs sent to the writer and not yet answered.
    writes_pending: usize,
    /// Id of the newest loader request.
    next_load: u64,
    pending_image: Option<PendingImage>,
    pending_model: Option<(u64, PathBuf)>,
    dialogs: Dialogs,
    wake: Waker,
    next_id: u64,
    submitted: Option<JobKey>,
    busy: bool,
    /// The slow attack submitted last, while the newest job is one (runtime state).
    slow: Option<SlowRun>,
    /// Whether a widget was being dragged in the last frame (slow attacks wait for the release).
    dragging: bool,
    snapshot: Option<Arc<Snapshot>>,
    /// Errors shown in the status bar and the error window.
    pub errors: Errors,
    adapter: Option<String>,
    robustness: Option<RobustnessRun>,
    /// The window's wgpu device, once eframe has given it (for the gpu engine).
    gpu: Option<GpuContext>,
    images_panel: ImagesPanel,
    maps_panel: FeatureMapsPanel,
    channels_panel: ChannelsPanel,
    strip: Option<Strip>,
    shot: Option<PendingShot>,
    auto_shot: Option<PathBuf>,
    notice: Option<String>,
}

impl AdvlensApp {
    /// Builds the app from eframe's creation context (settings from its storage, the adapter
    /// from its wgpu render state).
    pub fn new(cc: &eframe::CreationContext<'_>) -> anyhow::Result<Self> {
        let settings = Settings::load(cc.storage);
        let adapter = cc
            .wgpu_render_state
            .as_ref()
            .map(|rs| rs.adapter.get_info().name);
        // The gpu engine computes on the device the window renders with.
        let gpu = cc.wgpu_render_state.as_ref().map(|rs| {
            GpuContext::from_device(
                rs.device.clone(),
                rs.queue.clone(),
                rs.adapter.get_info(),
                rs.device.limits(),
            )
        });
        let auto_shot = std::env::var_os(SCREENSHOT_ENV).map(PathBuf::from);
        let mut app = Self::with_settings(&cc.egui_ctx, settings, adapter, auto_shot)?;
        if let Some(ctx) = gpu {
            app.set_gpu(ctx);
        }
        Ok(app)
    }

    /// Builds the app with the given settings. Fails only when the built-in model cannot be built.
    pub fn with_settings(
        ctx: &egui::Context,
        settings: Settings,
        adapter: Option<String>,
        auto_shot: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let c = ctx.clone();
        let wake: Waker = Arc::new(move || c.request_repaint());
        let mut errors = Errors::default();
        let worker = match Worker::start(wake.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                errors.push(format!("cannot start the worker thread: {e}"));
                None
            }
        };
        let writer = match Writer::start(wake.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                errors.push(format!("cannot start the writer thread: {e}"));
                None
            }
        };
        let loader = match Loader::start(wake.clone()) {
            Ok(l) => Some(l),
            Err(e) => {
                errors.push(format!("cannot start the loader thread: {e}"));
                None
            }
        };
        let net = crate::zoo::default_network()
            .map_err(|e| anyhow::anyhow!("cannot build the default model: {e}"))?;
        let bundled = match crate::data::bundled_test_images() {
            Ok(b) => Some(b),
            Err(e) => {
                errors.push(format!("cannot read the bundled test images: {e}"));
                None
            }
        };
        let strip = bundled.as_ref().map(|b| Strip::new(ctx, &b.images));
        let mut app = Self {
            settings,
            net: Arc::new(net),
            model_name: crate::zoo::DEFAULT_MODEL.into(),
            bundled,
            source_image: None,
            x: Arc::new(crate::zoo::default_image()),
            label: None,
            image_gen: 0,
            worker,
            loader,
            writer,
            writes_pending: 0,
            next_load: 0,
            pending_image: None,
            pending_model: None,
            dialogs: Dialogs::default(),
            wake,
            next_id: 0,
            submitted: None,
            busy: false,
            slow: None,
            dragging: false,
            snapshot: None,
            errors,
            adapter,
            robustness: None,
            gpu: None,
            images_panel: ImagesPanel::default(),
            maps_panel: FeatureMapsPanel::default(),
            channels_panel: ChannelsPanel::default(),
            strip,
            shot: None,
            auto_shot,
            notice: None,
        };
        // The first bundled image shows at once (a bundled image converts on this thread; without
        // the bundled set `x` keeps the built-in default image, and the error above says why); a
        // persisted file or photo replaces it once the loader has decoded it.
        let requested = app.settings.image.clone();
        let first = ImageSource::default();
        app.settings.image = first.clone();
        let _ = app.set_image(&first);
        if requested != first
            && let Err(e) = app.set_image(&requested)
        {
            app.errors.push(e);
        }
        if let Some(path) = app.settings.model.clone() {
            app.open_model(path);
        }
        Ok(app)
    }

    /// The latest result, if any.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_deref()
    }

    /// Whether a job is being computed.
    pub fn is_busy(&self) -> bool {
        self.busy
    }

    /// The network in use.
    pub fn network(&self) -> &Network {
        &self.net
    }

    /// What the network in use is called: its file, or `builtin:NAME`.
    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    /// The model's view of the current image, `[1, C, H, W]`.
    pub fn input(&self) -> &Array {
        &self.x
    }

    /// Whether an image or a model is being read (the status bar says which).
    pub fn is_loading(&self) -> bool {
        self.pending_image.is_some() || self.pending_model.is_some()
    }

    /// Exports and screenshots queued on the writer thread and not yet written.
    pub fn pending_writes(&self) -> usize {
        self.writes_pending
    }

    /// Jobs waiting for the worker behind the one it runs (0 when it has stopped).
    pub fn worker_queue(&self) -> usize {
        self.worker.as_ref().map_or(0, Worker::queued)
    }

    /// The feature-map panel's colour scales as last drawn: the shared one and the |Δ| rows'
    /// (equal to the shared one unless the |Δ| rows have their own). `None` before the panel
    /// has drawn a grid.
    pub fn feature_map_scales(&self) -> Option<(f32, f32)> {
        self.maps_panel.shown_scales()
    }
}

/// Whether a dropped file is a model (by extension).
pub fn is_model_path(p: &Path) -> bool {
    p.extension().is_some_and(|e| {
        ["safetensors", "npz", "pth", "pt"]
            .iter()
            .any(|m| e.eq_ignore_ascii_case(m))
    })
}

impl eframe::App for AdvlensApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        self.settings.save(storage);
    }
}

impl AdvlensApp {
    /// The settings (the controls edit them; benchmarks and tests may too).
    pub fn settings_mut(&mut self) -> &mut Settings {
        &mut self.settings
    }

    /// Gives the worker a wgpu device for the gpu engine (eframe's, or a headless one).
    pub fn set_gpu(&mut self, ctx: GpuContext) {
        self.gpu = Some(ctx.clone());
        if let Some(w) = &mut self.worker {
            w.set_gpu(ctx);
        }
    }

    /// Draws one frame of the whole window into `ui` (what eframe calls every frame).
    pub fn show(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        self.poll_worker();
        if let Some(r) = &mut self.robustness {
            r.poll();
        }
        self.poll_dialog(&ctx);
        self.poll_screenshot();
        self.poll_writer(&ctx);
        self.handle_input(&ctx);
        egui::Panel::top("menu").show(ui, |ui| self.menu_ui(ui));
        let engine = self
            .snapshot
            .as_ref()
            .map_or_else(|| "cpu".to_string(), |s| s.record.engine.clone());
        let model = self.model_name.clone();
        let image = self.settings.image.describe();
        let activity = self.activity();
        egui::Panel::bottom("status").show(ui, |ui| {
            let info = StatusInfo {
                engine: &engine,
                adapter: self.adapter.as_deref(),
                last_ms: self.snapshot.as_ref().map(|s| s.elapsed_ms),
                busy: self.busy,
                activity: &activity,
                model: &model,
                image: &image,
            };
            status_ui(ui, &info, &mut self.errors);
        });
        let classes = self.net.class_names.clone();
        let actions = egui::Panel::left("controls")
            .default_size(300.0)
            .resizable(true)
            .show(ui, |ui| {
                let loaded = Loaded {
                    model: &model,
                    input: self.net.input_shape(),
                    classes: &classes,
                    adapter: self.adapter.as_deref(),
                };
                controls_ui(ui, &mut self.settings, &loaded, self.strip.as_ref())
            })
            .inner;
        egui::CentralPanel::default().show(ui, |ui| self.central_ui(ui));
        errors_window(&ctx, &mut self.errors);
        for a in actions {
            self.apply(a);
        }
        self.dragging = ctx.dragged_id().is_some();
        self.submit_if_changed();
        self.auto_screenshot(&ctx);
        if self
            .robustness
            .as_ref()
            .is_some_and(RobustnessRun::is_running)
        {
            ctx.request_repaint_after(std::time::Duration::from_millis(200));
        }
    }
}
