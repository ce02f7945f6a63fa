//! The app: persisted [`Settings`] plus runtime state (the network, the image, the worker, the
//! loader, the file dialogs, the latest [`Snapshot`], textures, errors). Each frame it drains the
//! worker, the loader and the open dialog, draws the panels, applies what they asked for, and
//! submits a new job when the inputs changed. It never blocks on work: attacks run on the worker,
//! image decoding and model files on the loader, dialogs on their own thread.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};

use eframe::egui;
use image::DynamicImage;

use super::channels::{ChannelTextures, channels_ui};
use super::controls::{Action, Loaded, Strip, controls_ui};
use super::dialogs::{DialogAnswer, DialogBackend, DialogPurpose, Dialogs};
use super::export::{self, Export};
use super::feature_maps::{GridTextures, feature_maps_ui, tap_choices};
use super::images::{ImageTextures, images_ui};
use super::loader::{DecodedImage, ImageInput, ImageJob, InputPrep, LoadReply, Loader};
use super::robustness::{RobustnessJob, RobustnessRun, robustness_ui};
use super::settings::{EngineChoice, ImageSource, Settings};
use super::status::{Errors, StatusInfo, errors_window, status_ui};
use super::worker::{AnalyseJob, Reply, Snapshot, Waker, Worker};
use crate::array::Array;
use crate::attack::{AttackConfig, Cancel};
use crate::data::idx::Labelled;
use crate::data::image_io;
use crate::engine::gpu::GpuContext;
use crate::model::Network;

/// Set this environment variable to a path to take a screenshot once the first result is shown,
/// save it there and close the window (smoke tests under `xvfb-run`).
pub const SCREENSHOT_ENV: &str = "ADVLENS_SCREENSHOT";

/// What a job depends on: a new job is submitted whenever this changes.
#[derive(Clone, Debug, PartialEq)]
struct JobKey {
    cfg: AttackConfig,
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

/// A window screenshot on its way to a file.
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
    /// Id of the newest loader request.
    next_load: u64,
    pending_image: Option<PendingImage>,
    pending_model: Option<(u64, PathBuf)>,
    dialogs: Dialogs,
    wake: Waker,
    next_id: u64,
    submitted: Option<JobKey>,
    busy: bool,
    snapshot: Option<Arc<Snapshot>>,
    /// Errors shown in the status bar and the error window.
    pub errors: Errors,
    adapter: Option<String>,
    robustness: Option<RobustnessRun>,
    /// The window's wgpu device, once eframe has given it (for the gpu engine).
    gpu: Option<GpuContext>,
    tex_images: Option<ImageTextures>,
    tex_grid: Option<GridTextures>,
    tex_channels: Option<ChannelTextures>,
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
        let loader = match Loader::start(wake.clone()) {
            Ok(l) => Some(l),
            Err(e) => {
                errors.push(format!("cannot start the loader thread: {e}"));
                None
            }
        };
        let net = crate::zoo::default_network()
            .map_err(|e| anyhow::anyhow!("cannot build the default model: {e}"))?;
        let bundled = match crate::data::idx::bundled_test_images() {
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
            next_load: 0,
            pending_image: None,
            pending_model: None,
            dialogs: Dialogs::default(),
            wake,
            next_id: 0,
            submitted: None,
            busy: false,
            snapshot: None,
            errors,
            adapter,
            robustness: None,
            gpu: None,
            tex_images: None,
            tex_grid: None,
            tex_channels: None,
            strip,
            shot: None,
            auto_shot,
            notice: None,
        };
        // The default image shows at once (it is what `x` holds already); a persisted file or
        // photo replaces it once the loader has decoded it.
        let requested = app.settings.image.clone();
        app.settings.image = ImageSource::Bundled(0);
        let _ = app.set_image(&ImageSource::Bundled(0));
        if requested != ImageSource::Bundled(0)
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

