//! One machine's part of an evaluation spread over many: shard `I` of `N` takes a contiguous,
//! deterministic slice of the images. Every random choice an attack or defence makes for an
//! image comes from the seed and the image itself, never from its batch or position, so the
//! union of the `N` shards is the unsharded run, image for image.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Shard `index` of `count` (0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shard {
    /// Which shard, `0 ≤ index < count`.
    pub index: usize,
    /// How many shards the images are split into.
    pub count: usize,
}

impl Shard {
    /// The data-set indices of this shard out of `total` images: shard `i` takes
    /// `[⌊i·total/N⌋, ⌊(i+1)·total/N⌋)`, so sizes differ by at most one and the shards tile the
    /// set in order.
    pub fn range(&self, total: usize) -> Range<usize> {
        let at = |i: usize| (i as u128 * total as u128 / self.count.max(1) as u128) as usize;
        at(self.index)..at(self.index + 1)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Why `I/N` is not a shard.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a shard: write I/N with 0 ≤ I < N, e.g. 0/4 for the first of four")]
pub struct ShardError(pub String);

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Self, ShardError> {
        let bad = || ShardError(s.to_string());
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_tile_the_set_in_order_with_sizes_within_one() {
        for total in [0, 1, 7, 200, 10_000] {
            for count in [1, 3, 4, 7] {
                let mut next = 0;
                for index in 0..count {
                    let r = Shard { index, count }.range(total);
                    assert_eq!(r.start, next);
                    assert!(r.len() == total / count || r.len() == total / count + 1);
                    next = r.end;
                }
                assert_eq!(next, total);
            }
        }
    }

    #[test]
    fn parses_i_of_n_and_refuses_the_rest() {
        assert_eq!("2/4".parse(), Ok(Shard { index: 2, count: 4 }));
        for bad in ["4/4", "1/0", "x/2", "3", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert_eq!(Shard { index: 0, count: 3 }.to_string(), "0/3");
    }
}
