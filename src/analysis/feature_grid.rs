//! The data behind the feature-map panel, shared by the panel, the channel grid and the export:
//! which columns a tap shows (before/after its denoise block), the clean, adversarial and |Δ| maps
//! of one channel, the one colour scale they share, and the colour map.

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
    /// Column title ("before denoise", "after denoise" or the tap name).
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
}

/// The taps shown side by side for `tap`: the block's before and after taps when `tap` belongs to
/// a denoise block, otherwise `tap` alone.
pub fn column_taps<'a>(snap: &'a Snapshot, tap: &str) -> Vec<(&'static str, &'a TapPair)> {
    let Some(t) = snap.tap(tap) else {
        return vec![];
    };
    let block = match t.kind {
        TapKind::DenoiseBefore(b) | TapKind::DenoiseAfter(b) => b,
        _ => return vec![("", t)],
    };
    let before = snap
        .taps
        .iter()
        .find(|p| p.kind == TapKind::DenoiseBefore(block));
    let after = snap
        .taps
        .iter()
        .find(|p| p.kind == TapKind::DenoiseAfter(block));
    match (before, after) {
        (Some(b), Some(a)) => vec![("before denoise", b), ("after denoise", a)],
        _ => vec![("", t)],
    }
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
    let scale = columns
        .iter()
        .flat_map(|c| c.clean.iter().chain(&c.adv))
        .fold(0f32, |m, v| if v.is_finite() { m.max(v.abs()) } else { m });
    Some(FeatureGrid {
        columns,
        h,
        w,
        channel,
        scale: if scale > 0.0 { scale } else { 1.0 },
    })
}

/// RGB of value `v` on the shared scale.
pub fn colour(v: f32, scale: f32) -> [u8; 3] {
    diverging(v / scale)
}

/// RGB bytes of a map on the shared scale.
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
    fn colour_is_white_at_zero() {
        assert_eq!(colour(0.0, 2.0), [255, 255, 255]);
        assert_eq!(colour(2.0, 2.0), [255, 0, 0]);
    }
}
