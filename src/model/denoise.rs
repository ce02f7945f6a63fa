//! The feature-denoising operations of Xie et al. (CVPR 2019). Every variant sits inside the same
//! block, `y = x + BN(conv1x1(op(x)))` with the BN's gamma initialised to zero (so a fresh block is
//! the identity) and no ReLU after the sum. This file names the variants; engines implement them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The denoising operation `op` of a denoise block. With positions `i, j` over the `H·W` grid of
/// a `C`-channel map `x`:
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenoiseVariant {
    /// Non-local means, Gaussian with embedding (the paper's default):
    /// `y_i = Σ_j softmax_j(θ(x_i)·φ(x_j) / √(C/2)) x_j`, θ and φ 1×1 convs to `C/2` channels.
    NonlocalGaussian,
    /// Non-local Gaussian without embedding: `y_i = Σ_j softmax_j(x_i·x_j / √C) x_j`.
    GaussianNoEmbed,
    /// Non-local dot product: `y_i = (1 / HW) Σ_j (x_i·x_j) x_j`.
    DotProduct,
    /// 3×3 mean filter (stride 1, cells outside the map excluded).
    Mean,
    /// 3×3 median filter per channel (cells outside the map excluded; lower median when even).
    Median,
    /// Bilateral filter over a 3×3 window with the embedded Gaussian affinity:
    /// `y_i = Σ_{j∈Ω(i)} softmax_j(θ(x_i)·φ(x_j) / √(C/2)) x_j`.
    Bilateral,
}

impl DenoiseVariant {
    /// Every variant, in display order.
    pub const ALL: [DenoiseVariant; 6] = [
        DenoiseVariant::NonlocalGaussian,
        DenoiseVariant::GaussianNoEmbed,
        DenoiseVariant::DotProduct,
        DenoiseVariant::Mean,
        DenoiseVariant::Median,
        DenoiseVariant::Bilateral,
    ];

    /// Whether the variant has θ/φ embeddings.
    pub fn embedded(self) -> bool {
        matches!(
            self,
            DenoiseVariant::NonlocalGaussian | DenoiseVariant::Bilateral
        )
    }

    /// The identifier used in files and on the command line.
    pub fn id(self) -> &'static str {
        match self {
            DenoiseVariant::NonlocalGaussian => "nonlocal_gaussian",
            DenoiseVariant::GaussianNoEmbed => "gaussian_no_embed",
            DenoiseVariant::DotProduct => "dot_product",
            DenoiseVariant::Mean => "mean",
            DenoiseVariant::Median => "median",
            DenoiseVariant::Bilateral => "bilateral",
        }
    }
}

impl fmt::Display for DenoiseVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// An identifier that names no denoise variant.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown denoise variant {0:?}; expected one of nonlocal_gaussian, gaussian_no_embed, dot_product, mean, median, bilateral"
)]
pub struct UnknownVariant(pub String);

impl FromStr for DenoiseVariant {
    type Err = UnknownVariant;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DenoiseVariant::ALL
            .into_iter()
            .find(|v| v.id() == s)
            .ok_or_else(|| UnknownVariant(s.to_string()))
    }
}

/// Where a network places its denoise blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// No denoise blocks.
    #[default]
    None,
    /// One block after the last residual block of each stage (the paper's R152-Denoise).
    AfterStage,
    /// One block after every residual block (the paper's X101-DenoiseAll).
    AfterEveryBlock,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_unknown_is_an_error() {
        for v in DenoiseVariant::ALL {
            assert_eq!(v.id().parse::<DenoiseVariant>().unwrap(), v);
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, format!("\"{}\"", v.id()));
        }
        let err = "gaussian".parse::<DenoiseVariant>().unwrap_err();
        assert!(err.to_string().contains("unknown denoise variant"));
    }
}
