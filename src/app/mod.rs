//! The desktop app. This is a placeholder window until the app issue lands: it opens on the
//! built-in model and image and shows what they are.

use crate::model::Network;

/// Opens the app window and blocks until it is closed.
pub fn run() -> anyhow::Result<()> {
    let net = crate::zoo::default_network()?;
    let options = eframe::NativeOptions {
        viewport: eframe::egui::ViewportBuilder::default()
            .with_title("advlens")
            .with_inner_size([720.0, 480.0]),
        ..Default::default()
    };
    eframe::run_native(
        "advlens",
        options,
        Box::new(move |_cc| Ok(Box::new(Placeholder::new(net)))),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the window: {e}"))
}

/// The placeholder app state.
pub struct Placeholder {
    summary: String,
    image: crate::array::Array,
    texture: Option<eframe::egui::TextureHandle>,
}

impl Placeholder {
    /// A placeholder showing `net` and the built-in image.
    pub fn new(net: Network) -> Self {
        Self {
            summary: net.describe(),
            image: crate::zoo::default_image(),
            texture: None,
        }
    }
}

impl eframe::App for Placeholder {
    fn ui(&mut self, ui: &mut eframe::egui::Ui, _frame: &mut eframe::Frame) {
        use eframe::egui;
        let image = &self.image;
        let texture = self.texture.get_or_insert_with(|| {
            let [h, w] = [image.shape()[2], image.shape()[3]];
            let px: Vec<u8> = image
                .data()
                .iter()
                .map(|v| (v.clamp(0.0, 1.0) * 255.0) as u8)
                .collect();
            let img = egui::ColorImage::from_gray([w, h], &px);
            ui.ctx()
                .load_texture("default-image", img, egui::TextureOptions::NEAREST)
        });
        egui::CentralPanel::default().show(ui, |ui| {
            ui.heading("advlens");
            ui.label(
                "The interactive views are not built yet: use `advlens attack` and `advlens inspect` for now.",
            );
            ui.image((texture.id(), egui::vec2(168.0, 168.0)));
            egui::ScrollArea::vertical().show(ui, |ui| {
                ui.monospace(&self.summary);
            });
        });
    }
}
