//! Feature noise through each denoise block: the mean relative change `‖ΔA‖/‖A‖` under an attack
//! at the block's input, at its denoising operation's output `op(x)` (before the 1×1 convolution)
//! and at its output, gathered from per-tap means (an evaluation's amplification). Whether the
//! operation suppresses the noise shows as `op < input`; whether the block as a whole does, as
//! `output < input`.

use serde::{Deserialize, Serialize};

use crate::model::{Graph, TapKind};

/// The noise at one denoise block's three taps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockNoise {
    /// The block's scope name, e.g. `group1_denoise`.
    pub block: String,
    /// Mean `‖ΔA‖/‖A‖` at the block's input.
    pub input: f64,
    /// At the denoising operation's output `op(x)`.
    pub op: f64,
    /// At the block's output `x + BN(conv1x1(op(x)))`.
    pub output: f64,
}

/// One row per denoise block of `graph` whose three taps all have a mean (`mean(tap name)`), in
/// depth order.
pub fn block_noise(graph: &Graph, mean: impl Fn(&str) -> Option<f64>) -> Vec<BlockNoise> {
    let mean_of = |kind: TapKind| {
        let tap = graph.taps.iter().find(|t| t.kind == kind)?;
        mean(&tap.name)
    };
    graph
        .denoise_blocks
        .iter()
        .enumerate()
        .filter_map(|(b, block)| {
            Some(BlockNoise {
                block: block.name.clone(),
                input: mean_of(TapKind::DenoiseBefore(b))?,
                op: mean_of(TapKind::DenoiseOp(b))?,
                output: mean_of(TapKind::DenoiseAfter(b))?,
            })
        })
        .collect()
}

/// The rows as a markdown table, with the operation's and the block's change relative to the
/// input in percent; empty when there are no rows.
pub fn block_noise_markdown(rows: &[BlockNoise]) -> String {
    use std::fmt::Write as _;
    if rows.is_empty() {
        return String::new();
    }
    let pct = |v: f64, base: f64| {
        if base > 0.0 {
            format!("{:+.1} %", 100.0 * (v - base) / base)
        } else {
            "–".to_string()
        }
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| denoise block | input ‖ΔA‖/‖A‖ | op output | output | op vs input | output vs input |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {:.4} | {:.4} | {:.4} | {} | {} |",
            r.block,
            r.input,
            r.op,
            r.output,
            pct(r.op, r.input),
            pct(r.output, r.input)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DenoiseVariant, Placement, ResnetDenoiseConfig};

    #[test]
    fn rows_follow_the_blocks_and_skip_incomplete_ones() {
        let mut cfg = ResnetDenoiseConfig::small_gray(Placement::AfterStage);
        cfg.denoise = DenoiseVariant::Mean;
        let g = cfg.build().unwrap();
        assert!(g.denoise_blocks.len() >= 2);
        let amps = [
            ("conv0", 0.3),
            ("group0_denoise/before", 0.2),
            ("group0_denoise/op", 0.1),
            ("group0_denoise/after", 0.15),
            // group1 lacks its op tap: no row.
            ("group1_denoise/before", 0.2),
            ("group1_denoise/after", 0.25),
        ];
        let rows = block_noise(&g, |tap| {
            amps.iter().find(|(t, _)| *t == tap).map(|(_, m)| *m)
        });
        assert_eq!(
            rows,
            vec![BlockNoise {
                block: "group0_denoise".into(),
                input: 0.2,
                op: 0.1,
                output: 0.15,
            }]
        );
        let md = block_noise_markdown(&rows);
        assert!(
            md.contains("| group0_denoise | 0.2000 | 0.1000 | 0.1500 | -50.0 % | -25.0 % |"),
            "{md}"
        );
        assert_eq!(block_noise_markdown(&[]), "");
    }
}