    /// Shows `source`. Bundled images switch at once; files and photos are decoded and converted
    /// on the loader thread and switch when [`Self::poll_worker`] receives them (their errors then
    /// go to the error list). Errors leave the current image in place.
    pub fn set_image(&mut self, source: &ImageSource) -> Result<(), String> {
        match source {
            ImageSource::Bundled(i) => self.set_bundled(*i),
            ImageSource::File(path) => {
                self.load_image(source.clone(), ImageInput::File(path.clone()), "decoding")
            }
            ImageSource::Photo(name) => {
                self.load_image(source.clone(), ImageInput::Photo(name.clone()), "decoding")
            }
        }
    }

    /// Opens an image file: it is decoded on the loader thread; errors appear in the UI.
    pub fn open_image(&mut self, path: &Path) {
        if let Err(e) = self.set_image(&ImageSource::File(path.to_path_buf())) {
            self.errors.push(e);
        }
    }

    /// Starts reading a model file on the loader thread. The app switches to it once it has
    /// loaded; errors appear in the UI and the current model stays.
    pub fn open_model(&mut self, path: PathBuf) {
        let Some(loader) = &self.loader else {
            self.errors.push("the loader thread is not running");
            return;
        };
        self.next_load += 1;
        loader.model(self.next_load, path.clone());
        self.pending_model = Some((self.next_load, path));
    }

    /// Switches to the shipped model `name` (`builtin:NAME`; embedded, so at once) and remembers
    /// it for the next start. Supersedes a model file that is still loading.
    pub fn use_builtin(&mut self, name: &str) {
        match crate::zoo::shipped(name) {
            Ok(net) => {
                let spec = format!("builtin:{name}");
                self.settings.model =
                    (name != crate::zoo::SHIPPED[0].name).then(|| PathBuf::from(&spec));
                self.pending_model = None;
                self.use_network(Arc::new(net), spec);
            }
            Err(e) => self.errors.push(e.to_string()),
        }
    }

    /// Whether an image or a model is being read (the status bar says which).
    pub fn is_loading(&self) -> bool {
        self.pending_image.is_some() || self.pending_model.is_some()
    }

    /// A bundled 28×28 test image, converted on this thread (it is tiny).
    fn set_bundled(&mut self, i: usize) -> Result<(), String> {
        let set = self
            .bundled
            .as_ref()
            .ok_or("the bundled test images are not available")?;
        if i >= set.len() {
            return Err(format!("there are {} bundled images", set.len()));
        }
        let img = image_io::example_to_image(set.images.example(i), [1, 28, 28])
            .map_err(|e| e.to_string())?;
        let label = set.labels.get(i).copied();
        let p = InputPrep::of(&self.net);
        let x = image_io::to_array_with(&img, p.channels, p.size, p.eval_resize)
            .map_err(|e| e.to_string())?;
        let label = label.filter(|_| self.is_fashion_model());
        // Supersedes an image the loader is still decoding.
        self.pending_image = None;
        self.show_image(ImageSource::Bundled(i), Arc::new(img), x, label);
        Ok(())
    }

    /// Sends an image job to the loader; `verb` is what the status bar says meanwhile.
    fn load_image(
        &mut self,
        source: ImageSource,
        input: ImageInput,
        verb: &str,
    ) -> Result<(), String> {
        let loader = self
            .loader
            .as_ref()
            .ok_or("the loader thread is not running")?;
        self.next_load += 1;
        let status = format!("{verb} {}…", source.describe());
        loader.image(ImageJob {
            id: self.next_load,
            source: source.clone(),
            input,
            prep: InputPrep::of(&self.net),
        });
        self.pending_image = Some(PendingImage {
            id: self.next_load,
            source,
            status,
        });
        Ok(())
    }

    fn show_image(
        &mut self,
        source: ImageSource,
        img: Arc<DynamicImage>,
        x: Array,
        label: Option<usize>,
    ) {
        self.label = label;
        self.x = Arc::new(x);
        self.source_image = Some(img);
        self.image_gen += 1;
        if let ImageSource::File(p) = &source {
            self.settings.push_recent_image(p);
        }
        self.settings.image = source;
    }

