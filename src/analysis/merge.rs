//! `advlens merge`: the reports of the shards of one evaluation combined into the report of the
//! whole. Counts add (clean, robust, per draw, per-image worst case, diagnostics, AutoAttack's
//! stages), means are weighted by images; accuracies and intervals are computed again from the
//! sums, so the merged report equals the unsharded run's.

use super::block_noise::BlockNoise;
use super::eval::EvalReport;

/// Why reports cannot be merged.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MergeError {
    /// Nothing to merge.
    #[error("no reports to merge")]
    Empty,
    /// The reports are not shards of one run.
    #[error("report {index} is not a shard of the same run as report 0: {reason}")]
    Different {
        /// 0-based position of the report that differs.
        index: usize,
        /// What differs.
        reason: String,
    },
}

/// What makes report `b` a shard of a different run than `a`, if anything.
fn difference(a: &EvalReport, b: &EvalReport) -> Option<String> {
    match (&a.source, &b.source) {
        (Some(x), Some(y)) => {
            if x.model != y.model {
                return Some(format!("model {} vs {}", x.model, y.model));
            }
            if x.data != y.data || x.examples != y.examples {
                return Some(format!(
                    "data {} ({} examples) vs {} ({} examples)",
                    x.data, x.examples, y.data, y.examples
                ));
            }
            match (x.shard, y.shard) {
                (Some(s), Some(t)) if s.count != t.count => {
                    return Some(format!("{} shards vs {}", s.count, t.count));
                }
                (Some(s), Some(t)) if s.index == t.index => {
                    return Some(format!("both are shard {s}"));
                }
                (Some(_), None) | (None, Some(_)) => {
                    return Some("one is a shard, the other is not".into());
                }
                _ => {}
            }
        }
        (None, None) => {}
        _ => return Some("one report records its model and data, the other does not".into()),
    }
    let attacks = |r: &EvalReport| r.rows.iter().map(|r| r.attack.clone()).collect::<Vec<_>>();
    if attacks(a) != attacks(b) {
        return Some("the attack settings (kinds, budgets, steps or seeds) differ".into());
    }
    if a.defense != b.defense {
        return Some("the defences differ".into());
    }
    let draws = |r: &EvalReport| r.clean_draws.as_ref().map(|d| d.correct.len());
    if draws(a) != draws(b) {
        return Some("the defence draws differ".into());
    }
    None
}

/// Weighted sums of the per-block noise, to be divided by the images.
fn add_blocks(into: &mut Vec<BlockNoise>, more: &[BlockNoise], images: usize) {
    let w = images as f64;
    for b in more {
        match into.iter_mut().find(|e| e.block == b.block) {
            Some(e) => {
                e.input += w * b.input;
                e.op += w * b.op;
                e.output += w * b.output;
            }
            None => into.push(BlockNoise {
                block: b.block.clone(),
                input: w * b.input,
                op: w * b.op,
                output: w * b.output,
            }),
        }
    }
}

/// Combines the reports of the shards of one run (any order). Refuses reports of different
/// models, data, attack settings, seeds or defences, and two reports of the same shard. The
/// result is `complete` only when every shard is present and complete.
pub fn merge_reports(reports: Vec<EvalReport>) -> Result<EvalReport, MergeError> {
    let mut it = reports.into_iter();
    let mut merged = it.next().ok_or(MergeError::Empty)?;
    let first = merged.clone();
    let mut shards: Vec<usize> = merged
        .source
        .as_ref()
        .and_then(|s| s.shard)
        .map(|s| s.index)
        .into_iter()
        .collect();
    let mut amp: Vec<(String, f64)> = merged
        .amplification
        .iter()
        .map(|t| (t.tap.clone(), t.mean * merged.images as f64))
        .collect();
    let mut blocks = Vec::new();
    add_blocks(&mut blocks, &first.block_noise, first.images);
    for (k, r) in it.enumerate() {
        if let Some(reason) = difference(&first, &r) {
            return Err(MergeError::Different {
                index: k + 1,
                reason,
            });
        }
        if let Some(s) = r.source.as_ref().and_then(|s| s.shard) {
            if shards.contains(&s.index) {
                return Err(MergeError::Different {
                    index: k + 1,
                    reason: format!("shard {s} appears twice"),
                });
            }
            shards.push(s.index);
        }
        merged.images += r.images;
        merged.clean_correct += r.clean_correct;
        if let (Some(d), Some(add)) = (merged.clean_draws.as_mut(), &r.clean_draws) {
            d.add(&add.correct);
        }
        for (row, add) in merged.rows.iter_mut().zip(r.rows) {
            row.add(add);
        }
        match (merged.all_robust.as_mut(), r.all_robust) {
            (Some(w), Some(add)) => {
                w.correct += add.correct;
                if let (Some(d), Some(a)) = (w.draws.as_mut(), add.draws) {
                    d.add(&a.correct);
                }
            }
            (None, Some(add)) => merged.all_robust = Some(add),
            _ => {}
        }
        for t in &r.amplification {
            match amp.iter_mut().find(|(tap, _)| *tap == t.tap) {
                Some((_, sum)) => *sum += t.mean * r.images as f64,
                None => amp.push((t.tap.clone(), t.mean * r.images as f64)),
            }
        }
        add_blocks(&mut blocks, &r.block_noise, r.images);
        merged.unreadable.extend(r.unreadable);
        merged.complete &= r.complete;
    }
    let count = merged
        .source
        .as_ref()
        .and_then(|s| s.shard)
        .map(|s| s.count);
    if let Some(count) = count {
        merged.complete &= shards.len() == count;
        if let Some(s) = merged.source.as_mut() {
            s.shard = None;
        }
    }
    let images = merged.images.max(1) as f64;
    for b in &mut blocks {
        b.input /= images;
        b.op /= images;
        b.output /= images;
    }
    merged.unreadable.sort_by_key(|u| u.index);
    merged.finish(amp, |_| blocks.clone());
    Ok(merged)
}
