//! The settings of the long attacks (APGD, Square, AutoAttack) shared by `attack`, `eval` and
//! `maps` (their EOT draws are `--eot`, with the defence flags).

use clap::Args;

use crate::attack::AttackConfig;

/// Flags for APGD, Square and AutoAttack; the defaults are AutoAttack's.
#[derive(Args, Debug, Clone)]
pub struct TuningArgs {
    /// Square: iterations after the initialisation, one forward pass each (AutoAttack: 5000).
    #[arg(long, default_value_t = 5000)]
    pub queries: usize,
    /// Square: the fraction of the image the first windows cover (AutoAttack: 0.8).
    #[arg(long, default_value_t = 0.8)]
    pub p_init: f32,
    /// APGD-T: how many runner-up classes to target in turn (AutoAttack: 9).
    #[arg(long, default_value_t = 9)]
    pub apgd_targets: usize,
}

impl TuningArgs {
    /// Writes these settings into `cfg`.
    pub fn apply(&self, cfg: &mut AttackConfig) {
        cfg.square.queries = self.queries;
        cfg.square.p_init = self.p_init;
        cfg.apgd.targets = self.apgd_targets;
    }
}