    /// The loader's answer to an image job; answers to superseded jobs are dropped.
    fn image_loaded(&mut self, id: u64, source: ImageSource, result: Result<DecodedImage, String>) {
        if self.pending_image.as_ref().is_none_or(|p| p.id != id) {
            return;
        }
        self.pending_image = None;
        match result {
            Err(e) => self.errors.push(e),
            // The model changed while the image was converted: convert it again.
            Ok(d) if d.prep != InputPrep::of(&self.net) => {
                let input = ImageInput::Decoded(d.image);
                if let Err(e) = self.load_image(source, input, "converting") {
                    self.errors.push(e);
                }
            }
            Ok(d) => self.show_image(source, d.image, d.x, None),
        }
    }

    /// The loader's answer to a model request; answers to superseded requests are dropped.
    fn model_loaded(&mut self, id: u64, path: PathBuf, result: Result<Arc<Network>, String>) {
        if self.pending_model.as_ref().is_none_or(|(p, _)| *p != id) {
            return;
        }
        self.pending_model = None;
        match result {
            Ok(net) => {
                self.settings.model = Some(path.clone());
                if !crate::zoo::is_builtin(&path) {
                    self.settings.push_recent_model(&path);
                }
                self.use_network(net, path.display().to_string());
            }
            Err(e) => {
                if self.settings.model.as_ref() == Some(&path) {
                    self.settings.model = None;
                }
                self.errors.push(e);
            }
        }
    }

    fn is_fashion_model(&self) -> bool {
        self.net.input_shape() == [1, 28, 28] && self.net.num_classes() == 10
    }

    fn use_network(&mut self, net: Arc<Network>, name: String) {
        let old_prep = InputPrep::of(&self.net);
        self.net = net;
        self.model_name = name;
        if let Some(r) = &mut self.robustness {
            r.cancel();
        }
        // Re-convert the current image (or the one being decoded) for the new model's input on
        // the loader; an ImageNet-sized model gets a photo instead of a 28×28 Fashion-MNIST image,
        // and back. Until the new input arrives no job is submitted (its shape does not match).
        let (source, decoded) = match &self.pending_image {
            Some(p) => (p.source.clone(), None),
            None => (self.settings.image.clone(), self.source_image.clone()),
        };
        let prep = InputPrep::of(&self.net);
        let converted = prep == old_prep && self.x.shape() == prep.shape().as_slice();
        let result = match (&source, self.is_fashion_model(), decoded) {
            (ImageSource::Bundled(_), false, _) => {
                self.set_image(&ImageSource::Photo("coffee".into()))
            }
            (ImageSource::Photo(_), true, _) => self.set_image(&ImageSource::Bundled(0)),
            (ImageSource::Bundled(_), true, _) | (_, _, None) => self.set_image(&source),
            // Same preprocessing: the input is already right.
            (_, _, Some(_)) if converted => Ok(()),
            (_, _, Some(img)) => self.load_image(source, ImageInput::Decoded(img), "converting"),
        };
        if let Err(e) = result {
            self.errors.push(e);
        }
    }

    /// Takes every reply the loader has sent.
    fn poll_loader(&mut self) {
        let mut replies = vec![];
        if let Some(l) = &self.loader {
            loop {
                match l.poll() {
                    Ok(Some(r)) => replies.push(r),
                    Ok(None) => break,
                    Err(e) => {
                        self.errors.push(e);
                        self.loader = None;
                        self.pending_image = None;
                        self.pending_model = None;
                        break;
                    }
                }
            }
        }
        for r in replies {
            match r {
                LoadReply::Image { id, source, result } => self.image_loaded(id, source, result),
                LoadReply::Model { id, path, result } => self.model_loaded(id, path, result),
            }
        }
    }

    /// Takes every reply the worker and the loader have sent.
    pub fn poll_worker(&mut self) {
        let mut replies = vec![];
        if let Some(w) = &self.worker {
            loop {
                match w.poll() {
                    Ok(Some(r)) => replies.push(r),
                    Ok(None) => break,
                    Err(e) => {
                        self.errors.push(e);
                        self.worker = None;
                        break;
                    }
                }
            }
        }
        for r in replies {
            match r {
                Reply::Analysed(s) => {
                    if s.id + 1 == self.next_id {
                        self.busy = false;
                    }
                    if self.snapshot.as_ref().is_none_or(|old| s.id > old.id) {
                        self.snapshot = Some(Arc::from(s));
                    }
                }
                Reply::Failed { id, error } => {
                    if id + 1 == self.next_id {
                        self.busy = false;
                    }
                    self.errors.push(format!("attack failed: {error}"));
                }
                Reply::Notice(n) => self.errors.push(n),
            }
        }
        self.poll_loader();
    }

