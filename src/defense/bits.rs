//! Bit-depth reduction (Xu et al., NDSS 2018, "feature squeezing").

/// `round(x·(2ᵇ − 1)) / (2ᵇ − 1)` for every value, x clamped to [0, 1] first.
pub(crate) fn reduce(img: &[f32], bits: u8) -> Vec<f32> {
    let levels = ((1u32 << bits.min(8)) - 1) as f32;
    img.iter()
        .map(|&v| (v.clamp(0.0, 1.0) * levels).round() / levels)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_bit_thresholds_at_a_half() {
        assert_eq!(
            super::reduce(&[0.0, 0.49, 0.5, 0.51, 1.0], 1),
            [0.0, 0.0, 1.0, 1.0, 1.0]
        );
    }
}
