//! The control panel: model and image (open, recent, bundled strip), the attack settings, the
//! defence in front of the network ([`super::defense_controls`]), the engine and the denoise
//! switch. Every control has a tooltip; the panel only edits settings and returns
//! what the app should do, it never does work itself.

use std::cell::RefCell;
use std::path::PathBuf;

use eframe::egui;

use super::defense_controls::defense_ui;
use super::settings::{AttackSettings, EngineChoice, ImageSource, Settings, TargetChoice};
use super::textures::{CRISP, image_of};
use crate::attack::parse_budget;
use crate::attack::{AttackKind, Norm};

/// How many bundled images the strip shows.
pub const STRIP_LEN: usize = 40;

/// What the user asked for in the control panel.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Open the image file dialog.
    OpenImageDialog,
    /// Open the model file dialog.
    OpenModelDialog,
    /// Open this image file.
    OpenImage(PathBuf),
    /// Open this model file.
    OpenModel(PathBuf),
    /// Switch to the shipped model of this name (`builtin:NAME`).
    BuiltinModel(String),
    /// Show bundled test image `n`.
    Bundled(usize),
    /// Show the shipped photo of this name.
    Photo(String),
    /// Draw the random defence anew (a new seed).
    RedrawDefense,
}

/// Textures of the bundled-image strip, made once.
pub struct Strip {
    thumbs: Vec<egui::TextureHandle>,
}

impl Strip {
    /// Thumbnails of the first [`STRIP_LEN`] images of `images` (`[N, 1, 28, 28]`).
    pub fn new(ctx: &egui::Context, images: &crate::array::Array) -> Self {
        let n = images.batch().min(STRIP_LEN);
        let thumbs = (0..n)
            .filter_map(|i| {
                image_of(&images.select(&[i]))
                    .map(|img| ctx.load_texture(format!("strip-{i}"), img, CRISP))
            })
            .collect();
        Self { thumbs }
    }
}

/// What the panel shows about the model and image.
pub struct Loaded<'a> {
    /// Model name.
    pub model: &'a str,
    /// Model input `[C, H, W]`.
    pub input: [usize; 3],
    /// Class names.
    pub classes: &'a [String],
    /// The adapter the window renders with, if known.
    pub adapter: Option<&'a str>,
}

/// Draws the panel.
pub fn controls_ui(
    ui: &mut egui::Ui,
    settings: &mut Settings,
    loaded: &Loaded<'_>,
    strip: Option<&Strip>,
) -> Vec<Action> {
    let mut actions = vec![];
    egui::ScrollArea::vertical()
        .id_salt("controls-scroll")
        .show(ui, |ui| {
            files_ui(ui, settings, loaded, &mut actions);
            ui.separator();
            attack_ui(ui, &mut settings.attack, loaded.classes);
            ui.separator();
            if defense_ui(ui, &mut settings.defense, loaded.input).redraw {
                actions.push(Action::RedrawDefense);
            }
            ui.separator();
            engine_ui(ui, settings, loaded.adapter);
            ui.separator();
            let fashion = loaded.input == [1, 28, 28] && loaded.classes.len() == 10;
            match strip {
                Some(strip) if fashion => strip_ui(ui, strip, &settings.image, &mut actions),
                _ => fashion_note_ui(ui, &mut actions),
            }
            if loaded.input[0] == 3 {
                photos_ui(ui, &settings.image, &mut actions);
            } else {
                photos_note_ui(ui, &mut actions);
            }
        });
    actions
}

