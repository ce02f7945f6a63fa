//! `advlens train`: trains a resnet-denoise model on Fashion-MNIST (clean, FGSM mix, PGD
//! adversarial training or adversarial logit pairing), with a progress bar, a checkpoint written
//! atomically every few batches and every epoch, `--resume`, and Ctrl-C that checkpoints and
//! stops. The final model carries its training record in the safetensors metadata.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

use super::new_model::ArchArgs;
use crate::analysis::evaluate;
use crate::attack::{AttackConfig, AttackKind};
use crate::cancel::Cancel;
use crate::data::{self, Labelled, Split};
use crate::model::Network;
use crate::train::{
    AdvSettings, Hooks, Outcome, Progress, Schedule, TrainConfig, TrainError, TrainMode,
    TrainState, Trainer, load_checkpoint, save_checkpoint, train,
};

/// Metadata key of the training record in a trained model.
pub const META_TRAINING: &str = "advlens.training";

/// Arguments of `train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Where to write the trained model (safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Checkpoint file (default: the output path with `.ckpt.safetensors`).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Continue from the checkpoint (the settings must be the same).
    #[arg(long)]
    pub resume: bool,
    /// Start from this model's weights and architecture instead of a fresh network.
    #[arg(long)]
    pub init: Option<String>,
    /// The architecture of a fresh network.
    #[command(flatten)]
    pub arch: ArchArgs,
    /// How a fresh network starts: `pytorch` (residual branches' last BN γ = 1, the classifier
    /// uniform in ±1/√fan_in; trains faster on small networks) or `tensorpack` (γ = 0 and a
    /// N(0, 0.01²) classifier, as Xie et al.'s ImageNet models).
    /// Denoise blocks start as the identity either way.
    #[arg(long, default_value = "pytorch")]
    pub fresh_init: String,
    /// Objective: clean, fgsm (Goodfellow et al.'s clean/FGSM mix), pgd (Madry et al.) or alp
    /// (Kannan et al.'s adversarial logit pairing).
    #[arg(long, default_value = "pgd")]
    pub mode: String,
    /// L∞ budget for adversarial training, in pixel units (`0.1`, `8/255`).
    #[arg(long, default_value = "0.1", value_parser = super::budget)]
    pub eps: f32,
    /// PGD steps when crafting training examples.
    #[arg(long, default_value_t = 7)]
    pub attack_steps: usize,
    /// PGD step size (default 2.5·ε/steps).
    #[arg(long, value_parser = super::budget)]
    pub step_size: Option<f32>,
    /// Weight of the clean loss in the FGSM mix.
    #[arg(long, default_value_t = 0.5)]
    pub fgsm_alpha: f32,
    /// Weight λ of the logit-pairing loss (ALP).
    #[arg(long, default_value_t = 0.5)]
    pub alp_lambda: f32,
    /// Epochs.
    #[arg(long, default_value_t = 2)]
    pub epochs: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Base learning rate.
    #[arg(long, default_value_t = 0.1)]
    pub lr: f32,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
    /// Weight decay.
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f32,
    /// Learning-rate schedule: constant, cosine or step.
    #[arg(long, default_value = "cosine")]
    pub schedule: String,
    /// Linear learning-rate warm-up, in epochs.
    #[arg(long, default_value_t = 0.1)]
    pub warmup: f32,
    /// Random shifts of up to this many pixels (0 turns them off).
    #[arg(long, default_value_t = 2)]
    pub crop_pad: usize,
    /// Turn off random horizontal flips.
    #[arg(long)]
    pub no_flip: bool,
    /// Seed of every random choice (initialisation, order, augmentation, attack starts).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Training data: a folder made by scripts/fetch-data.sh.
    #[arg(long, default_value = "data/fashion-mnist")]
    pub data: PathBuf,
    /// Train on the first N training images only.
    #[arg(long)]
    pub limit: Option<usize>,
    /// After each epoch, report clean and PGD-10 accuracy on the first N test images (0: none).
    #[arg(long, default_value_t = 500)]
    pub val: usize,
    /// Write a checkpoint every N batches (and at the end of every epoch).
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: usize,
}

