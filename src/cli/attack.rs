//! `advlens attack`: attack images and write the adversarial image, the perturbation and a JSON
//! record per run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

use crate::analysis::perturbation_image;
use crate::array::Array;
use crate::attack::{AttackConfig, AttackKind, Norm, TargetMode};
use crate::attack::{DiagnoseOptions, RunRecord, diagnose, image_records};
use crate::cancel::Cancel;
use crate::data;
use crate::defense::Defense;
use crate::engine::{Engine as _, ForwardOptions};

/// Arguments of `attack`.
#[derive(Args, Debug)]
pub struct AttackArgs {
    /// Engine: auto (a hardware GPU when there is one, else the cpu), cpu, or gpu (any adapter,
    /// software renderers such as lavapipe included).
    #[arg(long, default_value = "auto")]
    pub engine: crate::engine::EngineChoice,
    /// A model file (advlens safetensors, Xie et al.'s .npz, a PyTorch .pth) or `builtin:NAME`.
    #[arg(long, default_value = crate::zoo::DEFAULT_MODEL)]
    pub model: String,
    /// Image files (repeat for several); `builtin:default` is the first bundled Fashion-MNIST test
    /// image, `fashion:N` bundled test image N (0–499), `photo:coffee` (or chelsea, astronaut,
    /// rocket) a shipped photo, and a `.npy` file an exact preprocessed input in [0, 1].
    #[arg(long = "image", required = true)]
    pub images: Vec<String>,
    /// True labels, one per image (default: the data set's labels for bundled images, otherwise
    /// the clean predictions).
    #[arg(long = "label")]
    pub labels: Vec<usize>,
    /// The attack.
    #[command(flatten)]
    pub spec: AttackSpecArgs,
    /// Output folder.
    #[arg(long, default_value = "advlens-out")]
    pub out: PathBuf,
}

/// The attack flags shared by `attack` and `maps`.
#[derive(Args, Debug, Clone)]
pub struct AttackSpecArgs {
    /// The attack.
    #[arg(long, value_enum, ignore_case = true, default_value_t = AttackKind::Pgd)]
    pub attack: AttackKind,
    /// Budget in pixel units: 0.03, 8/255, or 8 (for L∞ a number above 1 means 8-bit levels,
    /// /255; L2 budgets are read as written, e.g. 1.5).
    #[arg(long, default_value = "8/255", value_parser = super::budget_arg)]
    pub eps: super::BudgetArg,
    /// Step size in pixel units (default: the attack's rule), read like `--eps`.
    #[arg(long, value_parser = super::budget_arg)]
    pub alpha: Option<super::BudgetArg>,
    /// Iterations (default: the attack's rule).
    #[arg(long)]
    pub steps: Option<usize>,
    /// PGD restarts.
    #[arg(long, default_value_t = 1)]
    pub restarts: usize,
    /// The threat model's norm (C&W is always l2).
    #[arg(long, value_enum, ignore_case = true, default_value_t = Norm::Linf)]
    pub norm: Norm,
    /// none, random, least-likely, or a class number.
    #[arg(long, default_value = "none", value_parser = super::values::parse_target)]
    pub target: TargetMode,
    /// Seed for every random choice.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Attack with the denoise blocks bypassed.
    #[arg(long)]
    pub bypass_denoise: bool,
    /// APGD, Square and AutoAttack settings.
    #[command(flatten)]
    pub tuning: super::tuning::TuningArgs,
    /// The input-transformation defence and how gradients pass it.
    #[command(flatten)]
    pub defense: super::defense_args::DefenseArgs,
}