fn files_ui(
    ui: &mut egui::Ui,
    settings: &Settings,
    loaded: &Loaded<'_>,
    actions: &mut Vec<Action>,
) {
    ui.horizontal(|ui| {
        ui.strong("model");
        if ui
            .button("open…")
            .on_hover_text("Open a model: advlens safetensors, Xie et al.'s tensorpack .npz, or a PyTorch .pth state dict of a torchvision ResNet or EfficientNet-Lite (or drop it on the window)")
            .clicked()
        {
            actions.push(Action::OpenModelDialog);
        }
        ui.menu_button("built-in", |ui| {
            for (i, m) in crate::zoo::SHIPPED.iter().enumerate() {
                let spec = format!("builtin:{}", m.name);
                let current = loaded.model == spec
                    || (i == 0 && loaded.model == crate::zoo::DEFAULT_MODEL);
                let label = if i == 0 {
                    format!("{spec} (default)")
                } else {
                    spec
                };
                if ui
                    .selectable_label(current, label)
                    .on_hover_text(m.description)
                    .clicked()
                {
                    actions.push(Action::BuiltinModel(m.name.to_string()));
                }
            }
        })
        .response
        .on_hover_text("The Fashion-MNIST models shipped with advlens: one network trained three ways (assets/models/README.md)");
        ui.menu_button("recent", |ui| {
            for p in &settings.recent_models {
                if ui.button(p.display().to_string()).clicked() {
                    actions.push(Action::OpenModel(p.clone()));
                }
            }
        })
        .response
        .on_hover_text("Recently opened models");
    });
    let [c, h, w] = loaded.input;
    ui.label(format!("{} ({c}×{h}×{w})", short(loaded.model)))
        .on_hover_text(loaded.model);
    ui.horizontal(|ui| {
        ui.strong("image");
        if ui
            .button("open…")
            .on_hover_text("Open an image (PNG, JPEG, BMP, WebP, GIF) — Ctrl+O, or drop it on the window. It is converted to the model's input.")
            .clicked()
        {
            actions.push(Action::OpenImageDialog);
        }
        ui.menu_button("recent", |ui| {
            for p in &settings.recent_images {
                if ui.button(p.display().to_string()).clicked() {
                    actions.push(Action::OpenImage(p.clone()));
                }
            }
            if settings.recent_images.is_empty() {
                ui.label("(none yet)");
            }
        })
        .response
        .on_hover_text("Recently opened images");
    });
    let name = settings.image.describe();
    ui.label(short(&name)).on_hover_text(name);
}

fn short(s: &str) -> String {
    let n = s.chars().count();
    if n <= 32 {
        s.to_string()
    } else {
        format!("…{}", s.chars().skip(n - 31).collect::<String>())
    }
}

fn kind_tooltip(k: AttackKind) -> &'static str {
    match k {
        AttackKind::Fgsm => {
            "Fast gradient sign method: one step of size ε along the sign of the loss gradient"
        }
        AttackKind::Bim => {
            "Basic iterative method (I-FGSM): small signed steps, projected to the ε ball, no random start"
        }
        AttackKind::Pgd => {
            "Projected gradient descent: random start in the ε ball, signed steps, projection; restarts keep the best"
        }
        AttackKind::MiFgsm => {
            "Momentum iterative FGSM: accumulates a normalised gradient with momentum"
        }
        AttackKind::Cw => {
            "Carlini–Wagner L2: minimises ||δ||₂ plus a margin loss (ignores ε, always L2)"
        }
        AttackKind::Deepfool => {
            "DeepFool: the smallest step to the nearest decision boundary (ignores ε)"
        }
        AttackKind::ApgdCe => {
            "Auto-PGD on the cross-entropy: step size starts at 2ε and halves where the loss stalls, momentum 0.75, 100 steps by default"
        }
        AttackKind::ApgdDlr => {
            "Auto-PGD on the DLR loss, which ignores the scale of the logits (needs ≥ 3 classes)"
        }
        AttackKind::ApgdT => {
            "Auto-PGD with the targeted DLR loss towards each of the 9 runner-up classes in turn; success is any misclassification"
        }
        AttackKind::Square => {
            "Square attack: black-box random search over squares with forward passes only (5000 queries); sees through masked gradients"
        }
        AttackKind::AutoAttack => {
            "AutoAttack standard without FAB-T: APGD-CE, then APGD-T, then Square, each on the images still robust; an image counts as robust only if it survives all three"
        }
        AttackKind::AutoAttackRand => {
            "AutoAttack rand, for randomised models: APGD-CE and APGD-DLR with gradients averaged over 20 draws (EOT)"
        }
    }
}

