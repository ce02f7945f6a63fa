//! The input-transformation defence on the command line: `--defense`, `--gradient` and `--eot`
//! for `attack` and `maps`, their parsers (shared with `eval`'s lists), and an engine opened
//! behind a defence with errors that name the flag.

use anyhow::Context as _;
use clap::Args;

use crate::attack::{AttackConfig, route_eot};
use crate::defense::{Chain, Defense, GradientMode};
use crate::engine::{Defended, Engine};

/// `--defense`, `--gradient` and `--eot` of one attack.
#[derive(Args, Debug, Clone)]
pub struct DefenseArgs {
    /// Input-transformation defence in front of the model, applied in order to images in
    /// [0, 1]: `jpeg[:Q]` (quality, default 75), `bits[:B]` (bit depth, 5), `median[:K]` (K×K
    /// median, 3), `resize-pad[:S]` (random resize and pad to S, by default the paper's
    /// 331/299 of the side), comma separated (`jpeg:75,bits:5`), or `none`.
    #[arg(long, value_name = "CHAIN", default_value = "none", value_parser = parse_chain)]
    pub defense: Chain,
    /// How gradients pass the defence: `bpda` (identity through JPEG, bit depth and median) or
    /// `naive` (zero through JPEG and bit depth, median's own derivative: what an evaluation
    /// that ignores the defence computes). Resize and pad pass their exact gradient either way.
    #[arg(long, value_name = "MODE", default_value = "bpda", value_parser = parse_gradient)]
    pub gradient: GradientMode,
    /// Expectation over transformation: each gradient step averages over K draws of a random
    /// defence (APGD and AutoAttack: K gradient calls per step, each a fresh draw; the other
    /// attacks: K draws inside each gradient call). autoattack-rand uses 20 when this is 1.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub eot: usize,
}

impl DefenseArgs {
    /// The defence these flags describe, seeded with `cfg.seed`, with `--eot` split between
    /// `cfg` and the defence by [`route_eot`].
    pub fn apply(&self, cfg: &mut AttackConfig) -> Defense {
        let mut defense = Defense {
            chain: self.defense.clone(),
            gradient: self.gradient,
            eot: 1,
            seed: cfg.seed,
        };
        route_eot(cfg, &mut defense, self.eot);
        defense
    }
}

/// Reads `--defense`: a chain of transforms, or `none`.
pub fn parse_chain(s: &str) -> Result<Chain, String> {
    s.parse::<Chain>().map_err(|e| e.to_string())
}

/// Reads `--gradient`: `naive` or `bpda`.
pub fn parse_gradient(s: &str) -> Result<GradientMode, String> {
    s.parse()
}

/// Checks that `defense` fits the model's `[C, H, W]` input, naming the flag and the model.
pub fn check_defense(defense: &Defense, input: [usize; 3], model: &str) -> anyhow::Result<()> {
    let [c, h, w] = input;
    defense.check(input).with_context(|| {
        format!(
            "--defense {} on {model} ({c}×{h}×{w} inputs)",
            defense.chain
        )
    })
}

/// `engine` behind `defense` (an empty chain passes everything through), checked first.
pub fn defend(engine: Box<dyn Engine>, defense: Defense, model: &str) -> anyhow::Result<Defended> {
    check_defense(&defense, engine.network().input_shape(), model)?;
    Defended::new(engine, defense).with_context(|| format!("cannot defend {model}"))
}

/// A note when `--eot K` (K > 1) can change nothing: the defence draws no randomness and the
/// attack does not average its own gradient calls.
pub fn eot_note(cfg: &AttackConfig, defense: &Defense, k: usize) -> Option<String> {
    let useless = k > 1 && cfg.apgd.eot == 1 && !defense.chain.is_random();
    useless.then(|| {
        format!(
            "note: --eot {k} has no effect here: {} draws no randomness and {} takes one \
             gradient per step",
            if defense.is_none() {
                "the model without a defence".to_string()
            } else {
                format!("the defence {}", defense.chain)
            },
            cfg.kind
        )
    })
}

/// The line printed before a run behind a defence, e.g. `defence: jpeg:75 (naive)`.
pub fn defense_line(engine: &dyn Engine) -> Option<String> {
    engine
        .active_defense()
        .map(|d| format!("defence: {}", d.describe()))
}
