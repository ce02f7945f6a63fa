//! What changed between a clean and an adversarial pass, with no egui: the analysed
//! [`snapshot`] of one image, per-tap amplification (and per denoise block, [`block_noise`]), the
//! [`feature_grid`] of one tap and channel, [`render`]ing maps and perturbations to images (labels
//! in the [`glyphs`] font), [`export`] to files, evaluation reports ([`eval`]) and the
//! [`robustness`] curve.

mod adv_store;
mod batch_line;
mod block_noise;
mod colormap;
mod defense_table;
mod draw_stats;
mod eval;
mod eval_log;
mod eval_loop;
mod export;
mod feature_grid;
mod glyphs;
mod merge;
mod per_image;
mod render;
mod robustness;
mod shard;
mod snapshot;
mod transfer;

pub use adv_store::{AdvManifest, AdvSet, AdvStore, AdvStoreError, attack_slug, load_adversarial};
pub use batch_line::{BatchLine, BatchRow};
pub use block_noise::{BlockNoise, block_noise, block_noise_markdown};
pub use colormap::{diverging, perturbation_image};
pub use defense_table::{DefenseSuite, defense_grid, evaluate_defenses};
pub use draw_stats::DrawStats;
pub use eval::{EvalReport, EvalRow, EvalSource, TapAmplification, WorstCase, ci_text, wilson95};
pub use eval_log::{EvalLog, LogError, LogHeader, batches_path};
pub use eval_loop::{
    BatchOutcome, DEFAULT_DEFENSE_DRAWS, EVAL_UNBOUNDED_IMAGES, EvalError, EvalInput, EvalOptions,
    EvalSink, evaluate, evaluate_defended, evaluate_defended_stream, evaluate_stream,
    evaluate_with,
};
pub use export::{
    Export, save_adversarial, save_dynamic, save_feature_maps, save_perturbation, save_record,
};
pub use feature_grid::{
    Column, DENOISE_COLUMNS, FeatureGrid, Row, channel_deltas, channel_map, colour, column_taps,
    denoise_block_of, feature_grid, map_rgb, sorted_by_delta,
};
pub use merge::{MergeError, merge_reports};
pub use per_image::ImageResult;
pub use render::{ShapeError, feature_export_size, feature_maps_image, perturbation_rgb};
pub use robustness::{CurveProgress, RobustnessJob, curve_attack, robustness_curve};
pub use shard::{Shard, ShardError};
pub use snapshot::{
    AnalyseJob, Seen, Snapshot, TapPair, analyse, analyse_result, attack_job, eot_draws,
    is_slow_job,
};
pub use transfer::{TransferMatrix, transfer_matrix};

use crate::array::Array;

/// `‖A(x_adv) − A(x)‖₂ / ‖A(x)‖₂` for each example of one tap (0 when the clean activation is 0).
pub fn amplification(clean: &Array, adv: &Array) -> Vec<f32> {
    (0..clean.batch())
        .map(|i| {
            let (c, a) = (clean.example(i), adv.example(i));
            let num: f32 = c
                .iter()
                .zip(a)
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f32>()
                .sqrt();
            let den: f32 = c.iter().map(|x| x * x).sum::<f32>().sqrt();
            if den > 0.0 { num / den } else { 0.0 }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amplification_is_relative_change() {
        let c = Array::new(vec![2, 2], vec![3.0, 4.0, 0.0, 0.0]).unwrap();
        let a = Array::new(vec![2, 2], vec![3.0, 5.0, 1.0, 0.0]).unwrap();
        let r = amplification(&c, &a);
        assert!((r[0] - 0.2).abs() < 1e-6);
        assert_eq!(r[1], 0.0);
    }
}