    /// Submits a job when the attack, the image or the model changed since the last one.
    pub fn submit_if_changed(&mut self) {
        let key = JobKey {
            cfg: self.settings.attack.config(),
            engine: self.settings.engine,
            image_gen: self.image_gen,
            net: Arc::as_ptr(&self.net) as usize,
        };
        if self.submitted.as_ref() == Some(&key) {
            return;
        }
        // After a model change the image is converted again on the loader; wait for it.
        if self.x.shape() != InputPrep::of(&self.net).shape().as_slice() {
            return;
        }
        let Some(worker) = &mut self.worker else {
            return;
        };
        let job = AnalyseJob {
            id: self.next_id,
            net: self.net.clone(),
            model_name: self.model_name.clone(),
            x: self.x.clone(),
            label: self.label,
            source: self.settings.image.describe(),
            cfg: key.cfg.clone(),
            engine: key.engine,
            cancel: Cancel::new(),
        };
        self.next_id += 1;
        worker.submit(job);
        self.busy = true;
        self.submitted = Some(key);
    }

    fn start_robustness(&mut self) {
        if !self.is_fashion_model() {
            self.errors.push(
                "the robustness curve runs on the bundled Fashion-MNIST images: it needs a 1×28×28, 10-class model",
            );
            return;
        }
        let Some(set) = &self.bundled else {
            self.errors
                .push("the bundled test images are not available");
            return;
        };
        let n = self.settings.robustness.images.clamp(1, set.len());
        let idx: Vec<usize> = (0..n).collect();
        let sub = set.select(&idx);
        let job = RobustnessJob {
            net: self.net.clone(),
            images: sub.images,
            labels: sub.labels,
            cfg: self.settings.attack.config(),
            eps: self.settings.robustness.eps_values(),
            engine: self.settings.engine,
            gpu: self.gpu.clone(),
        };
        match RobustnessRun::start(job, self.wake.clone()) {
            Ok(r) => self.robustness = Some(r),
            Err(e) => self
                .errors
                .push(format!("cannot start the robustness thread: {e}")),
        }
    }

    /// Exports the feature-map panel of the current tap and channel to `path`.
    pub fn export_feature_maps(&self, path: &Path) -> anyhow::Result<()> {
        let snap = self
            .snapshot()
            .ok_or_else(|| anyhow::anyhow!("no result yet"))?;
        let tap = self
            .settings
            .tap
            .clone()
            .or_else(|| self.default_tap(snap))
            .ok_or_else(|| anyhow::anyhow!("no tap selected"))?;
        let grid = super::maps::feature_grid(snap, &tap, self.settings.channel)
            .ok_or_else(|| anyhow::anyhow!("tap {tap} has no channel {}", self.settings.channel))?;
        export::save_feature_maps(&grid, path)
    }

    fn default_tap(&self, snap: &Snapshot) -> Option<String> {
        tap_choices(snap, &self.net.graph.taps_denoise_first())
            .into_iter()
            .next()
    }

    /// Writes `what` of the current result to `path`.
    pub fn export(&self, what: Export, path: &Path) -> anyhow::Result<()> {
        match (what, self.snapshot()) {
            (Export::FeatureMaps, _) => self.export_feature_maps(path),
            (Export::Adversarial, Some(s)) => export::save_adversarial(s, path),
            (Export::Perturbation, Some(s)) => export::save_perturbation(s, path),
            (Export::Record, Some(s)) => export::save_record(s, path),
            (_, None) => Err(anyhow::anyhow!("no result yet")),
        }
    }

    /// Writes `what` to `path` (where the save dialog's answer leads) and reports the outcome in
    /// the UI: a notice in the menu bar, or an error.
    pub fn export_to(&mut self, what: Export, path: &Path) {
        match self.export(what, path) {
            Ok(()) => self.notice = Some(format!("wrote {}", path.display())),
            Err(e) => self.errors.push(format!("export failed: {e:#}")),
        }
    }

