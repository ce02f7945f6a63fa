//! A data set of image files with their labels (an image folder, a list of paths): only the
//! list is held; images are decoded when a batch is loaded, in parallel, through the model's
//! own preprocessing. A file that is missing, too large or does not decode becomes an
//! [`Unreadable`] entry of its batch.

use std::path::PathBuf;

use rayon::prelude::*;

use super::{Batch, Examples, Unreadable};
use crate::array::Array;

/// Image files and their labels, decoded on demand.
pub struct ImageFiles {
    files: Vec<PathBuf>,
    labels: Vec<usize>,
    eval_resize: Option<usize>,
    description: String,
}

impl ImageFiles {
    /// `files[i]` has label `labels[i]` (the two are cut to the shorter); images are resized as
    /// the model is evaluated (`eval_resize`, see [`to_array_with`](super::to_array_with)).
    /// `description` is what [`Examples::describe`] says.
    pub fn new(
        mut files: Vec<PathBuf>,
        mut labels: Vec<usize>,
        eval_resize: Option<usize>,
        description: impl Into<String>,
    ) -> Self {
        let n = files.len().min(labels.len());
        files.truncate(n);
        labels.truncate(n);
        Self {
            files,
            labels,
            eval_resize,
            description: description.into(),
        }
    }

    /// The files, in data-set order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The labels, in data-set order.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// Decodes example `i` into a `[1, C, H, W]` array.
    fn decode(&self, i: usize, [c, h, w]: [usize; 3]) -> Result<Array, String> {
        let path = self
            .files
            .get(i)
            .ok_or_else(|| format!("no example {i} in {} examples", self.files.len()))?;
        let img = super::load_image(path).map_err(|e| e.to_string())?;
        super::to_array_with(&img, c, [h, w], self.eval_resize).map_err(|e| e.to_string())
    }
}

impl Examples for ImageFiles {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn path(&self, i: usize) -> Option<String> {
        self.files.get(i).map(|p| p.display().to_string())
    }

    fn load(&self, indices: &[usize], shape: [usize; 3]) -> Batch {
        let decoded: Vec<Result<Array, String>> =
            indices.par_iter().map(|&i| self.decode(i, shape)).collect();
        let mut batch = Batch {
            indices: Vec::with_capacity(indices.len()),
            paths: Vec::with_capacity(indices.len()),
            images: super::empty_batch(shape),
            labels: Vec::with_capacity(indices.len()),
            unreadable: Vec::new(),
        };
        let [c, h, w] = shape;
        let mut data = Vec::with_capacity(indices.len() * c * h * w);
        for (&index, result) in indices.iter().zip(decoded) {
            let path = self.path(index);
            match result {
                Ok(image) => {
                    data.extend_from_slice(image.data());
                    batch.indices.push(index);
                    batch.paths.push(path);
                    batch.labels.push(self.labels[index]);
                }
                Err(error) => batch.unreadable.push(Unreadable {
                    index,
                    path: path.unwrap_or_else(|| self.description.clone()),
                    error,
                }),
            }
        }
        // Every decoded image is [1, c, h, w], so the values fill the shape; were one not to,
        // the batch's images would be unreadable rather than mislabelled.
        match Array::new(vec![batch.indices.len(), c, h, w], data) {
            Ok(images) => batch.images = images,
            Err(e) => {
                for (index, path) in batch.indices.drain(..).zip(batch.paths.drain(..)) {
                    batch.unreadable.push(Unreadable {
                        index,
                        path: path.unwrap_or_default(),
                        error: e.to_string(),
                    });
                }
                batch.labels.clear();
            }
        }
        batch
    }
}
