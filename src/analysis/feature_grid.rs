//! The data behind the feature-map panel, shared by the panel, the channel grid and the export:
//! which columns a tap shows (a denoise block's input, operation output and output), the clean,
//! adversarial and |Δ| maps of one channel, the colour scale they share (or the |Δ| rows' own),
//! and the colour map.

use super::colormap::diverging;
use super::snapshot::{Snapshot, TapPair};
use crate::model::TapKind;

/// One row of the grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Row {
    /// The clean activation.
    Clean,
    /// The adversarial activation.
    Adversarial,
    /// |adversarial − clean|.
    Delta,
}

impl Row {
    /// Every row, top to bottom.
    pub const ALL: [Row; 3] = [Row::Clean, Row::Adversarial, Row::Delta];

    /// Row title.
    pub fn label(self) -> &'static str {
        match self {
            Row::Clean => "clean",
            Row::Adversarial => "adversarial",
            Row::Delta => "|Δ|",
        }
    }
}

/// One column: one tap's maps for one channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    /// Column title ("block input", "op output", "block output" or the tap name).
    pub title: String,
    /// The tap it shows.
    pub tap: String,
    /// Clean map, `h × w` row-major.
    pub clean: Vec<f32>,
    /// Adversarial map.
    pub adv: Vec<f32>,
    /// |Δ| map.
    pub delta: Vec<f32>,
}

impl Column {
    /// The map of `row`.
    pub fn map(&self, row: Row) -> &[f32] {
        match row {
            Row::Clean => &self.clean,
            Row::Adversarial => &self.adv,
            Row::Delta => &self.delta,
        }
    }
}

/// The grid of the feature-map panel for one tap and channel.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureGrid {
    /// Columns, left to right.
    pub columns: Vec<Column>,
    /// Map height.
    pub h: usize,
    /// Map width.
    pub w: usize,
    /// The channel shown.
    pub channel: usize,
    /// The shared scale: every cell maps `[-scale, scale]` to the diverging colour map.
    pub scale: f32,
    /// The largest |Δ| of any column: the |Δ| rows' own scale.
    pub delta_scale: f32,
    /// Whether the |Δ| rows map `[0, delta_scale]` (their own scale) instead of the shared one.
    pub delta_own_scale: bool,
}

impl FeatureGrid {
    /// The same grid with the |Δ| rows on their own scale (`on`) or on the shared one.
    pub fn with_delta_own_scale(self, on: bool) -> Self {
        Self {
            delta_own_scale: on,
            ..self
        }
    }

    /// The scale `row` is drawn with: the shared one, or the |Δ| rows' own when chosen.
    pub fn row_scale(&self, row: Row) -> f32 {
        match row {
            Row::Delta if self.delta_own_scale => self.delta_scale,
            _ => self.scale,
        }
    }
}

/// The column titles of a denoise block's three taps, in order.
pub const DENOISE_COLUMNS: [&str; 3] = ["block input", "op output", "block output"];

/// The denoise block a tap belongs to, if any.
pub fn denoise_block_of(kind: TapKind) -> Option<usize> {
    match kind {
        TapKind::DenoiseBefore(b) | TapKind::DenoiseOp(b) | TapKind::DenoiseAfter(b) => Some(b),
        _ => None,
    }
}

/// The taps shown side by side for `tap`: the block's input, operation output and output taps
/// when `tap` belongs to a denoise block, otherwise `tap` alone.
pub fn column_taps<'a>(snap: &'a Snapshot, tap: &str) -> Vec<(&'static str, &'a TapPair)> {
    let Some(t) = snap.tap(tap) else {
        return vec![];
    };
    let Some(block) = denoise_block_of(t.kind) else {
        return vec![("", t)];
    };
    let kinds = [
        TapKind::DenoiseBefore(block),
        TapKind::DenoiseOp(block),
        TapKind::DenoiseAfter(block),
    ];
    let found: Option<Vec<_>> = kinds
        .iter()
        .zip(DENOISE_COLUMNS)
        .map(|(k, title)| snap.taps.iter().find(|p| p.kind == *k).map(|p| (title, p)))
        .collect();
    found.unwrap_or_else(|| vec![("", t)])
}

/// Channel `c` of a `[1, C, H, W]` activation.
pub fn channel_map(a: &crate::array::Array, c: usize) -> Option<&[f32]> {
    let &[_, ch, h, w] = a.shape() else {
        return None;
    };
    if c >= ch {
        return None;
    }
    a.data().get(c * h * w..(c + 1) * h * w)
}

