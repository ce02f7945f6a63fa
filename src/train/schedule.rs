//! Learning-rate schedules, evaluated per step.

use serde::{Deserialize, Serialize};

/// How the learning rate changes over training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// Half a cosine from the base rate down to zero.
    Cosine,
    /// The base rate, ×0.1 from half-way, ×0.01 from three quarters.
    Step,
}

impl std::str::FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "constant" => Ok(Self::Constant),
            "cosine" => Ok(Self::Cosine),
            "step" => Ok(Self::Step),
            _ => Err(format!(
                "unknown schedule {s:?}; expected constant, cosine or step"
            )),
        }
    }
}

impl Schedule {
    /// The learning rate at `step` of `total` steps, with a linear warm-up over the first
    /// `warmup` steps.
    pub fn lr(self, base: f32, step: usize, total: usize, warmup: usize) -> f32 {
        let total = total.max(1);
        let t = (step.min(total) as f32) / total as f32;
        let lr = match self {
            Schedule::Constant => base,
            Schedule::Cosine => base * 0.5 * (1.0 + (std::f32::consts::PI * t).cos()),
            Schedule::Step if t >= 0.75 => base * 0.01,
            Schedule::Step if t >= 0.5 => base * 0.1,
            Schedule::Step => base,
        };
        if step < warmup {
            lr * (step + 1) as f32 / warmup as f32
        } else {
            lr
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        assert_eq!(Schedule::Constant.lr(0.1, 50, 100, 0), 0.1);
        assert!((Schedule::Cosine.lr(0.1, 0, 100, 0) - 0.1).abs() < 1e-6);
        assert!((Schedule::Cosine.lr(0.1, 50, 100, 0) - 0.05).abs() < 1e-6);
        assert!(Schedule::Cosine.lr(0.1, 100, 100, 0).abs() < 1e-6);
        assert!((Schedule::Step.lr(0.1, 60, 100, 0) - 0.01).abs() < 1e-7);
        assert!((Schedule::Step.lr(0.1, 80, 100, 0) - 0.001).abs() < 1e-7);
        assert!((Schedule::Constant.lr(0.1, 0, 100, 10) - 0.01).abs() < 1e-7);
        assert_eq!("cosine".parse::<Schedule>(), Ok(Schedule::Cosine));
        assert!("fast".parse::<Schedule>().is_err());
    }
}
