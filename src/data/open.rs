//! `--data SPEC` → a labelled data set: `bundled`, a Fashion-MNIST IDX folder, an image folder,
//! a `.csv`/`.tsv`/`.txt` list of `path,label` rows, or an `.npz` archive of arrays `x` and `y`.
//! Everything that can be checked before the run is checked here (shapes, labels, classes), so
//! a run fails at once with a message saying what to fix, not after an hour.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{
    ClassList, DataError, Examples, InMemory, Labelled, Split, bundled_test_images,
    load_fashion_mnist, open_arrays, open_image_folder, open_npy_pair, open_path_list,
};
use crate::model::Network;

/// What [`open_data`] needs to know about the model and the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataOptions {
    /// The model's input `[C, H, W]`: images are converted to it (image files) or must have it
    /// (arrays, Fashion-MNIST).
    pub input: [usize; 3],
    /// The model's evaluation resize (shorter side before the centre crop), for image files.
    pub eval_resize: Option<usize>,
    /// The model's number of classes: every label must be below it.
    pub classes: usize,
    /// `--classes FILE`: the class keys (image folders' folder names) in label order.
    pub classes_file: Option<PathBuf>,
    /// Only the first `n` examples.
    pub n: Option<usize>,
}

impl DataOptions {
    /// The options for `net`'s input and classes, with no class file and every example.
    pub fn for_model(net: &Network) -> Self {
        Self {
            input: net.input_shape(),
            eval_resize: net.eval_resize(),
            classes: net.num_classes(),
            classes_file: None,
            n: None,
        }
    }
}

/// The Fashion-MNIST test images of a folder made by `scripts/fetch-data.sh`.
const FASHION_TEST_IMAGES: &str = "t10k-images-idx3-ubyte.gz";

/// Opens the data set `spec` for a model and run described by `opts`. Folders and lists hold
/// only their file names: images are decoded as batches are loaded.
pub fn open_data(spec: &str, opts: &DataOptions) -> Result<Arc<dyn Examples>, DataError> {
    // Read only where labels come from it: for other sets, saying --classes does not apply
    // helps more than an error about the file.
    let classes = || -> Result<Option<(ClassList, &Path)>, DataError> {
        opts.classes_file
            .as_deref()
            .map(|file| Ok((read_classes(file, opts.classes)?, file)))
            .transpose()
    };
    let fixed_labels = |what: &str| match &opts.classes_file {
        Some(_) => Err(DataError::ClassesNotApplicable { what: what.into() }),
        None => Ok(()),
    };
    if spec == "bundled" {
        fixed_labels("the bundled Fashion-MNIST set")?;
        let set = bundled_test_images()?;
        return in_memory(set, "bundled Fashion-MNIST test images", opts);
    }
    let path = Path::new(spec);
    if !path.exists() {
        return Err(DataError::NotFound { spec: spec.into() });
    }
    if path.is_dir() {
        if path.join(FASHION_TEST_IMAGES).exists() {
            fixed_labels("a Fashion-MNIST folder")?;
            let set = load_fashion_mnist(path, Split::Test)?;
            return in_memory(set, &format!("Fashion-MNIST test set {spec}"), opts);
        }
        let classes = classes()?;
        let files = open_image_folder(
            path,
            classes.as_ref().map(|(c, p)| (c, *p)),
            opts.classes,
            opts.eval_resize,
            opts.n,
        )?;
        return Ok(Arc::new(files));
    }
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "csv" | "tsv" | "txt" => {
            let classes = classes()?;
            let files = open_path_list(
                path,
                classes.as_ref().map(|(c, _)| c),
                opts.classes,
                opts.eval_resize,
                opts.n,
            )?;
            Ok(Arc::new(files))
        }
        "npz" => {
            fixed_labels(spec)?;
            let set = open_arrays(path, opts.input, opts.classes)?;
            in_memory(set, &format!("arrays x, y of {spec}"), opts)
        }
        "npy" => {
            fixed_labels(spec)?;
            let set = open_npy_pair(path, opts.input, opts.classes)?;
            in_memory(set, &format!("arrays {spec} and its labels"), opts)
        }
        _ => Err(DataError::UnknownKind {
            path: spec.into(),
            hint: unknown_kind_hint(path, &ext),
        }),
    }
}

/// Reads a class file, checking it lists no more classes than the model has.
fn read_classes(file: &Path, model_classes: usize) -> Result<ClassList, DataError> {
    let list = ClassList::read(file)?;
    if list.len() > model_classes {
        return Err(DataError::TooManyClasses {
            what: format!("class file {}", file.display()),
            found: list.len(),
            model: model_classes,
            hint: "; its lines are the model's classes in label order".into(),
        });
    }
    Ok(list)
}

/// An in-memory set as [`Examples`]: its first `opts.n`, checked against the model.
fn in_memory(
    set: Labelled,
    what: &str,
    opts: &DataOptions,
) -> Result<Arc<dyn Examples>, DataError> {
    let shape = set.images.shape();
    let data = [
        shape.get(1).copied().unwrap_or(0),
        shape.get(2).copied().unwrap_or(0),
        shape.get(3).copied().unwrap_or(0),
    ];
    if data != opts.input {
        return Err(DataError::Shape {
            what: format!("the images of {what}"),
            data,
            model: opts.input,
            hint: String::new(),
        });
    }
    if let Some((i, &label)) = set
        .labels
        .iter()
        .enumerate()
        .find(|&(_, &l)| l >= opts.classes)
    {
        return Err(DataError::LabelRange {
            place: format!("{what}, example {i}"),
            label: label as i128,
            classes: opts.classes,
        });
    }
    let set = match opts.n {
        Some(n) if n < set.len() => set.select(&(0..n).collect::<Vec<_>>()),
        _ => set,
    };
    if set.is_empty() {
        return Err(DataError::Empty {
            what: what.into(),
            hint: String::new(),
        });
    }
    let description = format!("{what} ({} images)", set.len());
    Ok(Arc::new(InMemory::new(set, description)))
}

/// Advice for a file that is no data set, by its extension.
fn unknown_kind_hint(path: &Path, ext: &str) -> String {
    if ext == "gz" {
        format!("; for Fashion-MNIST, pass the folder holding {FASHION_TEST_IMAGES}")
    } else if super::is_image_file(path) {
        "; to classify or attack one image, use `advlens attack --image FILE`".into()
    } else {
        String::new()
    }
}
