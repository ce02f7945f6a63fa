//! `advlens new-model`: a freshly initialised resnet-denoise network, saved with its config.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::model::{ArchConfig, DenoiseVariant, Network, Placement, ResnetDenoiseConfig};
use crate::model::{BlockKind, StemKind};

/// Arguments of `new-model`.
#[derive(Args, Debug)]
pub struct NewModelArgs {
    /// Output safetensors file.
    #[arg(long)]
    pub out: PathBuf,
    /// The architecture.
    #[command(flatten)]
    pub arch: ArchArgs,
    /// Initialisation seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Instead, write one of Xie et al.'s released layouts with random weights as a tensorpack
    /// `.npz` (r152, r152-denoise, x101-denoise-all, or r50/r101 variants): a stand-in for the
    /// real files in tests and benchmarks.
    #[arg(long)]
    pub tensorpack: Option<String>,
}

/// The resnet-denoise architecture, as `new-model` and `train` take it.
#[derive(Args, Debug, Clone)]
pub struct ArchArgs {
    /// Denoise operation: nonlocal_gaussian, gaussian_no_embed, dot_product, mean, median,
    /// bilateral.
    #[arg(long, default_value = "nonlocal_gaussian")]
    pub denoise: String,
    /// Placement: none, after-stage, after-every-block.
    #[arg(long, default_value = "after-stage")]
    pub placement: String,
    /// Stages (0-based, comma separated) that get denoise blocks (default: all).
    #[arg(long, value_delimiter = ',')]
    pub denoise_stages: Option<Vec<usize>>,
    /// Stage widths, comma separated.
    #[arg(long, default_value = "16,32,64", value_delimiter = ',')]
    pub widths: Vec<usize>,
    /// Residual blocks per stage, comma separated.
    #[arg(long, default_value = "1,1,1", value_delimiter = ',')]
    pub blocks: Vec<usize>,
    /// Input channels.
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Input side length.
    #[arg(long, default_value_t = 28)]
    pub size: usize,
    /// Classes.
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    /// Residual block: basic or bottleneck.
    #[arg(long, default_value = "basic")]
    pub block: String,
    /// Stem: small (3×3 conv) or imagenet (7×7/2 conv and 3×3/2 max pool).
    #[arg(long, default_value = "small")]
    pub stem: String,
}

/// Parses a placement name.
pub fn parse_placement(s: &str) -> anyhow::Result<Placement> {
    match s.replace('_', "-").as_str() {
        "none" => Ok(Placement::None),
        "after-stage" | "stage" => Ok(Placement::AfterStage),
        "after-every-block" | "all" | "every-block" => Ok(Placement::AfterEveryBlock),
        _ => anyhow::bail!(
            "unknown placement {s:?}; expected none, after-stage or after-every-block"
        ),
    }
}

impl ArchArgs {
    /// The architecture these arguments describe.
    pub fn config(&self) -> anyhow::Result<ArchConfig> {
        let args = self;
        let denoise: DenoiseVariant = args.denoise.parse()?;
        let cfg = ResnetDenoiseConfig {
            in_channels: args.channels,
            image_size: [args.size, args.size],
            num_classes: args.classes,
            stem_width: args.widths.first().copied().unwrap_or(16),
            widths: args.widths.clone(),
            blocks: args.blocks.clone(),
            denoise,
            placement: parse_placement(&args.placement)?,
            denoise_stages: args.denoise_stages.clone(),
            mean: vec![0.5; args.channels],
            std: vec![0.5; args.channels],
            block: match args.block.as_str() {
                "basic" => BlockKind::Basic,
                "bottleneck" => BlockKind::Bottleneck,
                b => anyhow::bail!("unknown block {b:?}; expected basic or bottleneck"),
            },
            stem: match args.stem.as_str() {
                "small" => StemKind::Small,
                "imagenet" => StemKind::Imagenet,
                s => anyhow::bail!("unknown stem {s:?}; expected small or imagenet"),
            },
            cardinality: 1,
            bottleneck_factor: 1,
            channel_order: vec![],
            eval_resize: None,
        };
        let config = ArchConfig::ResnetDenoise(cfg);
        config.build()?;
        Ok(config)
    }
}

/// Builds and saves the model.
pub fn run(args: &NewModelArgs) -> anyhow::Result<()> {
    if let Some(name) = &args.tensorpack {
        let cfg = crate::model::tensorpack::released(name).with_context(|| {
            format!("unknown layout {name:?}; expected r152, r152-denoise, x101-denoise-all or their r50/r101 variants")
        })?;
        let net = Network::random(crate::model::ArchConfig::ResnetDenoise(cfg), args.seed)?;
        let arrays = net
            .weights
            .iter()
            .map(|(k, a)| Ok((k.clone(), crate::model::tensorpack::to_tensorpack(k, a)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let bytes = crate::model::npz::write_npz(&arrays, false);
        crate::io::write_atomic(&args.out, &bytes)
            .with_context(|| format!("cannot write {}", args.out.display()))?;
        println!(
            "wrote {} ({} arrays, {} parameters)",
            args.out.display(),
            arrays.len(),
            net.graph.param_count()
        );
        return Ok(());
    }
    let net = Network::random(args.arch.config()?, args.seed)?;
    crate::model::weights::save(&net, &args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!(
        "wrote {} ({} parameters)",
        args.out.display(),
        net.graph.param_count()
    );
    Ok(())
}
