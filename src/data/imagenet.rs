//! ImageNet-1k class names in the standard order (sorted WordNet IDs; class 0 is "tench"), the
//! order of Xie et al.'s models and of torchvision. Shipped in `assets/imagenet/classes.txt`.

/// The class list, one line per class (synonyms separated by commas).
const CLASSES_TXT: &str = include_str!("../../assets/imagenet/classes.txt");

/// Number of ImageNet-1k classes.
pub const COUNT: usize = 1000;

/// The 1000 class names; each is the first synonym of its line (e.g. `tench`).
pub fn names() -> Vec<String> {
    CLASSES_TXT
        .lines()
        .map(|l| l.split(',').next().unwrap_or(l).trim().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousand_classes_in_standard_order() {
        let n = names();
        assert_eq!(n.len(), COUNT);
        assert_eq!(n[0], "tench");
        assert_eq!(n[1], "goldfish");
        assert_eq!(n[967], "espresso");
        assert_eq!(n[999], "toilet tissue");
    }
}
