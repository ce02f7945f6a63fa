//! The loader: a named thread that reads files so the UI never waits on them. It decodes images
//! (a 12000×12000 PNG takes seconds), converts them to a model's input with the model's own
//! preprocessing, and reads model files (hundreds of MB). It is a [`Task`]: requests carry
//! increasing ids; when several are queued only the newest image and the newest model request run
//! (the app drops replies to requests it has since superseded).

use std::path::PathBuf;
use std::sync::Arc;

use image::DynamicImage;

use super::settings::ImageSource;
use super::task::{Replier, Stopped, Task, Waker};
use crate::array::Array;
use crate::data;
use crate::model::Network;

/// Name of the loader thread.
pub const LOADER_THREAD: &str = "advlens-loader";

/// Where the pixels of an image job come from.
#[derive(Clone)]
pub enum ImageInput {
    /// Decode this file.
    File(PathBuf),
    /// Decode the shipped photo of this name.
    Photo(String),
    /// Already decoded: only convert it (to another model's input).
    Decoded(Arc<DynamicImage>),
}

/// The model's input an image is converted to (see `data::to_array_with`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputPrep {
    /// Channels.
    pub channels: usize,
    /// `[H, W]`.
    pub size: [usize; 2],
    /// The model's evaluation resize (shorter side, before the centre crop), if any.
    pub eval_resize: Option<usize>,
}

impl InputPrep {
    /// The preprocessing of `net`.
    pub fn of(net: &Network) -> Self {
        let [c, h, w] = net.input_shape();
        Self {
            channels: c,
            size: [h, w],
            eval_resize: net.eval_resize(),
        }
    }

    /// The shape of the converted image, `[1, C, H, W]`.
    pub fn shape(&self) -> [usize; 4] {
        let [h, w] = self.size;
        [1, self.channels, h, w]
    }
}

/// Decode (if needed) and convert one image.
#[derive(Clone)]
pub struct ImageJob {
    /// Increasing id; the reply carries it.
    pub id: u64,
    /// What the app will record as the image's source.
    pub source: ImageSource,
    /// The pixels.
    pub input: ImageInput,
    /// The model input to convert to.
    pub prep: InputPrep,
}

/// A decoded image and the model's view of it.
pub struct DecodedImage {
    /// The image as decoded.
    pub image: Arc<DynamicImage>,
    /// The model's input, `[1, C, H, W]` in [0, 1].
    pub x: Array,
    /// The preprocessing `x` was made with.
    pub prep: InputPrep,
}

/// What the loader sends back.
pub enum LoadReply {
    /// An image job finished.
    Image {
        /// The job's id.
        id: u64,
        /// The job's source.
        source: ImageSource,
        /// The image, or why it did not decode.
        result: Result<DecodedImage, String>,
    },
    /// A model file was read.
    Model {
        /// The request's id.
        id: u64,
        /// The file.
        path: PathBuf,
        /// The network, or why it did not load.
        result: Result<Arc<Network>, String>,
    },
}

enum Request {
    Image(Box<ImageJob>),
    Model { id: u64, path: PathBuf },
}

/// The handle the app keeps: send requests, poll replies. Dropping it closes the request channel;
/// the thread finishes the file it is reading and ends. It is not joined, so closing the window
/// never waits for a large image or a slow disk.
pub struct Loader {
    task: Task<Request, LoadReply>,
}

impl Loader {
    /// Starts the loader thread. `wake` is called after every reply.
    pub fn start(wake: Waker) -> std::io::Result<Self> {
        let task = Task::spawn(LOADER_THREAD, wake, handle)?;
        Ok(Self { task })
    }

    /// Queues an image job.
    pub fn image(&self, job: ImageJob) {
        self.task.send(Request::Image(Box::new(job)));
    }

    /// Queues reading a model file; the reply carries `id`.
    pub fn model(&self, id: u64, path: PathBuf) {
        self.task.send(Request::Model { id, path });
    }

    /// Every reply waiting, and whether the thread has stopped.
    pub fn drain(&self) -> (Vec<LoadReply>, Option<Stopped>) {
        self.task.drain()
    }
}

/// Runs the newest model request and the newest image job of `batch`.
fn handle(batch: Vec<Request>, reply: &Replier<LoadReply>) -> bool {
    let mut image = None;
    let mut model = None;
    for req in batch {
        match req {
            Request::Image(job) => image = Some(job),
            Request::Model { id, path } => model = Some((id, path)),
        }
    }
    if let Some((id, path)) = model {
        let result = crate::zoo::load_model_path(&path)
            .map(Arc::new)
            .map_err(|e| format!("cannot open model {}: {e}", path.display()));
        if !reply.send(LoadReply::Model { id, path, result }) {
            return false;
        }
    }
    if let Some(job) = image {
        let result = run_image(&job);
        return reply.send(LoadReply::Image {
            id: job.id,
            source: job.source,
            result,
        });
    }
    true
}

/// Decodes (when needed) and converts one image.
pub fn run_image(job: &ImageJob) -> Result<DecodedImage, String> {
    let image = match &job.input {
        ImageInput::File(path) => Arc::new(data::load_image(path).map_err(|e| e.to_string())?),
        ImageInput::Photo(name) => Arc::new(crate::zoo::photo(name).map_err(|e| e.to_string())?),
        ImageInput::Decoded(img) => img.clone(),
    };
    let p = job.prep;
    let x = data::to_array_with(&image, p.channels, p.size, p.eval_resize).map_err(|e| {
        format!(
            "cannot convert {} to the model's input: {e}",
            job.source.describe()
        )
    })?;
    Ok(DecodedImage {
        image,
        x,
        prep: job.prep,
    })
}
