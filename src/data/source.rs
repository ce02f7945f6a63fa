//! A labelled data set read in batches by index, and the thread that decodes batches ahead of
//! the engine. Every data set `eval` reads (Fashion-MNIST, the bundled images, an image folder, a
//! CSV of paths, `.npz`/`.npy` arrays) is an [`Examples`]; an example that cannot be read is
//! listed in its batch's [`Batch::unreadable`], never an error of the whole run.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use serde::{Deserialize, Serialize};

use super::Labelled;
use crate::array::Array;

/// A labelled data set whose examples are read on demand, by index.
pub trait Examples: Send + Sync {
    /// Number of examples.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// One line saying what the data set is, for reports (`Fashion-MNIST test set (10000
    /// images)`, `image folder val/ (50000 images, 1000 classes)`).
    fn describe(&self) -> String;
    /// Where example `i` comes from (its file), when it is a file of its own.
    fn path(&self, i: usize) -> Option<String>;
    /// The examples at `indices`, each of shape `shape` (`[C, H, W]`, already through the
    /// model's preprocessing). Examples that cannot be read are left out of the images and
    /// listed in [`Batch::unreadable`].
    fn load(&self, indices: &[usize], shape: [usize; 3]) -> Batch;
}

/// An example that could not be read, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreadable {
    /// Its index in the data set.
    pub index: usize,
    /// Its file, or a description of where it is.
    pub path: String,
    /// The error, in words.
    pub error: String,
}

/// A batch of examples as read: the ones that decoded, in order, and the ones that did not.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Data-set indices of the examples in `images`, in order.
    pub indices: Vec<usize>,
    /// Their files, where they have one.
    pub paths: Vec<Option<String>>,
    /// The images `[n, C, H, W]` in [0, 1] (`n` may be 0 when nothing decoded).
    pub images: Array,
    /// Their labels.
    pub labels: Vec<usize>,
    /// Examples asked for that could not be read.
    pub unreadable: Vec<Unreadable>,
}

impl Batch {
    /// Number of examples that decoded.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether none decoded.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// The examples as a [`Labelled`] set.
    pub fn labelled(&self) -> Labelled {
        Labelled {
            images: self.images.clone(),
            labels: self.labels.clone(),
        }
    }
}

/// An in-memory labelled set (Fashion-MNIST, the bundled images) read by index.
pub struct InMemory {
    set: Labelled,
    description: String,
}

impl InMemory {
    /// Wraps `set`, described as `description`.
    pub fn new(set: Labelled, description: impl Into<String>) -> Self {
        Self {
            set,
            description: description.into(),
        }
    }
}

impl Examples for InMemory {
    fn len(&self) -> usize {
        self.set.len()
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn path(&self, _: usize) -> Option<String> {
        None
    }

    fn load(&self, indices: &[usize], shape: [usize; 3]) -> Batch {
        let (ok, bad): (Vec<usize>, Vec<usize>) =
            indices.iter().partition(|&&i| i < self.set.len());
        let mut unreadable: Vec<Unreadable> = bad
            .into_iter()
            .map(|index| Unreadable {
                index,
                path: self.description.clone(),
                error: format!("no example {index} in {} examples", self.set.len()),
            })
            .collect();
        let part = self.set.select(&ok);
        let (indices, images, labels) = if part.images.shape()[1..] == shape[..] {
            (ok, part.images, part.labels)
        } else {
            unreadable.extend(ok.iter().map(|&index| Unreadable {
                index,
                path: self.description.clone(),
                error: format!(
                    "the images are {:?}, the model takes {shape:?}",
                    &part.images.shape()[1..]
                ),
            }));
            (vec![], empty(shape), vec![])
        };
        Batch {
            paths: vec![None; indices.len()],
            indices,
            images,
            labels,
            unreadable,
        }
    }
}

/// A batch of no images of shape `shape`.
pub fn empty(shape: [usize; 3]) -> Array {
    Array::zeros(vec![0, shape[0], shape[1], shape[2]])
}

/// Batches of a data set, decoded on a thread of their own while the engine works on the
/// previous ones. Dropping it stops the thread after the batch it is decoding.
pub struct Prefetch {
    rx: Receiver<Batch>,
}

impl Prefetch {
    /// Reads `order` (data-set indices) in batches of `batch`, up to `ahead` batches ahead of
    /// the consumer, on a thread named `advlens-decode`.
    pub fn start(
        examples: Arc<dyn Examples>,
        order: Vec<usize>,
        batch: usize,
        ahead: usize,
        shape: [usize; 3],
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(ahead.max(1));
        std::thread::Builder::new()
            .name("advlens-decode".into())
            .spawn(move || decode_ahead(&*examples, &order, batch.max(1), shape, &tx))?;
        Ok(Self { rx })
    }
}

fn decode_ahead(
    examples: &dyn Examples,
    order: &[usize],
    batch: usize,
    shape: [usize; 3],
    tx: &SyncSender<Batch>,
) {
    for chunk in order.chunks(batch) {
        if tx.send(examples.load(chunk, shape)).is_err() {
            return; // the consumer is gone
        }
    }
}

impl Iterator for Prefetch {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        self.rx.recv().ok()
    }
}
