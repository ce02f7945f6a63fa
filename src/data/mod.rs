//! Getting pixels in and out: image decoding with size limits, conversion to a model's input,
//! PNG encoding of images and perturbations, and labelled data sets read by index
//! ([`open_data`]: Fashion-MNIST, image folders, lists of paths, arrays).

mod arrays;
mod classes;
mod error;
mod idx;
mod image_files;
mod image_folder;
mod image_io;
mod imagenet;
mod open;
mod path_list;
mod source;

pub use arrays::{labelled_from_arrays, open_arrays, open_npy_pair};
pub use classes::{ClassList, MAX_CLASS_FILE_BYTES};
pub use error::DataError;
pub use idx::{
    FASHION_CLASSES, FormatError, Idx, IdxError, Labelled, LabelledError, Split,
    bundled_test_images, gunzip, load_fashion_mnist, parse as parse_idx,
};
pub use image_files::ImageFiles;
pub use image_folder::{IMAGE_EXTENSIONS, is_image_file, open_image_folder};
pub use image_io::{
    DecodeError, ImageError, MAX_ALLOC, MAX_RESIZE_PIXELS, MAX_SIDE, decode as decode_image,
    example_to_image, load as load_image, load_for_model, save_png, to_array_with,
};
pub use imagenet::{COUNT as IMAGENET_CLASSES, names as imagenet_names};
pub use open::{DataOptions, open_data};
pub use path_list::{MAX_LIST_BYTES, delimiter as list_delimiter, open_path_list, parse_path_list};
pub use source::{Batch, Examples, InMemory, Prefetch, Unreadable, empty as empty_batch};