fn attack_ui(ui: &mut egui::Ui, a: &mut AttackSettings, classes: &[String]) {
    ui.strong("attack");
    egui::Grid::new("attack-grid")
        .num_columns(2)
        .spacing([8.0, 4.0])
        .show(ui, |ui| {
            ui.label("attack");
            egui::ComboBox::from_id_salt("attack-kind")
                .selected_text(a.kind.id())
                .show_ui(ui, |ui| {
                    for k in AttackKind::ALL {
                        ui.selectable_value(&mut a.kind, k, k.id())
                            .on_hover_text(kind_tooltip(k));
                    }
                })
                .response
                .on_hover_text(kind_tooltip(a.kind));
            ui.end_row();

            ui.label("ε");
            eps_ui(ui, &mut a.eps);
            ui.end_row();

            let reason = unused(a.kind, Setting::StepSize);
            ui.label("step size");
            ui.add_enabled_ui(reason.is_none(), |ui| {
                ui.horizontal(|ui| step_size_ui(ui, a, reason));
            });
            ui.end_row();

            let reason = unused(a.kind, Setting::Steps);
            ui.label("steps");
            ui.add_enabled_ui(reason.is_none(), |ui| {
                ui.horizontal(|ui| steps_ui(ui, a, reason));
            });
            ui.end_row();

            let reason = unused(a.kind, Setting::Restarts);
            ui.label("restarts");
            ui.add_enabled_ui(reason.is_none(), |ui| {
                ui.add(egui::DragValue::new(&mut a.restarts).range(1..=20))
                    .on_hover_text(
                        "PGD and APGD restarts: each keeps its best adversarial example (APGD restarts only the images still robust)",
                    )
                    .on_disabled_hover_text(reason.unwrap_or_default());
            });
            ui.end_row();

            ui.label("norm");
            ui.add_enabled_ui(a.kind != AttackKind::Cw, |ui| {
                egui::ComboBox::from_id_salt("norm")
                    .selected_text(norm_label(a.norm))
                    .show_ui(ui, |ui| {
                        ui.selectable_value(&mut a.norm, Norm::Linf, norm_label(Norm::Linf));
                        ui.selectable_value(&mut a.norm, Norm::L2, norm_label(Norm::L2));
                    })
                    .response
                    .on_hover_text("Threat model: L∞ (every pixel moves ≤ ε) or L2 (||δ||₂ ≤ ε); C&W is always L2");
            });
            ui.end_row();

            let reason = unused(a.kind, Setting::Target);
            ui.label("target");
            ui.add_enabled_ui(reason.is_none(), |ui| ui.horizontal(|ui| {
                egui::ComboBox::from_id_salt("target")
                    .selected_text(a.target.label())
                    .show_ui(ui, |ui| {
                        for t in TargetChoice::ALL {
                            ui.selectable_value(&mut a.target, t, t.label());
                        }
                    })
                    .response
                    .on_hover_text("Untargeted (any wrong class), a chosen class, a random class, or the least likely class")
                    .on_disabled_hover_text(reason.unwrap_or_default());
                if a.target == TargetChoice::Class {
                    let name = classes
                        .get(a.target_class)
                        .cloned()
                        .unwrap_or_else(|| format!("class {}", a.target_class));
                    egui::ComboBox::from_id_salt("target-class")
                        .selected_text(name)
                        .show_ui(ui, |ui| {
                            for (i, n) in classes.iter().enumerate() {
                                ui.selectable_value(&mut a.target_class, i, format!("{i}: {n}"));
                            }
                        })
                        .response
                        .on_hover_text("The class the attack aims for");
                }
            }));
            ui.end_row();

            ui.label("seed");
            ui.add(egui::DragValue::new(&mut a.seed))
                .on_hover_text("Seed of every random choice (random start, random target)");
            ui.end_row();
        });
    ui.checkbox(&mut a.bypass_denoise, "bypass denoise blocks")
        .on_hover_text("Run the same weights with every denoise block skipped (output = input), for the attack and the views");
}

/// The step-size row: "auto" (the attack's rule) or a value.
fn step_size_ui(ui: &mut egui::Ui, a: &mut AttackSettings, reason: Option<&str>) {
    let mut auto = a.alpha.is_none();
    if ui
        .checkbox(&mut auto, "auto")
        .on_hover_text("Use the attack's default step-size rule")
        .on_disabled_hover_text(reason.unwrap_or_default())
        .changed()
    {
        a.alpha = if auto { None } else { Some(2.0 / 255.0) };
    }
    if let Some(alpha) = a.alpha.as_mut() {
        let mut v = *alpha * 255.0;
        if ui
            .add(
                egui::DragValue::new(&mut v)
                    .range(0.05..=64.0)
                    .speed(0.1)
                    .suffix("/255"),
            )
            .on_hover_text("Step size α in pixel units ×255")
            .on_disabled_hover_text(reason.unwrap_or_default())
            .changed()
        {
            *alpha = v / 255.0;
        }
    }
}

