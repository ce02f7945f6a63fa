//! `advlens bench --data SPEC`: where the time of an evaluation on the user's data goes. Times
//! decoding alone (every image through the model's preprocessing, batches decoded in parallel),
//! the engine alone on one decoded batch (forward + input gradient, and PGD-10), and the two
//! together as `eval` runs them, batches decoded by [`Prefetch`] on its own thread while the
//! engine works, with how long the engine waited for them. `--make-jpegs DIR` writes a folder of
//! JPEGs made from the shipped photos to time it on.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::timing::median_ms;
use crate::array::Array;
use crate::attack::{AttackConfig, AttackKind};
use crate::cancel::Cancel;
use crate::data::{DataOptions, Examples, Prefetch, open_data};
use crate::engine::cpu::CpuEngine;
use crate::engine::gpu::{AdapterPolicy, GpuContext, GpuEngine};
use crate::engine::{Engine, ForwardOptions, Loss};

/// Batches [`Prefetch`] decodes ahead of the engine.
const AHEAD: usize = 2;

/// What `bench --data` times.
#[derive(Clone, Debug)]
pub struct DataBench {
    /// The data set, as `--data` takes it.
    pub data: String,
    /// The model, as `--model` takes it.
    pub model: String,
    /// Images per batch.
    pub batch: usize,
    /// Only the first `n` images.
    pub n: Option<usize>,
    /// Timed repetitions of the engine-only rows.
    pub reps: usize,
    /// Also time the gpu engine.
    pub gpu: bool,
    /// Time PGD-10 as well as forward + input gradient.
    pub attack: bool,
}

/// The engine's work on one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Work {
    /// One forward pass and the input gradient of the cross-entropy (FGSM's cost).
    Gradient,
    /// A 10-step PGD attack at ε = 8/255.
    Pgd10,
}

impl Work {
    fn name(self) -> &'static str {
        match self {
            Self::Gradient => "forward + input gradient",
            Self::Pgd10 => "PGD-10",
        }
    }

    fn run(self, engine: &mut dyn Engine, x: &Array, labels: &[usize]) -> anyhow::Result<()> {
        match self {
            Self::Gradient => {
                let loss = Loss::CrossEntropy {
                    classes: labels.to_vec(),
                };
                engine.input_grad(x, &loss, &ForwardOptions::default())?;
            }
            Self::Pgd10 => {
                let cfg = AttackConfig {
                    kind: AttackKind::Pgd,
                    eps: 8.0 / 255.0,
                    steps: Some(10),
                    ..AttackConfig::default()
                };
                crate::attack::run(engine, x, Some(labels), &cfg, &Cancel::new())?;
            }
        }
        Ok(())
    }
}

/// Prints the table.
pub fn data_table(b: &DataBench) -> anyhow::Result<()> {
    let net = Arc::new(
        crate::zoo::load_model(&b.model).with_context(|| format!("cannot open {}", b.model))?,
    );
    let mut opts = DataOptions::for_model(&net);
    opts.n = b.n;
    let set = open_data(&b.data, &opts)?;
    let shape = net.input_shape();
    let batch = b.batch.max(1);
    println!("model: {} ({})", b.model, net.config.summary());
    println!("data: {}", set.describe());
    println!(
        "batch {batch}, {} decoding threads, {AHEAD} batches decoded ahead\n",
        rayon::current_num_threads()
    );
    println!("| stage | engine | images | s | images/s | engine waited for images |");
    println!("|---|---|---|---|---|---|");
    let (first, decode_s, decoded, unreadable) = decode_all(&*set, batch, shape)?;
    println!(
        "| decode only | – | {decoded} ({unreadable} unreadable) | {decode_s:.2} | {:.1} | – |",
        decoded as f64 / decode_s
    );
    let mut engines: Vec<Box<dyn Engine>> = vec![Box::new(CpuEngine::new(net.clone())?)];
    if b.gpu {
        let ctx = GpuContext::headless(AdapterPolicy::AllowSoftware)?;
        engines.push(Box::new(GpuEngine::new(net.clone(), ctx)?));
    }
    let mut work = vec![Work::Gradient];
    if b.attack {
        work.push(Work::Pgd10);
    }
    for engine in &mut engines {
        let engine = engine.as_mut();
        let name = engine.describe();
        for &w in &work {
            let reps = if w == Work::Pgd10 {
                b.reps.div_ceil(3)
            } else {
                b.reps
            };
            let ms = median_ms(reps, || w.run(engine, &first.images, &first.labels))?;
            println!(
                "| {} only | {name} | {} × {} | {:.2} per batch | {:.1} | – |",
                w.name(),
                first.len(),
                reps,
                ms / 1e3,
                first.len() as f64 * 1e3 / ms
            );
            let (s, images, waited) = pipelined(engine, &set, batch, shape, w)?;
            println!(
                "| decode + {} (Prefetch) | {name} | {images} | {s:.2} | {:.1} | {:.2} s ({:.0} %) |",
                w.name(),
                images as f64 / s,
                waited.as_secs_f64(),
                100.0 * waited.as_secs_f64() / s
            );
        }
    }
    Ok(())
}

