//! The desktop app (egui/eframe): open a model and an image, drag ε, and watch clean vs
//! adversarial feature maps before and after the denoise blocks, with predictions, amplification
//! per layer, a robustness curve and exports.
//!
//! This module is egui plus threads only; what it shows is computed in [`crate::analysis`]. The UI
//! thread only draws immutable [`crate::analysis::Snapshot`]s and never waits: every
//! background thread is a [`task::Task`] (the [`worker`] runs the attack and the forward passes,
//! the [`loader`] decodes images and reads model files, the [`writer`] encodes exports and
//! screenshots, file [`dialogs`] and the [`robustness`] curve run on their own). One concept per
//! file: [`state`] (the app, split by concern), [`settings`] (persisted), the panels
//! ([`controls`] with [`defense_controls`], [`images`] with [`diagnostics`], [`slow_run`], [`feature_maps`], [`channels`],
//! [`amplification`], [`robustness`], [`status`]), [`textures`] and [`screenshot`].

mod amplification;
mod bench;
mod channels;
mod controls;
mod defense_controls;
mod diagnostics;
mod dialogs;
mod feature_maps;
mod images;
mod loader;
mod robustness;
mod screenshot;
mod settings;
mod slow_run;
mod state;
mod status;
mod task;
mod textures;
mod worker;
mod writer;

pub use bench::run as run_bench;
pub use controls::STRIP_LEN;
pub use dialogs::{
    DIALOG_THREAD, DialogAnswer, DialogBackend, DialogPurpose, Dialogs, native_backend,
};
pub use feature_maps::{DELTA_SCALE_TOGGLE, tap_choices, tap_label};
pub use settings::{
    AttackSettings, CURVE_APGD_STEPS, CurveAttack, FIRST_IMAGE, ImageSource, RobustnessSettings,
    Settings, TargetChoice,
};
pub use slow_run::{SlowRun, SlowState};
pub use state::{AdvlensApp, SCREENSHOT_ENV};
pub use status::{AppError, Errors};
pub use task::{Replier, Stopped, Task, Waker, newest};
pub use worker::{PROGRESS_STEP, Reply, Worker};

/// Opens the app window and blocks until it is closed.
pub fn run() -> anyhow::Result<()> {
    let mut options = eframe::NativeOptions {
        viewport: eframe::egui::ViewportBuilder::default()
            .with_title("advlens")
            .with_inner_size([1280.0, 900.0])
            .with_drag_and_drop(true),
        ..Default::default()
    };
    // The gpu engine computes on the window's device: ask for everything the adapter offers
    // (egui-wgpu's default is wgpu's conservative defaults), so large feature maps fit.
    if let eframe::egui_wgpu::WgpuSetup::CreateNew(setup) = &mut options.wgpu_options.wgpu_setup {
        setup.device_descriptor = std::sync::Arc::new(|adapter| {
            let limits = if adapter.get_info().backend == wgpu::Backend::Gl {
                wgpu::Limits::downlevel_webgl2_defaults()
            } else {
                adapter.limits()
            };
            wgpu::DeviceDescriptor {
                label: Some("advlens window and gpu engine"),
                required_limits: limits,
                ..Default::default()
            }
        });
    }
    eframe::run_native(
        "advlens",
        options,
        Box::new(|cc| {
            AdvlensApp::new(cc)
                .map(|a| Box::new(a) as Box<dyn eframe::App>)
                .map_err(|e| e.into())
        }),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the window: {e}"))
}