/// The steps row: "auto" (the attack's default) or a count.
fn steps_ui(ui: &mut egui::Ui, a: &mut AttackSettings, reason: Option<&str>) {
    let mut auto = a.steps.is_none();
    if ui
        .checkbox(&mut auto, "auto")
        .on_hover_text("Use the attack's default number of iterations")
        .on_disabled_hover_text(reason.unwrap_or_default())
        .changed()
    {
        a.steps = if auto { None } else { Some(10) };
    }
    if let Some(steps) = a.steps.as_mut() {
        ui.add(egui::DragValue::new(steps).range(1..=1000))
            .on_hover_text("Iterations of the attack")
            .on_disabled_hover_text(reason.unwrap_or_default());
    }
}

/// An attack setting that some attacks ignore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// The step size α.
    StepSize,
    /// The number of iterations.
    Steps,
    /// Restarts.
    Restarts,
    /// The target class mode.
    Target,
}

/// Why `kind` ignores `setting` (the tooltip of the disabled control), or `None` when it uses it.
pub fn unused(kind: AttackKind, setting: Setting) -> Option<&'static str> {
    use AttackKind as K;
    match (setting, kind) {
        (Setting::StepSize, K::ApgdCe | K::ApgdDlr | K::ApgdT) => Some(
            "APGD picks its own step size: 2ε at the start, halved at each checkpoint where the loss stalled",
        ),
        (Setting::StepSize, K::AutoAttack | K::AutoAttackRand) => Some(
            "AutoAttack's APGD components pick their own step size (2ε, halving where the loss stalls); Square takes none",
        ),
        (Setting::StepSize | Setting::Steps, K::Square) => Some(
            "Square is a random search with forward passes only: no gradient steps, it counts queries (5000)",
        ),
        (Setting::StepSize | Setting::Steps, K::Fgsm) => Some("FGSM takes a single step of size ε"),
        (Setting::StepSize | Setting::Steps, K::Cw) => Some(
            "C&W runs its own Adam optimiser (100 steps per binary-search round, learning rate 0.01)",
        ),
        (Setting::StepSize | Setting::Steps, K::Deepfool) => Some(
            "DeepFool computes each step to the nearest boundary itself (at most 50 iterations)",
        ),
        (Setting::Restarts, K::Square) => {
            Some("Square runs once per image: its random search keeps the best point it has seen")
        }
        (Setting::Restarts, K::Fgsm | K::MiFgsm | K::Cw | K::Deepfool) => {
            Some("Only PGD, BIM and APGD (and AutoAttack's APGD) restart")
        }
        (Setting::Target, K::AutoAttack | K::AutoAttackRand) => Some(
            "AutoAttack is untargeted (APGD-T picks its own 9 targets): choose apgd-ce or apgd-t to aim at a class",
        ),
        _ => None,
    }
}

/// The ε slider. Its value box reads what the CLI reads (`0.1`, `25/255`, or `25` for 25/255);
/// the line under it says how the last typed text was read, or why it was not.
fn eps_ui(ui: &mut egui::Ui, eps: &mut f32) {
    let id = ui.scope_id().with("eps-reading");
    let typed: RefCell<Option<Result<String, String>>> = RefCell::new(None);
    ui.vertical(|ui| {
        let mut eps255 = f64::from(*eps) * 255.0;
        let resp = ui
            .add(
                egui::Slider::new(&mut eps255, 0.0..=64.0)
                    .suffix("/255")
                    .max_decimals(2)
                    .custom_parser(|text| {
                        match parse_budget(text) {
                            Ok(b) => {
                                *typed.borrow_mut() = Some(Ok(b.reading));
                                Some(f64::from(b.value) * 255.0)
                            }
                            Err(e) => {
                                *typed.borrow_mut() = Some(Err(e));
                                None
                            }
                        }
                    }),
            )
            .on_hover_text(
                "Perturbation budget. Drag to recompute live, or type 0.1 (pixel units), 25/255, or 25 (8-bit levels, = 25/255).",
            );
        if resp.changed() {
            *eps = (eps255 / 255.0) as f32;
        }
        if let Some(r) = typed.take() {
            ui.data_mut(|d| d.insert_temp(id, r));
        }
        let shown: Option<Result<String, String>> = ui.data(|d| d.get_temp(id));
        match shown {
            Some(Err(e)) => {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
            Some(Ok(reading)) => {
                ui.small(reading);
            }
            None => {
                ui.small(format!("= {:.4} in pixel units", *eps));
            }
        }
    });
}

fn norm_label(n: Norm) -> &'static str {
    match n {
        Norm::Linf => "L∞",
        Norm::L2 => "L2",
    }
}