impl AttackSpecArgs {
    /// The attack configuration and the defence these arguments describe (the defence seeded
    /// with `--seed`, `--eot` split between the two by [`crate::attack::route_eot`]), checked;
    /// a note goes to stderr when `--eot` can change nothing.
    pub fn config(&self) -> anyhow::Result<(AttackConfig, Defense)> {
        let kind = self.attack;
        let norm = if kind == AttackKind::Cw {
            Norm::L2
        } else {
            self.norm
        };
        let mut cfg = AttackConfig {
            kind,
            norm,
            eps: self.eps.value(norm),
            alpha: self.alpha.as_ref().map(|a| a.value(norm)),
            steps: self.steps,
            restarts: self.restarts,
            target: self.target.clone(),
            seed: self.seed,
            bypass_denoise: self.bypass_denoise,
            ..AttackConfig::default()
        };
        self.tuning.apply(&mut cfg);
        let defense = self.defense.apply(&mut cfg);
        cfg.validate()?;
        if let Some(note) = super::defense_args::eot_note(&cfg, &defense, self.defense.eot) {
            eprintln!("{note}");
        }
        Ok((cfg, defense))
    }
}

/// Loads the images; also returns their true labels when every image is a bundled Fashion-MNIST
/// test image.
pub fn load_images(
    specs: &[String],
    shape: [usize; 3],
    eval_resize: Option<usize>,
) -> anyhow::Result<(Array, Option<Vec<usize>>)> {
    let [c, h, w] = shape;
    let mut parts = Vec::with_capacity(specs.len());
    let mut labels = Some(Vec::with_capacity(specs.len()));
    for s in specs {
        let index = if s == crate::zoo::DEFAULT_IMAGE {
            Some(0)
        } else if let Some(n) = s.strip_prefix("fashion:") {
            Some(
                n.parse::<usize>()
                    .map_err(|_| anyhow::anyhow!("{s:?}: expected fashion:N with N a number"))?,
            )
        } else {
            None
        };
        let bundled = match index {
            Some(i) => {
                let set = crate::data::bundled_test_images().map_err(anyhow::Error::msg)?;
                if i >= set.len() {
                    anyhow::bail!("{s:?}: there are {} bundled images", set.len());
                }
                Some((set.images.select(&[i]), set.labels[i]))
            }
            None => None,
        };
        match (&mut labels, &bundled) {
            (Some(l), Some((_, y))) => l.push(*y),
            _ => labels = None,
        }
        let a = if let Some((img, _)) = bundled {
            if img.shape()[1..] != shape[..] {
                anyhow::bail!("bundled images are 1×28×28; this model takes {c}×{h}×{w}");
            }
            img
        } else if let Some(name) = s.strip_prefix("photo:") {
            let img = crate::zoo::photo(name).map_err(anyhow::Error::msg)?;
            data::to_array_with(&img, c, [h, w], eval_resize)?
        } else if s.to_ascii_lowercase().ends_with(".npy") {
            exact_input(Path::new(s), shape)?
        } else {
            data::load_for_model(Path::new(s), c, [h, w], eval_resize)?
        };
        parts.push(a);
    }
    Ok((Array::concat(&parts)?, labels))
}

/// An already-preprocessed input: a float `.npy` array in [0, 1], RGB, `[C, H, W]` or
/// `[1, C, H, W]` in the model's input shape, used as it is (no resizing), so a result can be
/// compared bit for bit with another framework.
fn exact_input(path: &Path, shape: [usize; 3]) -> anyhow::Result<Array> {
    let a = crate::model::npz::read_npy(path, 1 << 30)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let s = a.shape().to_vec();
    let fits = s == shape[..] || (s.len() == 4 && s[0] == 1 && s[1..] == shape[..]);
    if !fits {
        anyhow::bail!(
            "{}: array of shape {s:?}; this model takes [{}, {}, {}] (or [1, {}, {}, {}])",
            path.display(),
            shape[0],
            shape[1],
            shape[2],
            shape[0],
            shape[1],
            shape[2]
        );
    }
    if !a
        .data()
        .iter()
        .all(|v| v.is_finite() && (0.0..=1.0).contains(v))
    {
        anyhow::bail!("{}: values must be finite and in [0, 1]", path.display());
    }
    Ok(Array::new(
        vec![1, shape[0], shape[1], shape[2]],
        a.into_data(),
    )?)
}

