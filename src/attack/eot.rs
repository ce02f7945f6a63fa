//! Where an attack's expectation over transformation (EOT) happens when a random defence sits in
//! front of the model: inside the attack's own loop or inside each gradient call.

use super::{AttackConfig, AttackKind};
use crate::defense::Defense;

/// Splits `k` draws per gradient between the attack and the defence in front of the model, by
/// the attack's kind, and writes the split into `cfg.apgd.eot` and `defense.eot`.
///
/// The APGD family and both AutoAttacks already average over `cfg.apgd.eot` gradient calls per
/// step (their step-size checks use the averaged loss), and every call through a random defence
/// is a fresh draw; so for them `k` goes to `cfg.apgd.eot` and the defence draws once per call
/// (`defense.eot = 1`). Every other attack (FGSM, BIM, PGD, MI-FGSM, C&W, DeepFool) asks for one
/// gradient per step, so the defence averages `k` draws inside that call (`defense.eot = k`,
/// `cfg.apgd.eot = 1`). Square uses no gradient; its share has no effect. Without randomness in
/// the chain a defence ignores its `eot`.
pub fn route_eot(cfg: &mut AttackConfig, defense: &mut Defense, k: usize) {
    let averages_itself = cfg.kind.is_apgd()
        || matches!(
            cfg.kind,
            AttackKind::AutoAttack | AttackKind::AutoAttackRand
        );
    if averages_itself {
        cfg.apgd.eot = k;
        defense.eot = 1;
    } else {
        cfg.apgd.eot = 1;
        defense.eot = k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(kind: AttackKind, k: usize) -> (usize, usize) {
        let mut cfg = AttackConfig {
            kind,
            ..AttackConfig::default()
        };
        let mut defense = Defense::new("resize-pad".parse().unwrap());
        route_eot(&mut cfg, &mut defense, k);
        (cfg.apgd.eot, defense.eot)
    }

    #[test]
    fn apgd_and_autoattack_average_themselves_the_others_through_the_defence() {
        for kind in [
            AttackKind::ApgdCe,
            AttackKind::ApgdDlr,
            AttackKind::ApgdT,
            AttackKind::AutoAttack,
            AttackKind::AutoAttackRand,
        ] {
            assert_eq!(routed(kind, 10), (10, 1), "{kind}");
        }
        for kind in [
            AttackKind::Fgsm,
            AttackKind::Bim,
            AttackKind::Pgd,
            AttackKind::MiFgsm,
            AttackKind::Cw,
            AttackKind::Deepfool,
            AttackKind::Square,
        ] {
            assert_eq!(routed(kind, 10), (1, 10), "{kind}");
        }
        assert_eq!(routed(AttackKind::Pgd, 1), (1, 1));
    }
}