fn engine_ui(ui: &mut egui::Ui, settings: &mut Settings, adapter: Option<&str>) {
    ui.horizontal(|ui| {
        ui.strong("engine");
        egui::ComboBox::from_id_salt("engine")
            .selected_text(settings.engine.to_string())
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut settings.engine, EngineChoice::Auto, "auto")
                    .on_hover_text(
                        "The GPU the window draws with when it is a hardware adapter, else the CPU",
                    );
                ui.selectable_value(&mut settings.engine, EngineChoice::Cpu, "cpu")
                    .on_hover_text("The CPU engine (own GEMM kernels, candle as reference)");
                ui.selectable_value(&mut settings.engine, EngineChoice::Gpu, "gpu")
                    .on_hover_text(
                        "The wgpu engine (WGSL kernels) on the window's adapter, even a software one",
                    );
            })
            .response
            .on_hover_text("Which engine runs the attack and the forward passes");
    });
    if let Some(a) = adapter {
        ui.label(format!("adapter: {a}"));
    }
}

fn photos_ui(ui: &mut egui::Ui, current: &ImageSource, actions: &mut Vec<Action>) {
    ui.strong("photos")
        .on_hover_text("CC0 / public-domain photos for ImageNet models (from scikit-image)");
    ui.horizontal_wrapped(|ui| {
        for (name, _) in crate::zoo::PHOTOS {
            let on = *current == ImageSource::Photo(name.to_string());
            if ui
                .selectable_label(on, name)
                .on_hover_text(format!("photo:{name}"))
                .clicked()
            {
                actions.push(Action::Photo(name.to_string()));
            }
        }
    });
}

/// Where `scripts/fetch-models.sh` puts the pretrained EfficientNet-Lite0 (relative to the
/// working folder, as the README's commands use it).
pub const FETCHED_EFFICIENTNET: &str = "data/models/efficientnet-lite0.pth";

/// In place of the photos for a model that does not take RGB photos: which model does, and a
/// button that opens it when it has been fetched.
fn photos_note_ui(ui: &mut egui::Ui, actions: &mut Vec<Action>) {
    ui.strong("photos");
    ui.label("The shipped photos are for ImageNet models (RGB, e.g. 224×224); this model takes Fashion-MNIST images.");
    let fetched = std::path::Path::new(FETCHED_EFFICIENTNET);
    if fetched.exists() {
        if ui
            .button("open EfficientNet-Lite0 and the photos")
            .on_hover_text(FETCHED_EFFICIENTNET)
            .clicked()
        {
            actions.push(Action::OpenModel(fetched.to_path_buf()));
            actions.push(Action::Photo(crate::zoo::PHOTOS[0].0.to_string()));
        }
    } else {
        ui.small(format!(
            "Open an ImageNet model (Xie et al.'s .npz, a torchvision .pth); scripts/fetch-models.sh fetches EfficientNet-Lite0 to {FETCHED_EFFICIENTNET}."
        ));
    }
}

/// In place of the bundled strip for a model that does not take 28×28 grey images.
fn fashion_note_ui(ui: &mut egui::Ui, actions: &mut Vec<Action>) {
    ui.strong("bundled test images");
    ui.label("The bundled Fashion-MNIST images are for 1×28×28, 10-class models.");
    if ui
        .button("switch to the built-in Fashion-MNIST model")
        .on_hover_text(crate::zoo::DEFAULT_MODEL)
        .clicked()
    {
        actions.push(Action::BuiltinModel(
            crate::zoo::SHIPPED[0].name.to_string(),
        ));
        actions.push(Action::Bundled(super::settings::FIRST_IMAGE));
    }
}

fn strip_ui(ui: &mut egui::Ui, strip: &Strip, current: &ImageSource, actions: &mut Vec<Action>) {
    ui.strong("bundled test images")
        .on_hover_text("Fashion-MNIST test images shipped with advlens (true labels known)");
    ui.horizontal_wrapped(|ui| {
        ui.spacing_mut().item_spacing = egui::vec2(3.0, 3.0);
        for (i, t) in strip.thumbs.iter().enumerate() {
            let resp = ui.add(
                egui::Image::new((t.id(), egui::vec2(36.0, 36.0))).sense(egui::Sense::click()),
            );
            if *current == ImageSource::Bundled(i) {
                ui.painter().rect_stroke(
                    resp.rect.expand(1.5),
                    0.0,
                    egui::Stroke::new(2.0, ui.visuals().selection.stroke.color),
                    egui::StrokeKind::Outside,
                );
            }
            if resp.on_hover_text(format!("fashion:{i}")).clicked() {
                actions.push(Action::Bundled(i));
            }
        }
    });
}
