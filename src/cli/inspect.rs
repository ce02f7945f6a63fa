//! `advlens inspect MODEL`.

use anyhow::Context as _;
use clap::Args;

/// Arguments of `inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A safetensors model file, or `builtin:default`.
    pub model: String,
}

/// Prints the architecture, taps and parameter count.
pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    let net = crate::zoo::load_model(&args.model)
        .with_context(|| format!("cannot open model {}", args.model))?;
    print!("{}", describe(&net));
    Ok(())
}

/// The text `inspect` prints.
pub fn describe(net: &crate::model::Network) -> String {
    use std::fmt::Write as _;
    let g = &net.graph;
    let mut s = String::new();
    let _ = writeln!(s, "architecture: {}", net.config.summary());
    let _ = writeln!(
        s,
        "input: {:?} in [0, 1]; classes: {}; parameters: {}",
        g.input_shape,
        g.num_classes,
        g.param_count()
    );
    for (k, v) in &net.metadata {
        let _ = writeln!(s, "metadata {k}: {v}");
    }
    let _ = writeln!(s, "\nnodes ({}):", g.nodes.len());
    for node in &g.nodes {
        let _ = writeln!(
            s,
            "  {:<36} {:<16} {:?}",
            node.name,
            node.op.kind(),
            node.shape
        );
    }
    let _ = writeln!(s, "\ntaps ({}):", g.taps.len());
    for t in &g.taps {
        let _ = writeln!(
            s,
            "  {:<36} {:?} {:?}",
            t.name, t.kind, g.nodes[t.node].shape
        );
    }
    let _ = writeln!(s, "\ndenoise blocks ({}):", g.denoise_blocks.len());
    for d in &g.denoise_blocks {
        let _ = writeln!(s, "  {:<36} {}", d.name, d.variant);
    }
    s
}
