//! `advlens inspect MODEL`.

use anyhow::Context as _;
use clap::Args;

/// Arguments of `inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A model file (advlens safetensors, Xie et al.'s .npz, a PyTorch .pth) or `builtin:NAME`.
    pub model: String,
}

/// Prints the architecture, taps and parameter count.
pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    let net = crate::zoo::load_model(&args.model)
        .with_context(|| format!("cannot open model {}", args.model))?;
    print!("{}", net.describe());
    Ok(())
}
