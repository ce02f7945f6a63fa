//! The desktop app (egui/eframe): open a model and an image, drag ε, and watch clean vs
//! adversarial feature maps before and after the denoise blocks, with predictions, amplification
//! per layer, a robustness curve and exports.
//!
//! This module is egui plus threads only; what it shows is computed in [`crate::analysis`]. The UI
//! thread only draws immutable [`crate::analysis::snapshot::Snapshot`]s and never waits: every
//! background thread is a [`task::Task`] (the [`worker`] runs the attack and the forward passes,
//! the [`loader`] decodes images and reads model files, the [`writer`] encodes exports and
//! screenshots, file [`dialogs`] and the [`robustness`] curve run on their own). One concept per
//! file: [`state`] (the app, split by concern), [`settings`] (persisted), the panels
//! ([`controls`], [`images`], [`feature_maps`], [`channels`], [`amplification`], [`robustness`],
//! [`status`]), [`textures`] and [`screenshot`].

pub mod amplification;
pub mod bench;
pub mod channels;
pub mod controls;
pub mod dialogs;
pub mod feature_maps;
pub mod images;
pub mod loader;
pub mod robustness;
pub mod screenshot;
pub mod settings;
pub mod state;
pub mod status;
pub mod task;
pub mod textures;
pub mod worker;
pub mod writer;

pub use state::AdvlensApp;

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