    /// Replaces what shows the file dialogs. Tests install a backend that answers with a path,
    /// so the dialog thread, its channel and the code that applies the answer run without a
    /// dialog on screen.
    pub fn set_dialog_backend(&mut self, backend: DialogBackend) {
        self.dialogs.set_backend(backend);
    }

    /// What the open file dialog is for, if one is open.
    pub fn open_dialog(&self) -> Option<DialogPurpose> {
        self.dialogs.open_purpose()
    }

    /// Opens a file dialog for `purpose` on its helper thread; ignored while one is open.
    pub fn start_dialog(&mut self, purpose: DialogPurpose) {
        if let Err(e) = self.dialogs.open(purpose, &self.wake) {
            self.errors
                .push(format!("cannot start the file dialog thread: {e}"));
        }
    }

    /// Applies the open dialog's answer once it has arrived.
    fn poll_dialog(&mut self, ctx: &egui::Context) {
        match self.dialogs.poll() {
            None | Some(Ok(DialogAnswer { path: None, .. })) => {}
            Some(Err(e)) => self.errors.push(e),
            Some(Ok(DialogAnswer {
                purpose,
                path: Some(path),
            })) => match purpose {
                DialogPurpose::OpenImage => self.open_image(&path),
                DialogPurpose::OpenModel => self.open_model(path),
                DialogPurpose::Export(what) => self.export_to(what, &path),
                DialogPurpose::Screenshot => self.request_screenshot(ctx, path, false),
            },
        }
    }

    /// What the status bar shows beside the worker's state: the open dialog and the files
    /// being read.
    fn activity(&self) -> Vec<String> {
        let mut out = vec![];
        if self.dialogs.open_purpose().is_some() {
            out.push("waiting for the file dialog…".to_string());
        }
        if let Some(p) = &self.pending_image {
            out.push(p.status.clone());
        }
        if let Some((_, path)) = &self.pending_model {
            out.push(format!("loading model {}…", path.display()));
        }
        out
    }

    /// Asks eframe for a screenshot of the window, to be written to `path`.
    pub fn request_screenshot(&mut self, ctx: &egui::Context, path: PathBuf, close_after: bool) {
        let (tx, rx) = channel();
        let c = ctx.clone();
        ctx.request_screenshot(move |img| {
            let _ = tx.send(img);
            c.request_repaint();
        });
        self.shot = Some(PendingShot {
            path,
            rx,
            close_after,
        });
    }