/// Builds the grid for `tap` and `channel`; `None` for flat taps or a channel out of range.
pub fn feature_grid(snap: &Snapshot, tap: &str, channel: usize) -> Option<FeatureGrid> {
    let mut columns = vec![];
    let mut hw = None;
    for (title, pair) in column_taps(snap, tap) {
        let [_, h, w] = pair.chw()?;
        hw = Some((h, w));
        let clean = channel_map(&pair.clean, channel)?.to_vec();
        let adv = channel_map(&pair.adv, channel)?.to_vec();
        let delta = clean.iter().zip(&adv).map(|(c, a)| (a - c).abs()).collect();
        columns.push(Column {
            title: if title.is_empty() {
                pair.name.clone()
            } else {
                title.to_string()
            },
            tap: pair.name.clone(),
            clean,
            adv,
            delta,
        });
    }
    let (h, w) = hw?;
    let scale = largest_abs(columns.iter().flat_map(|c| c.clean.iter().chain(&c.adv)));
    let delta_scale = largest_abs(columns.iter().flat_map(|c| c.delta.iter()));
    Some(FeatureGrid {
        columns,
        h,
        w,
        channel,
        scale,
        delta_scale,
        delta_own_scale: false,
    })
}

/// The largest finite |v|, or 1 when there is none above 0 (so a scale never divides by 0).
fn largest_abs<'a>(values: impl Iterator<Item = &'a f32>) -> f32 {
    let m = values.fold(0f32, |m, v| if v.is_finite() { m.max(v.abs()) } else { m });
    if m > 0.0 { m } else { 1.0 }
}

/// RGB of value `v` on a scale of `[-scale, scale]`.
pub fn colour(v: f32, scale: f32) -> [u8; 3] {
    diverging(v / scale)
}

/// RGB bytes of a map on a scale of `[-scale, scale]`.
pub fn map_rgb(values: &[f32], scale: f32) -> Vec<u8> {
    values.iter().flat_map(|&v| colour(v, scale)).collect()
}

/// Per channel of a `[1, C, H, W]` tap pair: `Σ |adv − clean|` (mean absolute change).
pub fn channel_deltas(pair: &TapPair) -> Vec<f32> {
    let Some([c, h, w]) = pair.chw() else {
        return vec![];
    };
    let n = (h * w).max(1);
    (0..c)
        .map(|ch| {
            let (Some(a), Some(b)) = (channel_map(&pair.clean, ch), channel_map(&pair.adv, ch))
            else {
                return 0.0;
            };
            a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / n as f32
        })
        .collect()
}

/// Channel indices ordered by `deltas`, largest first (index order on ties).
pub fn sorted_by_delta(deltas: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..deltas.len()).collect();
    idx.sort_by(|&a, &b| deltas[b].total_cmp(&deltas[a]).then(a.cmp(&b)));
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_by_delta_is_descending() {
        assert_eq!(sorted_by_delta(&[0.1, 0.5, 0.3, 0.5]), vec![1, 3, 2, 0]);
    }

    #[test]
    fn delta_rows_take_their_own_scale_only_when_asked() {
        let col = Column {
            title: "t".into(),
            tap: "t".into(),
            clean: vec![1.0, -4.0],
            adv: vec![1.5, -3.0],
            delta: vec![0.5, 1.0],
        };
        let grid = FeatureGrid {
            columns: vec![col],
            h: 1,
            w: 2,
            channel: 0,
            scale: 4.0,
            delta_scale: 1.0,
            delta_own_scale: false,
        };
        assert!(Row::ALL.iter().all(|&r| grid.row_scale(r) == 4.0));
        let own = grid.with_delta_own_scale(true);
        assert_eq!(own.row_scale(Row::Delta), 1.0);
        assert_eq!(own.row_scale(Row::Clean), 4.0);
        assert_eq!(own.row_scale(Row::Adversarial), 4.0);
        assert_eq!(largest_abs([0.0f32, f32::NAN].iter()), 1.0);
        assert_eq!(largest_abs([0.5f32, -2.0].iter()), 2.0);
    }

    #[test]
    fn colour_is_white_at_zero() {
        assert_eq!(colour(0.0, 2.0), [255, 255, 255]);
        assert_eq!(colour(2.0, 2.0), [255, 0, 0]);
    }
}
