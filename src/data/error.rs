//! Why a data set cannot be opened. Each message names the file (and row) at fault and what to
//! change; an image that does not decode is never one of these but an entry of its batch's
//! [`Unreadable`](super::Unreadable) list.

use super::IdxError;
use crate::model::npz::NpzError;

/// Why `--data` cannot be opened as a labelled data set.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Nothing exists at the path given.
    #[error(
        "{spec} does not exist: pass an image folder (one sub-folder per class), a .csv/.tsv/.txt \
         list of `path,label` rows, an .npz with arrays x and y (or x.npy with y.npy beside it), \
         a Fashion-MNIST folder made by scripts/fetch-data.sh, or `bundled`"
    )]
    NotFound {
        /// What `--data` said.
        spec: String,
    },
    /// A file of a kind that is no data set.
    #[error(
        "{path}: advlens reads image folders, .csv/.tsv/.txt lists of `path,label`, and .npz \
         archives with arrays x and y{hint}"
    )]
    UnknownKind {
        /// The file.
        path: String,
        /// Advice for this kind of file, starting with `; `, or empty.
        hint: String,
    },
    /// A file or folder could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The Fashion-MNIST files are broken.
    #[error(transparent)]
    Fashion(#[from] IdxError),
    /// The images are not the model's input shape.
    #[error("{what} are {} but the model takes {}{hint}", shape_text(*.data), shape_text(*.model))]
    Shape {
        /// The data set.
        what: String,
        /// The images' `[C, H, W]`.
        data: [usize; 3],
        /// The model's `[C, H, W]`.
        model: [usize; 3],
        /// Advice, starting with `; `, or empty.
        hint: String,
    },
    /// The class file is broken.
    #[error("class file {path}: {reason}")]
    ClassFile {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// More classes than the model has.
    #[error("{what} has {found} classes but the model has {model}{hint}")]
    TooManyClasses {
        /// The class file or folder.
        what: String,
        /// Classes found.
        found: usize,
        /// The model's classes.
        model: usize,
        /// Advice, starting with `; `, or empty.
        hint: String,
    },
    /// An image folder's class folders are not all in the class file.
    #[error(
        "{dir}: {count} class folder(s) are not in the class file {classes}: {}{}",
        .examples.join(", "), if *.count > .examples.len() { ", ..." } else { "" }
    )]
    UnknownFolders {
        /// The image folder.
        dir: String,
        /// The class file.
        classes: String,
        /// A few of the folder names.
        examples: Vec<String>,
        /// How many there are.
        count: usize,
    },
    /// An image folder's class folders look like WordNet IDs but no class file maps them.
    #[error(
        "{dir}: the class folders are WordNet IDs ({first}, ...) but only {found} of the \
         model's {model} classes are there, so sorted order would not give the model's labels: \
         pass --classes FILE with the model's classes in order, one WordNet ID per line"
    )]
    UnmappedSynsets {
        /// The image folder.
        dir: String,
        /// The first folder name.
        first: String,
        /// Class folders found.
        found: usize,
        /// The model's classes.
        model: usize,
    },
    /// A folder that is no image folder.
    #[error(
        "{dir} has no class folders: an image folder holds one sub-folder per class \
         ({dir}/CLASS/IMAGE.jpg); for images in one folder, list them with their labels in a \
         .csv of `path,label` rows"
    )]
    NoClassFolders {
        /// The folder.
        dir: String,
    },
    /// The data set holds no examples.
    #[error("{what} holds no images{hint}")]
    Empty {
        /// The data set.
        what: String,
        /// Advice, starting with `; `, or empty.
        hint: String,
    },
    /// A row of a path list is broken.
    #[error("{path} line {line}: {reason}")]
    Row {
        /// The list.
        path: String,
        /// Its line, from 1.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// None of the first files of a path list exists.
    #[error(
        "{list}: none of the first {checked} files listed exists (the first is {first}); paths \
         are read relative to the list's folder {base}, or are absolute"
    )]
    Missing {
        /// The list.
        list: String,
        /// How many files were looked for.
        checked: usize,
        /// The first of them, as resolved.
        first: String,
        /// The folder relative paths start from.
        base: String,
    },
    /// A label names no class of the model.
    #[error("{place}: label {label} is out of range for the model's {classes} classes (0 to {})",
            .classes.saturating_sub(1))]
    LabelRange {
        /// The file and row, or the array element.
        place: String,
        /// The label.
        label: i128,
        /// The model's classes.
        classes: usize,
    },
    /// An `.npz` archive cannot be read.
    #[error("{path}: {source}")]
    Npz {
        /// The archive.
        path: String,
        /// Why.
        source: NpzError,
    },
    /// An `.npz` archive is readable but its arrays are not a labelled set.
    #[error("{path}: {reason}")]
    Arrays {
        /// The archive.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// `--classes` was given for a data set whose labels are fixed.
    #[error("{what} has its own labels; --classes applies to image folders and path lists only")]
    ClassesNotApplicable {
        /// The data set.
        what: String,
    },
}

/// `3×224×224` for `[3, 224, 224]`.
fn shape_text([c, h, w]: [usize; 3]) -> String {
    format!("{c}×{h}×{w}")
}
