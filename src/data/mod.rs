//! Getting pixels in and out: image decoding with size limits, conversion to a model's input,
//! and PNG encoding of images and perturbations.

mod idx;
mod image_io;
mod imagenet;
mod source;

pub use idx::{
    FASHION_CLASSES, FormatError, Idx, IdxError, Labelled, LabelledError, Split,
    bundled_test_images, gunzip, load_fashion_mnist, parse as parse_idx,
};
pub use image_io::{
    DecodeError, ImageError, MAX_ALLOC, MAX_RESIZE_PIXELS, MAX_SIDE, decode as decode_image,
    example_to_image, load as load_image, load_for_model, save_png, to_array_with,
};
pub use imagenet::{COUNT as IMAGENET_CLASSES, names as imagenet_names};
pub use source::{Batch, Examples, InMemory, Prefetch, Unreadable, empty as empty_batch};