impl TrainArgs {
    /// The run's settings.
    pub fn config(&self) -> anyhow::Result<TrainConfig> {
        let mode = match self.mode.as_str() {
            "clean" => TrainMode::Clean,
            "fgsm" | "fgsm-mix" => TrainMode::FgsmMix {
                alpha: self.fgsm_alpha,
            },
            "pgd" => TrainMode::Pgd,
            "alp" => TrainMode::Alp {
                lambda: self.alp_lambda,
            },
            m => anyhow::bail!("unknown mode {m:?}; expected clean, fgsm, pgd or alp"),
        };
        let steps = self.attack_steps;
        let cfg = TrainConfig {
            mode,
            adv: AdvSettings {
                eps: self.eps,
                step_size: self
                    .step_size
                    .unwrap_or(crate::attack::madry_step_size(self.eps, steps)),
                steps,
            },
            epochs: self.epochs,
            batch: self.batch,
            lr: self.lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            schedule: self
                .schedule
                .parse::<Schedule>()
                .map_err(anyhow::Error::msg)?,
            warmup_epochs: self.warmup,
            crop_pad: self.crop_pad,
            flip: !self.no_flip,
            seed: self.seed,
            limit: self.limit,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn checkpoint_path(&self) -> PathBuf {
        self.checkpoint
            .clone()
            .unwrap_or_else(|| self.out.with_extension("ckpt.safetensors"))
    }
}

struct CliHooks {
    path: PathBuf,
    bar: indicatif::ProgressBar,
    val: Option<Labelled>,
    eps: f32,
    last_val: Option<(f64, f64)>,
}

impl Hooks for CliHooks {
    fn progress(&mut self, p: &Progress) {
        self.bar.set_length(p.batches as u64);
        self.bar.set_position(p.batch as u64);
        let msg = format!(
            "epoch {}  loss {:.4}  acc {:.1}%  {:.0} img/s  lr {:.4}",
            p.epoch + 1,
            p.loss,
            100.0 * p.accuracy,
            p.images_per_s,
            p.lr
        );
        // Without a terminal the bar is hidden: log a line every 25 batches instead.
        if self.bar.is_hidden() && (p.batch.is_multiple_of(25) || p.batch == p.batches) {
            println!("batch {}/{}  {msg}", p.batch, p.batches);
        }
        self.bar.set_message(msg);
    }

    fn checkpoint(&mut self, trainer: &Trainer, state: &TrainState) -> Result<(), TrainError> {
        save_checkpoint(&self.path, &trainer.network()?, &trainer.velocity()?, state)?;
        Ok(())
    }

    fn epoch_end(
        &mut self,
        trainer: &Trainer,
        epoch: usize,
        p: &Progress,
    ) -> Result<(), TrainError> {
        let mut line = format!(
            "epoch {}: train loss {:.4}, train accuracy {:.2}%",
            epoch + 1,
            p.loss,
            100.0 * p.accuracy
        );
        if let Some(val) = &self.val {
            let (clean, robust) = validate(trainer.network()?, val, self.eps)?;
            line += &format!(
                "; first {} test images: clean {clean:.2}%, PGD-10 at ε={} {robust:.2}%",
                val.len(),
                self.eps
            );
            self.last_val = Some((clean, robust));
        }
        // `suspend` prints whether or not the bar is drawn (it is hidden without a terminal).
        self.bar.suspend(|| println!("{line}"));
        Ok(())
    }
}

/// Clean and PGD-10 accuracy (percent) of `net` on `data`.
fn validate(net: Network, data: &Labelled, eps: f32) -> Result<(f64, f64), TrainError> {
    let mut engine = crate::engine::cpu::CpuEngine::new(Arc::new(net))?;
    let attack = AttackConfig {
        kind: AttackKind::Pgd,
        eps,
        steps: Some(10),
        ..AttackConfig::default()
    };
    let report = evaluate(
        &mut engine,
        data,
        &[attack],
        100,
        false,
        &Cancel::new(),
        &mut |_, _| {},
    )
    .map_err(|e| TrainError::Config(e.to_string()))?;
    let robust = report.rows.first().map_or(0.0, |r| r.accuracy());
    Ok((report.clean_accuracy(), robust))
}

fn load_split(dir: &Path, split: Split) -> anyhow::Result<Labelled> {
    if !dir.exists() {
        anyhow::bail!(
            "{} does not exist: run scripts/fetch-data.sh to fetch Fashion-MNIST",
            dir.display()
        );
    }
    Ok(data::load_fashion_mnist(dir, split)?)
}

/// Runs the training.
pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    let cfg = args.config()?;
    let cfg_json = serde_json::to_value(&cfg)?;
    let ckpt_path = args.checkpoint_path();
    let data = load_split(&args.data, Split::Train)?;
    let val = match args.val {
        0 => None,
        n => {
            let test = load_split(&args.data, Split::Test)?;
            Some(test.select(&(0..n.min(test.len())).collect::<Vec<_>>()))
        }
    };
    let (mut trainer, mut state) = if args.resume && ckpt_path.exists() {
        let ck = load_checkpoint(&ckpt_path)
            .with_context(|| format!("cannot resume from {}", ckpt_path.display()))?;
        if ck.state.config != cfg_json {
            anyhow::bail!(
                "{} was made with other settings ({}); resume with the same settings, or delete it to start over",
                ckpt_path.display(),
                ck.state.config
            );
        }
        println!(
            "resuming from {}: epoch {}, batch {}",
            ckpt_path.display(),
            ck.state.epoch + 1,
            ck.state.batch
        );
        let mut t = Trainer::new(ck.net, cfg.sgd())?;
        t.set_velocity(ck.velocity)?;
        (t, ck.state)
    } else {
        if ckpt_path.exists() && !args.resume {
            anyhow::bail!(
                "a checkpoint already exists at {}: pass --resume to continue it, or delete it to start over",
                ckpt_path.display()
            );
        }
        let mut net = match &args.init {
            Some(spec) => {
                crate::zoo::load_model(spec).with_context(|| format!("cannot open model {spec}"))?
            }
            None => {
                let mut net = Network::random(args.arch.config()?, args.seed)?;
                match args.fresh_init.as_str() {
                    "pytorch" => {
                        crate::model::pytorch_style(&net.graph, &mut net.weights, args.seed)
                    }
                    "tensorpack" => {}
                    other => {
                        anyhow::bail!("--fresh-init {other:?}: expected pytorch or tensorpack")
                    }
                }
                net
            }
        };
        net.class_names = data::FASHION_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect();
        net.metadata.remove("advlens.note");
        let state = TrainState {
            epoch: 0,
            batch: 0,
            global_step: 0,
            config: cfg_json.clone(),
            seconds: 0.0,
        };
        (Trainer::new(net, cfg.sgd())?, state)
    };
    let start = trainer.network()?;
    if start.input_shape() != [1, 28, 28] {
        anyhow::bail!("Fashion-MNIST needs a network for 1×28×28 images");
    }
    println!(
        "training {} ({} mode, {} epochs of {} batches of {})",
        start.config.summary(),
        cfg.mode.id(),
        cfg.epochs,
        cfg.limit.unwrap_or(data.len()).min(data.len()) / cfg.batch,
        cfg.batch
    );
    let cancel = Cancel::new();
    let on_ctrl_c = cancel.clone();
    let _ = ctrlc::set_handler(move || on_ctrl_c.cancel());
    let bar = indicatif::ProgressBar::new(1);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} batches  {msg}  eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut hooks = CliHooks {
        path: ckpt_path.clone(),
        bar,
        val,
        eps: if cfg.mode == TrainMode::Clean {
            0.1
        } else {
            cfg.adv.eps
        },
        last_val: None,
    };
    let outcome = train(
        &mut trainer,
        &data,
        &cfg,
        &mut state,
        args.checkpoint_every,
        &cancel,
        &mut hooks,
    )?;
    hooks.bar.finish_and_clear();
    if outcome == Outcome::Cancelled {
        println!(
            "stopped at epoch {}, batch {}; the checkpoint is {}: run the same command with --resume to continue",
            state.epoch + 1,
            state.batch,
            ckpt_path.display()
        );
        return Ok(());
    }
    let mut net = trainer.network()?;
    let command: Vec<String> = std::env::args().collect();
    let record = serde_json::json!({
        "config": cfg,
        "architecture": net.config,
        "epochs_done": state.epoch,
        "steps": state.global_step,
        "train_seconds": state.seconds,
        "validation": hooks.last_val.map(|(c, r)| serde_json::json!({
            "images": args.val,
            "clean_accuracy": c,
            "pgd10_accuracy": r,
            "eps": hooks.eps,
        })),
        "command": command.join(" "),
        "advlens_version": env!("CARGO_PKG_VERSION"),
    });
    net.metadata
        .insert(META_TRAINING.into(), serde_json::to_string(&record)?);
    crate::model::weights::save(&net, &args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    // The model holds everything the checkpoint did that is worth keeping.
    let _ = std::fs::remove_file(&ckpt_path);
    println!(
        "wrote {} after {:.0} s of training",
        args.out.display(),
        state.seconds
    );
    Ok(())
}
