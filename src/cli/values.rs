//! How clap reads the typed values of the command line (attacks, norms, targets): `--help` lists
//! the accepted values and a typo is rejected with the list.

use clap::builder::PossibleValue;

use crate::attack::{AttackKind, Norm, TargetMode};

impl clap::ValueEnum for AttackKind {
    fn value_variants<'a>() -> &'a [Self] {
        &AttackKind::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let v = PossibleValue::new(self.id());
        Some(match self {
            AttackKind::Fgsm => v.help("fast gradient sign method, one step of ε"),
            AttackKind::Bim => v.alias("ifgsm").help("basic iterative method (I-FGSM)"),
            AttackKind::Pgd => v.help("projected gradient descent, random start"),
            AttackKind::MiFgsm => v.aliases(["mi", "mim"]).help("momentum iterative FGSM"),
            AttackKind::Cw => v.alias("cwl2").help("Carlini-Wagner L2 (minimum norm)"),
            AttackKind::Deepfool => v.help("DeepFool (minimum norm)"),
            AttackKind::ApgdCe => v
                .alias("apgd")
                .help("auto-PGD on the cross-entropy, 100 steps (Croce & Hein 2020)"),
            AttackKind::ApgdDlr => v.help("auto-PGD on the DLR loss (needs ≥ 3 classes)"),
            AttackKind::ApgdT => v.help("auto-PGD, targeted DLR towards the 9 runner-up classes"),
            AttackKind::Square => v.help("Square attack: black-box random search, 5000 queries"),
            AttackKind::AutoAttack => v
                .alias("aa")
                .help("AutoAttack standard (APGD-CE, APGD-T, Square; no FAB-T yet)"),
            AttackKind::AutoAttackRand => v.help("AutoAttack rand: APGD-CE, APGD-DLR with EOT 20"),
        })
    }
}

impl clap::ValueEnum for Norm {
    fn value_variants<'a>() -> &'a [Self] {
        &[Norm::Linf, Norm::L2]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Norm::Linf => PossibleValue::new("linf")
                .alias("inf")
                .help("every pixel moves at most ε"),
            Norm::L2 => PossibleValue::new("l2").help("the perturbation's L2 norm is at most ε"),
        })
    }
}

/// Parses `--target`: `none`, `random`, `least-likely` or a class number.
pub fn parse_target(s: &str) -> Result<TargetMode, String> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "none" | "untargeted" => TargetMode::Untargeted,
        "random" => TargetMode::Random,
        "least-likely" | "ll" | "least_likely" => TargetMode::LeastLikely,
        n => TargetMode::Class(n.parse().map_err(|_| {
            format!("{s:?} is not a target: expected none, random, least-likely or a class number")
        })?),
    })
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum as _;

    use super::*;

    #[test]
    fn every_attack_reads_back_from_its_id_and_aliases_work() {
        for k in AttackKind::ALL {
            assert_eq!(AttackKind::from_str(k.id(), true), Ok(k));
        }
        assert_eq!(AttackKind::from_str("IFGSM", true), Ok(AttackKind::Bim));
        assert!(AttackKind::from_str("pdg", true).is_err());
        assert_eq!(Norm::from_str("inf", true), Ok(Norm::Linf));
    }

    #[test]
    fn targets() {
        assert_eq!(parse_target("none"), Ok(TargetMode::Untargeted));
        assert_eq!(parse_target("Random"), Ok(TargetMode::Random));
        assert_eq!(parse_target("ll"), Ok(TargetMode::LeastLikely));
        assert_eq!(parse_target("3"), Ok(TargetMode::Class(3)));
        assert!(parse_target("rnd").unwrap_err().contains("least-likely"));
    }
}