    fn poll_screenshot(&mut self, ctx: &egui::Context) {
        let Some(shot) = &self.shot else { return };
        let Ok(img) = shot.rx.try_recv() else { return };
        match export::save_screenshot(&img, &shot.path) {
            Ok(()) => self.notice = Some(format!("wrote {}", shot.path.display())),
            Err(e) => self.errors.push(format!("screenshot failed: {e:#}")),
        }
        if shot.close_after {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
        self.shot = None;
    }

    fn handle_input(&mut self, ctx: &egui::Context) {
        use egui::{Key, KeyboardShortcut, Modifiers};
        let shot = KeyboardShortcut::new(Modifiers::COMMAND | Modifiers::SHIFT, Key::S);
        let save = KeyboardShortcut::new(Modifiers::COMMAND, Key::S);
        let open = KeyboardShortcut::new(Modifiers::COMMAND, Key::O);
        let (do_shot, do_save, do_open) = ctx.input_mut(|i| {
            let a = i.consume_shortcut(&shot);
            let b = !a && i.consume_shortcut(&save);
            (a, b, i.consume_shortcut(&open))
        });
        if do_shot {
            self.start_dialog(DialogPurpose::Screenshot);
        }
        if do_save {
            self.start_dialog(DialogPurpose::Export(Export::FeatureMaps));
        }
        if do_open {
            self.start_dialog(DialogPurpose::OpenImage);
        }
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .collect()
        });
        for p in dropped {
            if is_model_path(&p) {
                self.open_model(p);
            } else {
                self.open_image(&p);
            }
        }
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::OpenImageDialog => self.start_dialog(DialogPurpose::OpenImage),
            Action::OpenModelDialog => self.start_dialog(DialogPurpose::OpenModel),
            Action::OpenImage(p) => self.open_image(&p),
            Action::OpenModel(p) => self.open_model(p),
            Action::BuiltinModel(name) => self.use_builtin(&name),
            Action::Bundled(i) => {
                if let Err(e) = self.set_image(&ImageSource::Bundled(i)) {
                    self.errors.push(e);
                }
            }
            Action::Photo(name) => {
                if let Err(e) = self.set_image(&ImageSource::Photo(name)) {
                    self.errors.push(e);
                }
            }
        }
    }

    fn menu_ui(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui.button("Open image…  (Ctrl+O)").clicked() {
                    self.apply(Action::OpenImageDialog);
                }
                if ui.button("Open model…").clicked() {
                    self.apply(Action::OpenModelDialog);
                }
                ui.separator();
                let exports = [
                    ("Export feature maps…  (Ctrl+S)", Export::FeatureMaps),
                    ("Export adversarial image…", Export::Adversarial),
                    ("Export perturbation…", Export::Perturbation),
                    ("Export record (JSON)…", Export::Record),
                ];
                for (label, what) in exports {
                    if ui.button(label).clicked() {
                        self.start_dialog(DialogPurpose::Export(what));
                    }
                }
                if ui.button("Screenshot…  (Ctrl+Shift+S)").clicked() {
                    self.start_dialog(DialogPurpose::Screenshot);
                }
                ui.separator();
                if ui.button("Quit").clicked() {
                    ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                }
            });
            ui.menu_button("View", |ui| {
                if ui.button("Errors").clicked() {
                    self.errors.open = true;
                }
                egui::widgets::global_theme_preference_buttons(ui);
            });
            ui.menu_button("Help", |ui| {
                ui.label(format!("advlens {}", env!("CARGO_PKG_VERSION")));
                ui.label("Drag ε to recompute live; drop an image or a model (.safetensors, Xie et al. .npz, PyTorch .pth) on the window.");
                ui.label("• marks denoise-block taps.");
            });
            if let Some(n) = &self.notice {
                ui.separator();
                ui.label(n);
            }
        });
    }

    fn central_ui(&mut self, ui: &mut egui::Ui) {
        let Some(snap) = self.snapshot.clone() else {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("computing the first result…");
            });
            return;
        };
        let choices = tap_choices(&snap, &self.net.graph.taps_denoise_first());
        egui::ScrollArea::vertical()
            .id_salt("central-scroll")
            .show(ui, |ui| {
                images_ui(ui, &snap, &mut self.tex_images);
                ui.separator();
                feature_maps_ui(
                    ui,
                    &snap,
                    &choices,
                    &mut self.settings.tap,
                    &mut self.settings.channel,
                    &mut self.tex_grid,
                );
                ui.separator();
                if let Some(tap) = self.settings.tap.clone()
                    && let Some(ch) = channels_ui(
                        ui,
                        &snap,
                        &tap,
                        self.settings.channel,
                        &mut self.settings.sort_channels_by_delta,
                        &mut self.tex_channels,
                    )
                {
                    self.settings.channel = ch;
                }
                ui.separator();
                ui.columns(2, |cols| {
                    super::amplification::amplification_ui(&mut cols[0], &snap);
                    let max = self.bundled.as_ref().map_or(0, Labelled::len);
                    let action = robustness_ui(
                        &mut cols[1],
                        &mut self.settings.robustness,
                        self.robustness.as_ref(),
                        max,
                    );
                    match action {
                        super::robustness::Action::Start => self.start_robustness(),
                        super::robustness::Action::Cancel => {
                            if let Some(r) = &mut self.robustness {
                                r.cancel();
                            }
                        }
                        super::robustness::Action::None => {}
                    }
                });
            });
    }

    fn auto_screenshot(&mut self, ctx: &egui::Context) {
        if self.snapshot.is_some()
            && !self.busy
            && !self.is_loading()
            && self.shot.is_none()
            && let Some(path) = self.auto_shot.take()
        {
            self.request_screenshot(ctx, path, true);
        }
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
        self.poll_screenshot(&ctx);
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
