//! Opening models and images: bundled images switch at once; files and photos are decoded on the
//! loader thread; model files are read there too; a new model gets the open image converted to
//! its own input.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::DynamicImage;

use super::AdvlensApp;
use super::PendingImage;
use crate::app::loader::{DecodedImage, ImageInput, ImageJob, InputPrep, LoadReply};
use crate::app::settings::ImageSource;
use crate::array::Array;
use crate::data;
use crate::model::Network;

impl AdvlensApp {
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

    /// A bundled 28×28 test image, converted on this thread (it is tiny).
    pub(super) fn set_bundled(&mut self, i: usize) -> Result<(), String> {
        let set = self
            .bundled
            .as_ref()
            .ok_or("the bundled test images are not available")?;
        if i >= set.len() {
            return Err(format!("there are {} bundled images", set.len()));
        }
        let img = data::example_to_image(set.images.example(i), [1, 28, 28])
            .map_err(|e| e.to_string())?;
        let label = set.labels.get(i).copied();
        let p = InputPrep::of(&self.net);
        let x = data::to_array_with(&img, p.channels, p.size, p.eval_resize)
            .map_err(|e| e.to_string())?;
        let label = label.filter(|_| self.is_fashion_model());
        // Supersedes an image the loader is still decoding.
        self.pending_image = None;
        self.show_image(ImageSource::Bundled(i), Arc::new(img), x, label);
        Ok(())
    }

    /// Sends an image job to the loader; `verb` is what the status bar says meanwhile.
    pub(super) fn load_image(
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

    pub(super) fn show_image(
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
    pub(super) fn image_loaded(
        &mut self,
        id: u64,
        source: ImageSource,
        result: Result<DecodedImage, String>,
    ) {
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
    pub(super) fn model_loaded(
        &mut self,
        id: u64,
        path: PathBuf,
        result: Result<Arc<Network>, String>,
    ) {
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

    pub(super) fn is_fashion_model(&self) -> bool {
        self.net.input_shape() == [1, 28, 28] && self.net.num_classes() == 10
    }

    pub(super) fn use_network(&mut self, net: Arc<Network>, name: String) {
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
            (ImageSource::Photo(_), true, _) => self.set_image(&ImageSource::default()),
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
    pub(super) fn poll_loader(&mut self) {
        let Some(l) = &self.loader else { return };
        let (replies, stopped) = l.drain();
        if let Some(e) = stopped {
            self.errors.push(e.to_string());
            self.loader = None;
            self.pending_image = None;
            self.pending_model = None;
        }
        for r in replies {
            match r {
                LoadReply::Image { id, source, result } => self.image_loaded(id, source, result),
                LoadReply::Model { id, path, result } => self.model_loaded(id, path, result),
            }
        }
    }
}
