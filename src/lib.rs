//! advlens: see adversarial attacks flow through image classifiers, before and after
//! feature-denoising blocks (Xie et al., CVPR 2019).
//!
//! Data flow: an image in [0, 1] (NCHW f32) and a [`model::Network`] go into an
//! [`engine::Engine`], which returns logits, named activations (taps) and input gradients; the
//! [`attack`]s loop over the engine; [`analysis`] summarises what changed; the CLI and the app
//! present it.

pub mod analysis;
pub mod app;
pub mod array;
pub mod attack;
pub mod cancel;
pub mod cli;
pub mod data;
pub mod defense;
pub mod engine;
pub mod io;
pub mod model;
pub mod train;
pub mod zoo;