fn stem(source: &str, i: usize) -> String {
    let base = Path::new(source)
        .file_stem()
        .map(|s| {
            s.to_string_lossy()
                .replace(|c: char| !c.is_alphanumeric(), "_")
        })
        .unwrap_or_else(|| "image".into());
    format!("{i:03}_{base}")
}

/// Runs the attack and writes its outputs.
pub fn run(args: &AttackArgs) -> anyhow::Result<()> {
    let (cfg, defense) = args.spec.config()?;
    let net = Arc::new(
        crate::zoo::load_model(&args.model)
            .with_context(|| format!("cannot open model {}", args.model))?,
    );
    let shape = net.input_shape();
    let (x, bundled_labels) = load_images(&args.images, shape, net.eval_resize())?;
    if !args.labels.is_empty() && args.labels.len() != args.images.len() {
        anyhow::bail!(
            "{} --label values for {} --image values",
            args.labels.len(),
            args.images.len()
        );
    }
    let engine = super::open_engine(net.clone(), args.engine)?;
    let mut engine = super::defense_args::defend(engine, defense, &args.model)?;
    if let Some(line) = super::defense_args::defense_line(&engine) {
        println!("{line}");
    }
    let labels = if args.labels.is_empty() {
        bundled_labels.as_deref()
    } else {
        Some(args.labels.as_slice())
    };
    let result = crate::attack::run(&mut engine, &x, labels, &cfg, &Cancel::new())?;
    let diagnostics = diagnose(&mut engine, &x, &result, &cfg, &DiagnoseOptions::default())?;
    for d in &diagnostics {
        eprintln!("{}", d.warning_line());
    }
    let opts = ForwardOptions {
        bypass_denoise: cfg.bypass_denoise,
        ..ForwardOptions::default()
    };
    let clean = engine.forward(&x, &opts)?;
    let adv = engine.forward(&result.x_adv, &opts)?;
    let mut images = image_records(&net, &x, &args.images, &result, &clean.logits, &adv.logits);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    for (i, rec) in images.iter_mut().enumerate() {
        let name = stem(&args.images[i], i);
        let adv_path = args.out.join(format!("{name}_adv.png"));
        let img = data::example_to_image(result.x_adv.example(i), shape)?;
        data::save_png(&img, &adv_path)?;
        let delta: Vec<f32> = result
            .x_adv
            .example(i)
            .iter()
            .zip(x.example(i))
            .map(|(a, b)| a - b)
            .collect();
        let scale = crate::attack::linf(&delta).max(1e-12);
        let (pimg, _) = perturbation_image(&delta, shape, scale);
        let p_path = args.out.join(format!("{name}_perturbation.png"));
        data::save_png(&image::DynamicImage::ImageRgb8(pimg), &p_path)?;
        rec.files = vec![adv_path.display().to_string(), p_path.display().to_string()];
        println!(
            "{}: {} ({:.1}%) → {} ({:.1}%), L∞ {:.4}, L2 {:.4}{}",
            rec.source,
            rec.clean_top5[0].name,
            100.0 * rec.clean_top5[0].prob,
            rec.adversarial_top5[0].name,
            100.0 * rec.adversarial_top5[0].prob,
            rec.linf,
            rec.l2,
            if rec.success { ", success" } else { "" }
        );
    }
    let record = RunRecord {
        advlens_version: env!("CARGO_PKG_VERSION").into(),
        engine: engine.describe(),
        model: args.model.clone(),
        architecture: net.config.summary(),
        attack_name: cfg.kind.name().into(),
        stages: result.stages.clone(),
        attack: cfg,
        defense: engine.active_defense().cloned(),
        images,
        diagnostics,
    };
    let json = serde_json::to_vec_pretty(&record)?;
    let rec_path = args.out.join("record.json");
    crate::io::write_atomic(&rec_path, &json)
        .with_context(|| format!("cannot write {}", rec_path.display()))?;
    println!("wrote {}", rec_path.display());
    Ok(())
}
