//! Where a random transform's randomness comes from. A seeded draw for one image is a function of
//! the seed, the call and draw numbers and the image's own values, so an image transforms the
//! same way whatever batch it is in and wherever it sits there.

use rand::SeedableRng as _;
use rand_chacha::ChaCha8Rng;

use super::resize_pad::Pattern;

/// The randomness of one application of a chain to a batch.
#[derive(Clone, Debug, PartialEq)]
pub enum Draws {
    /// Fresh randomness for each image from (`seed`, `call`, `draw`, the image's values).
    /// Engines count `call` up by one per forward or gradient pass and `draw` over the samples of
    /// one expectation over transformation.
    Seeded {
        /// The defence's seed.
        seed: u64,
        /// Which pass.
        call: u64,
        /// Which sample within the pass.
        draw: u64,
    },
    /// The same patterns for every image: one per random transform of the chain, in order
    /// (used to enumerate the randomness exactly).
    Fixed(Vec<Pattern>),
}

/// SplitMix64's finaliser: a well-mixed 64-bit value from any 64-bit value.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The random stream of one image under seeded draws.
pub(crate) fn image_rng(seed: u64, call: u64, draw: u64, img: &[f32]) -> ChaCha8Rng {
    // FNV-1a over the values' bits identifies the image.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in img {
        for b in v.to_bits().to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    let key = mix(mix(mix(mix(seed) ^ call) ^ draw) ^ h);
    ChaCha8Rng::seed_from_u64(key)
}
