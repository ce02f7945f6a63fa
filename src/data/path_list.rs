//! A list of image files with their labels: `.csv` (comma), `.tsv` (tab) or `.txt` (tab, comma
//! or spaces, whichever its first line uses) rows of `path,label`, read with the `csv` crate
//! (quoted fields included). Paths are relative to the list's folder unless absolute; a label is
//! a class number or, with a class file, a class key or name. A first row whose label is
//! neither is a header. Further columns are ignored.

use std::path::{Path, PathBuf};

use super::{ClassList, DataError, ImageFiles};

/// The most bytes a list may have (ImageNet's 50 000 validation rows are about 2 MB).
pub const MAX_LIST_BYTES: u64 = 256 << 20;

/// How many listed files are looked for on opening: when none of them exists, the paths are
/// taken to be relative to the wrong folder and opening fails, rather than every image of the
/// run being unreadable.
const CHECKED_FILES: usize = 16;

/// The field separator of a list named `path` whose first line is `first_line`.
pub fn delimiter(path: &Path, first_line: &str) -> u8 {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    match ext.as_deref() {
        Some("tsv") => b'\t',
        Some("csv") => b',',
        _ if first_line.contains('\t') => b'\t',
        _ if first_line.contains(',') => b',',
        _ => b' ',
    }
}

/// A row's label: a class number, or a key or name in `classes`. `None` when it is neither.
fn parse_label(text: &str, classes: Option<&ClassList>) -> Option<i128> {
    text.parse::<i128>()
        .ok()
        .or_else(|| classes.and_then(|c| c.lookup(text)).map(|l| l as i128))
}

/// Parses the bytes of a list called `name` (for messages), fields separated by `delimiter`,
/// into `(path as written, label)` rows, every label checked against the model's
/// `model_classes` classes.
pub fn parse_path_list(
    bytes: &[u8],
    delimiter: u8,
    name: &str,
    classes: Option<&ClassList>,
    model_classes: usize,
) -> Result<Vec<(String, usize)>, DataError> {
    // Spreadsheets often start a UTF-8 file with a byte-order mark: not part of the first path.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| DataError::Row {
            path: name.into(),
            line: e.position().map_or(0, csv::Position::line),
            reason: e.to_string(),
        })?;
        let line = record.position().map_or(i as u64 + 1, csv::Position::line);
        let row_error = |reason: String| DataError::Row {
            path: name.into(),
            line,
            reason,
        };
        // Spaces may repeat between the fields of a `.txt` list.
        let fields: Vec<&str> = record.iter().filter(|f| !f.is_empty()).collect();
        let (path, label) = match fields.as_slice() {
            [path, label, ..] => (*path, *label),
            _ => {
                return Err(row_error(format!(
                    "expected a path and a label separated by {:?}, found {:?}",
                    char::from(delimiter),
                    record
                        .iter()
                        .collect::<Vec<_>>()
                        .join(&char::from(delimiter).to_string())
                )));
            }
        };
        let Some(value) = parse_label(label, classes) else {
            if i == 0 {
                continue; // a header
            }
            return Err(row_error(match classes {
                Some(_) => format!(
                    "label {label:?} is neither a class number nor a class of the class file"
                ),
                None => format!(
                    "label {label:?} is not a class number; pass --classes FILE to label rows \
                     by class name"
                ),
            }));
        };
        match usize::try_from(value) {
            Ok(label) if label < model_classes => rows.push((path.to_string(), label)),
            _ => {
                return Err(DataError::LabelRange {
                    place: format!("{name} line {line}"),
                    label: value,
                    classes: model_classes,
                });
            }
        }
    }
    Ok(rows)
}

/// Opens the list at `path`: at most its first `n` rows, labels checked against the model's
/// `model_classes` classes.
pub fn open_path_list(
    path: &Path,
    classes: Option<&ClassList>,
    model_classes: usize,
    eval_resize: Option<usize>,
    n: Option<usize>,
) -> Result<ImageFiles, DataError> {
    let shown = path.display().to_string();
    let bytes = crate::io::read_limited(path, MAX_LIST_BYTES).map_err(|source| DataError::Io {
        path: shown.clone(),
        source,
    })?;
    let first_line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let delimiter = delimiter(path, &String::from_utf8_lossy(first_line));
    let mut rows = parse_path_list(&bytes, delimiter, &shown, classes, model_classes)?;
    if let Some(n) = n {
        rows.truncate(n);
    }
    if rows.is_empty() {
        return Err(DataError::Empty {
            what: shown,
            hint: "; each row is `path,label`".into(),
        });
    }
    let base = path.parent().unwrap_or(Path::new(""));
    let (files, labels): (Vec<PathBuf>, Vec<usize>) =
        rows.into_iter().map(|(p, l)| (base.join(p), l)).unzip();
    if let Some(first) = files.first()
        && files.iter().take(CHECKED_FILES).all(|f| !f.exists())
    {
        return Err(DataError::Missing {
            list: shown,
            checked: files.len().min(CHECKED_FILES),
            first: first.display().to_string(),
            base: if base.as_os_str().is_empty() {
                ".".into()
            } else {
                base.display().to_string()
            },
        });
    }
    let description = format!("path list {shown} ({} images)", files.len());
    Ok(ImageFiles::new(files, labels, eval_resize, description))
}