/// Decodes every example in batches of `batch`, on the calling thread (each batch in parallel):
/// the first batch that decoded, the seconds, the images decoded and those unreadable.
fn decode_all(
    set: &dyn Examples,
    batch: usize,
    shape: [usize; 3],
) -> anyhow::Result<(crate::data::Batch, f64, usize, usize)> {
    let order: Vec<usize> = (0..set.len()).collect();
    let started = Instant::now();
    let mut first = None;
    let (mut decoded, mut unreadable) = (0, 0);
    for chunk in order.chunks(batch) {
        let b = set.load(chunk, shape);
        decoded += b.len();
        unreadable += b.unreadable.len();
        if first.is_none() && !b.is_empty() {
            first = Some(b);
        }
    }
    let s = started.elapsed().as_secs_f64();
    let first = first.context("no image of the data set decodes")?;
    Ok((first, s, decoded, unreadable))
}

/// One pass over the data set as `eval` makes it: batches from [`Prefetch`], `work` on each.
/// Returns the seconds, the images worked on and how long the engine waited for batches.
fn pipelined(
    engine: &mut dyn Engine,
    set: &Arc<dyn Examples>,
    batch: usize,
    shape: [usize; 3],
    work: Work,
) -> anyhow::Result<(f64, usize, Duration)> {
    let started = Instant::now();
    let order: Vec<usize> = (0..set.len()).collect();
    let mut batches = Prefetch::start(set.clone(), order, batch, AHEAD, shape)?;
    let mut waited = Duration::ZERO;
    let mut images = 0;
    loop {
        let asked = Instant::now();
        let Some(b) = batches.next() else { break };
        waited += asked.elapsed();
        if b.is_empty() {
            continue;
        }
        work.run(engine, &b.images, &b.labels)?;
        images += b.len();
    }
    Ok((started.elapsed().as_secs_f64(), images, waited))
}

/// Writes `n` JPEGs (quality 90) into `dir`, one sub-folder per shipped photo (an image folder
/// of four classes): crops of 70–100 % of each side, scaled to a shorter side of 300 to 450
/// pixels (about ImageNet's validation images), the same for the same `n`.
pub fn make_jpegs(dir: &Path, n: usize) -> anyhow::Result<()> {
    let photos: Vec<(&str, image::DynamicImage)> = crate::zoo::PHOTOS
        .iter()
        .map(|(name, _)| Ok((*name, crate::zoo::photo(name)?)))
        .collect::<anyhow::Result<_>>()?;
    for (name, _) in &photos {
        std::fs::create_dir_all(dir.join(name))
            .with_context(|| format!("cannot create {}", dir.join(name).display()))?;
    }
    let started = Instant::now();
    let bytes: u64 = (0..n)
        .into_par_iter()
        .map(|i| -> anyhow::Result<u64> {
            let (name, photo) = &photos[i % photos.len()];
            let mut rng = ChaCha8Rng::seed_from_u64(i as u64);
            let (w, h) = (photo.width(), photo.height());
            let cw = (w as f32 * rng.random_range(0.7..=1.0)) as u32;
            let ch = (h as f32 * rng.random_range(0.7..=1.0)) as u32;
            let x0 = rng.random_range(0..=w - cw);
            let y0 = rng.random_range(0..=h - ch);
            let short = rng.random_range(300..=450) as f32;
            let scale = short / cw.min(ch).max(1) as f32;
            let img = photo.crop_imm(x0, y0, cw, ch).resize_exact(
                (cw as f32 * scale).round() as u32,
                (ch as f32 * scale).round() as u32,
                FilterType::Triangle,
            );
            let mut out = Vec::new();
            img.to_rgb8()
                .write_with_encoder(JpegEncoder::new_with_quality(&mut out, 90))?;
            let path = dir.join(name).join(format!("{i:05}.jpg"));
            crate::io::write_atomic(&path, &out)
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(out.len() as u64)
        })
        .sum::<anyhow::Result<u64>>()?;
    println!(
        "wrote {n} JPEGs ({:.1} MiB) in {}/{{{}}} in {:.1} s",
        bytes as f64 / (1 << 20) as f64,
        dir.display(),
        photos.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(","),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
