//! `advlens maps`: the paper's figure from the command line. Attacks one image and writes the
//! feature maps of a tap, clean / adversarial / |Δ| rows; for a denoise block its input, its
//! operation's output `op(x)` and its output side by side, on one shared colour scale (or the |Δ|
//! rows on their own): the chosen channels, or the channels the attack changed most. Prints the
//! relative change ‖ΔA‖/‖A‖ of every column's tap.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

use super::attack::{AttackSpecArgs, load_images};
use crate::analysis::save_feature_maps;
use crate::analysis::{AnalyseJob, analyse};
use crate::analysis::{channel_deltas, column_taps, feature_grid, sorted_by_delta};
use crate::cancel::Cancel;

/// Arguments of `maps`.
#[derive(Args, Debug)]
pub struct MapsArgs {
    /// Engine: auto, cpu or gpu.
    #[arg(long, default_value = "auto")]
    pub engine: crate::engine::EngineChoice,
    /// A model file (advlens safetensors, Xie et al.'s .npz, a PyTorch .pth) or `builtin:NAME`.
    #[arg(long, default_value = crate::zoo::DEFAULT_MODEL)]
    pub model: String,
    /// The image: a file, `fashion:N`, `builtin:default`, or an exact input `.npy`.
    #[arg(long, default_value = crate::zoo::DEFAULT_IMAGE)]
    pub image: String,
    /// The true label (default: the bundled label, otherwise the clean prediction).
    #[arg(long)]
    pub label: Option<usize>,
    /// The attack.
    #[command(flatten)]
    pub spec: AttackSpecArgs,
    /// Tap to show: a denoise block (`group1_denoise`, `group0/block1/non_local`) or one of its
    /// taps (`/before`, `/op`, `/after`) shows the block's input, operation output and output
    /// side by side; any other tap name shows that tap alone. Default: the first denoise block,
    /// or the last stage.
    #[arg(long)]
    pub tap: Option<String>,
    /// Channels to draw (repeat for several; default: the `--top` channels with the largest
    /// change).
    #[arg(long = "channel")]
    pub channels: Vec<usize>,
    /// How many of the most-changed channels to draw when no `--channel` is given.
    #[arg(long, default_value_t = 1)]
    pub top: usize,
    /// Draw the |Δ| rows on their own colour scale (0 to their largest value, with a second
    /// colour bar) instead of the scale the clean and adversarial maps share.
    #[arg(long)]
    pub delta_own_scale: bool,
    /// Output PNG; with several channels, `_cN` is added before the extension.
    #[arg(long, default_value = "maps.png")]
    pub out: PathBuf,
}

fn output_path(out: &Path, channel: usize, several: bool) -> PathBuf {
    if !several {
        return out.to_path_buf();
    }
    let stem = out
        .file_stem()
        .map_or("maps".into(), |s| s.to_string_lossy().into_owned());
    let ext = out
        .extension()
        .map_or("png".into(), |e| e.to_string_lossy().into_owned());
    out.with_file_name(format!("{stem}_c{channel}.{ext}"))
}

/// Runs the attack and writes the maps.
pub fn run(args: &MapsArgs) -> anyhow::Result<()> {
    let (cfg, defense) = args.spec.config()?;
    let net = Arc::new(
        crate::zoo::load_model(&args.model)
            .with_context(|| format!("cannot open model {}", args.model))?,
    );
    let (x, labels) = load_images(
        std::slice::from_ref(&args.image),
        net.input_shape(),
        net.eval_resize(),
    )?;
    let label = args
        .label
        .or_else(|| labels.and_then(|l| l.first().copied()));
    let engine = super::open_engine(net.clone(), args.engine)?;
    let mut engine = super::defense_args::defend(engine, defense, &args.model)?;
    if let Some(line) = super::defense_args::defense_line(&engine) {
        println!("{line}");
    }
    let job = AnalyseJob {
        id: 0,
        net: net.clone(),
        model_name: args.model.clone(),
        x: Arc::new(x),
        label,
        source: args.image.clone(),
        cfg,
        engine: args.engine,
        defense: engine.defense().clone(),
        cancel: Cancel::new(),
    };
    let snap = analyse(&mut engine, &job)?;
    let graph = &net.graph;
    let tap = match &args.tap {
        Some(t) if graph.tap(t).is_some() => t.clone(),
        Some(t) if graph.tap(&format!("{t}/before")).is_some() => format!("{t}/before"),
        Some(t) => {
            let names: Vec<&str> = graph.taps.iter().map(|t| t.name.as_str()).collect();
            anyhow::bail!("the model has no tap {t:?}; taps: {}", names.join(", "))
        }
        None => graph
            .denoise_blocks
            .first()
            .map(|b| format!("{}/before", b.name))
            .or_else(|| {
                graph
                    .taps
                    .iter()
                    .rev()
                    .find(|t| t.kind == crate::model::TapKind::Stage)
                    .map(|t| t.name.clone())
            })
            .context("the model has no spatial taps")?,
    };
    let pair = snap
        .tap(&tap)
        .context("the tap is missing from the results")?;
    let channels = if args.channels.is_empty() {
        let order = sorted_by_delta(&channel_deltas(pair));
        order.into_iter().take(args.top.max(1)).collect()
    } else {
        args.channels.clone()
    };
    let rec = &snap.record.images[0];
    println!(
        "{}: {} ({:.1}%) → {} ({:.1}%), L∞ {:.4}",
        args.image,
        rec.clean_top5[0].name,
        100.0 * rec.clean_top5[0].prob,
        rec.adversarial_top5[0].name,
        100.0 * rec.adversarial_top5[0].prob,
        rec.linf
    );
    let noise: Vec<String> = column_taps(&snap, &tap)
        .iter()
        .map(|(title, p)| {
            let name = if title.is_empty() {
                p.name.as_str()
            } else {
                title
            };
            format!("{name} {:.4}", p.amplification)
        })
        .collect();
    println!("‖ΔA‖/‖A‖: {}", noise.join(" → "));
    let several = channels.len() > 1;
    for c in channels {
        let grid = feature_grid(&snap, &tap, c)
            .with_context(|| format!("tap {tap} has no channel {c} (or is not a spatial map)"))?
            .with_delta_own_scale(args.delta_own_scale);
        let path = output_path(&args.out, c, several);
        save_feature_maps(&grid, &path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {} (tap {tap}, channel {c})", path.display());
    }
    Ok(())
}
