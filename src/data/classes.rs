//! A class list (`--classes FILE`): one class per line, in the model's label order. A line is a
//! key, the folder name of an image folder (`n01440764`), optionally followed by a name after a
//! space, a tab or a comma (`n01440764 tench`, `n01440764,tench`); ImageNet's `tench, Tinca
//! tinca` reads as key `tench`. Blank lines are skipped.

use std::collections::HashMap;
use std::path::Path;

use super::DataError;

/// The most bytes a class file may have (ImageNet-21k's list is about 600 kB).
pub const MAX_CLASS_FILE_BYTES: u64 = 16 << 20;

/// The classes of a class file, in label order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassList {
    /// Each class's key (the first token of its line), by label.
    pub keys: Vec<String>,
    /// Each class's name (the rest of its line), by label; empty when the line has none.
    pub names: Vec<String>,
    by_key: HashMap<String, usize>,
    by_name: HashMap<String, usize>,
}

impl ClassList {
    /// Reads a class file.
    pub fn read(path: &Path) -> Result<Self, DataError> {
        let bytes = crate::io::read_limited(path, MAX_CLASS_FILE_BYTES).map_err(|source| {
            DataError::Io {
                path: path.display().to_string(),
                source,
            }
        })?;
        Self::parse(
            &String::from_utf8_lossy(&bytes),
            &path.display().to_string(),
        )
    }

    /// Parses the text of a class file called `path` (for messages).
    pub fn parse(text: &str, path: &str) -> Result<Self, DataError> {
        let mut keys = Vec::new();
        let mut names = Vec::new();
        let mut by_key = HashMap::new();
        let mut by_name = HashMap::new();
        for (line_no, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let split = line
                .find(|c: char| c == ',' || c.is_whitespace())
                .unwrap_or(line.len());
            let key = line[..split].to_string();
            let name = line[split..]
                .trim_start_matches(|c: char| c == ',' || c.is_whitespace())
                .to_string();
            let label = keys.len();
            if let Some(first) = by_key.insert(key.clone(), label) {
                return Err(DataError::ClassFile {
                    path: path.into(),
                    reason: format!(
                        "line {} repeats the class {key:?} of class {first}: each class needs \
                         a key of its own",
                        line_no + 1
                    ),
                });
            }
            if !name.is_empty() {
                by_name.entry(name.clone()).or_insert(label);
            }
            keys.push(key);
            names.push(name);
        }
        if keys.is_empty() {
            return Err(DataError::ClassFile {
                path: path.into(),
                reason: "it lists no classes (one per line expected)".into(),
            });
        }
        Ok(Self {
            keys,
            names,
            by_key,
            by_name,
        })
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the list is empty (never, for a parsed file).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The label of a class key (a folder name).
    pub fn by_key(&self, key: &str) -> Option<usize> {
        self.by_key.get(key).copied()
    }

    /// The label of a class given by key, or failing that by its name (a CSV's label column).
    pub fn lookup(&self, key_or_name: &str) -> Option<usize> {
        self.by_key(key_or_name)
            .or_else(|| self.by_name.get(key_or_name).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_names_in_each_spelling() {
        let text = "n01440764 tench\nn01443537,goldfish\n\nn01484850\ttiger shark\nn015\n";
        let c = ClassList::parse(text, "c.txt").unwrap();
        assert_eq!(c.keys, ["n01440764", "n01443537", "n01484850", "n015"]);
        assert_eq!(c.names, ["tench", "goldfish", "tiger shark", ""]);
        assert_eq!(c.by_key("n01484850"), Some(2));
        assert_eq!(c.lookup("goldfish"), Some(1));
        assert_eq!(c.lookup("n015"), Some(3));
        assert_eq!(c.lookup("tiger"), None);
        let imagenet = ClassList::parse("tench, Tinca tinca\ngoldfish, Carassius", "i").unwrap();
        assert_eq!(imagenet.keys, ["tench", "goldfish"]);
        assert_eq!(imagenet.lookup("Tinca tinca"), Some(0));
    }

    #[test]
    fn repeated_keys_and_empty_files_are_errors() {
        let e = ClassList::parse("a\nb\na x\n", "c.txt")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c.txt") && e.contains("line 3 repeats the class \"a\""),
            "{e}"
        );
        let e = ClassList::parse("\n \n", "c.txt").unwrap_err().to_string();
        assert!(e.contains("lists no classes"), "{e}");
    }
}
