//! Getting pixels in and out: image decoding with size limits, conversion to a model's input,
//! and PNG encoding of images and perturbations.

pub mod idx;
pub mod image_io;
pub mod imagenet;
