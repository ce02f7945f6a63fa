//! Budgets as people write them: `0.03`, `8/255`, or `8` meaning 8/255. The CLI's `--eps` and
//! `--alpha` and the app's ε field read them the same way.

/// Parses a pixel-unit number: `0.03`, `8/255` or `8/255.0`.
pub fn parse_fraction(s: &str) -> Result<f32, String> {
    let parse = |t: &str| {
        t.trim()
            .parse::<f32>()
            .map_err(|_| format!("{s:?} is not a number or a fraction like 8/255"))
    };
    let v = match s.split_once('/') {
        Some((a, b)) => {
            let d = parse(b)?;
            if d == 0.0 {
                return Err(format!("{s:?} divides by zero"));
            }
            parse(a)? / d
        }
        None => parse(s)?,
    };
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{s:?} is not finite"))
    }
}

/// A budget read from text, and how it was read.
#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    /// The value in pixel units ([0, 1] images).
    pub value: f32,
    /// How the text was read, for the user (`"25 read as 25/255 = 0.0980"`).
    pub reading: String,
}

/// Parses an ε or step size: a fraction (`25/255`), a pixel-unit number up to 1 (`0.1`), or a
/// number above 1, which can only mean 8-bit levels (`25` = 25/255). Negative budgets are
/// refused.
pub fn parse_budget(s: &str) -> Result<Budget, String> {
    let v = parse_fraction(s)?;
    if v < 0.0 {
        return Err(format!("{s:?} is negative; a budget is ≥ 0"));
    }
    let text = s.trim();
    Ok(if v > 1.0 && !text.contains('/') {
        Budget {
            value: v / 255.0,
            reading: format!("{text} read as {text}/255 = {:.4}", v / 255.0),
        }
    } else {
        Budget {
            value: v,
            reading: format!("{text} read as {v:.4} = {:.1}/255", v * 255.0),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions() {
        assert!((parse_fraction("8/255").unwrap() - 8.0 / 255.0).abs() < 1e-9);
        assert_eq!(parse_fraction("0.1").unwrap(), 0.1);
        assert!(parse_fraction("1/0").is_err());
        assert!(parse_fraction("abc").is_err());
        assert!(parse_fraction("inf").is_err());
    }

    #[test]
    fn budgets_read_the_three_ways_and_say_how() {
        let b = parse_budget("25").unwrap();
        assert!((b.value - 25.0 / 255.0).abs() < 1e-7);
        assert!(b.reading.contains("25/255"), "{}", b.reading);
        let b = parse_budget("25/255").unwrap();
        assert!((b.value - 25.0 / 255.0).abs() < 1e-7);
        let b = parse_budget(" 0.1 ").unwrap();
        assert_eq!(b.value, 0.1);
        assert!(b.reading.contains("25.5/255"), "{}", b.reading);
        // 1 is the whole pixel range, not 1/255.
        assert_eq!(parse_budget("1").unwrap().value, 1.0);
        assert!(parse_budget("-0.1").is_err());
        assert!(parse_budget("eight").is_err());
    }
}
