//! An image folder in the ImageFolder layout: one sub-folder per class (`DIR/CLASS/IMAGE.jpg`,
//! images may sit in further sub-folders). A class's label is its line in the class file when
//! there is one (ImageNet's validation set sorted into synset folders maps through the model's
//! list of WordNet IDs), the folder's number when every class folder is named by one (`0`, `1`,
//! ... `10`), and else its place among the sorted folder names. Examples are ordered by label,
//! then by path; hidden files and folders (`.name`) and files without an image extension are
//! skipped.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::{ClassList, DataError, ImageFiles};

/// The file extensions read as images (compared without case). TIFF and PNM decode; the
/// others in the list that advlens cannot decode are listed as unreadable, not skipped.
pub const IMAGE_EXTENSIONS: [&str; 13] = [
    "png", "jpg", "jpeg", "jpe", "bmp", "gif", "webp", "tif", "tiff", "ppm", "pgm", "pbm", "pnm",
];

/// How deep images may sit below their class folder (a guard against symbolic-link loops).
const MAX_DEPTH: usize = 8;

/// Whether a file name has an image extension.
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(OsStr::to_str)
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn is_hidden(name: &OsStr) -> bool {
    name.to_string_lossy().starts_with('.')
}

/// The entries of `dir` that are not hidden, sorted by name, each with whether it is a folder
/// (following symbolic links).
fn entries(dir: &Path) -> Result<Vec<(PathBuf, bool)>, DataError> {
    let io = |source| DataError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if is_hidden(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        // A broken link is a file: it is listed, and reported unreadable when loaded.
        let is_dir = std::fs::metadata(&path).is_ok_and(|m| m.is_dir());
        out.push((path, is_dir));
    }
    out.sort();
    Ok(out)
}

/// Image files below `dir`, sorted by path; counts the other files in `skipped`.
fn images_below(
    dir: &Path,
    depth: usize,
    out: &mut Vec<PathBuf>,
    skipped: &mut usize,
) -> Result<(), DataError> {
    for (path, is_dir) in entries(dir)? {
        if is_dir {
            if depth < MAX_DEPTH {
                images_below(&path, depth + 1, out, skipped)?;
            }
        } else if is_image_file(&path) {
            out.push(path);
        } else {
            *skipped += 1;
        }
    }
    Ok(())
}

/// Whether a name is a WordNet ID (`n01440764`), ImageNet's class folder name.
fn is_synset(name: &str) -> bool {
    name.len() == 9 && name.starts_with('n') && name[1..].bytes().all(|b| b.is_ascii_digit())
}

/// The label of each class folder name, in the order given.
fn labels(
    dir: &Path,
    names: &[String],
    classes: Option<(&ClassList, &Path)>,
    model_classes: usize,
) -> Result<Vec<usize>, DataError> {
    let shown = dir.display().to_string();
    if let Some((list, file)) = classes {
        let unknown: Vec<&String> = names.iter().filter(|n| list.by_key(n).is_none()).collect();
        if !unknown.is_empty() {
            return Err(DataError::UnknownFolders {
                dir: shown,
                classes: file.display().to_string(),
                examples: unknown.iter().take(5).map(|s| (*s).clone()).collect(),
                count: unknown.len(),
            });
        }
        return Ok(names.iter().filter_map(|n| list.by_key(n)).collect());
    }
    let numbers: Option<Vec<usize>> = names.iter().map(|n| n.parse().ok()).collect();
    if let Some(numbers) = numbers {
        if let Some((name, &label)) = names
            .iter()
            .zip(&numbers)
            .find(|&(_, &l)| l >= model_classes)
        {
            return Err(DataError::LabelRange {
                place: format!("{}/{name}", shown.trim_end_matches('/')),
                label: label as i128,
                classes: model_classes,
            });
        }
        return Ok(numbers);
    }
    if names.len() > model_classes {
        return Err(DataError::TooManyClasses {
            what: format!("image folder {shown}"),
            found: names.len(),
            model: model_classes,
            hint: "; each sub-folder is a class".into(),
        });
    }
    if names.len() < model_classes
        && let Some(first) = names.first().filter(|_| names.iter().all(|n| is_synset(n)))
    {
        return Err(DataError::UnmappedSynsets {
            dir: shown,
            first: first.clone(),
            found: names.len(),
            model: model_classes,
        });
    }
    Ok((0..names.len()).collect())
}

/// Lists the image folder `dir`: its files and their labels, for a model of `model_classes`
/// classes, with the class file `classes` (its contents and path) when there is one, at most
/// the first `n` examples.
pub fn open_image_folder(
    dir: &Path,
    classes: Option<(&ClassList, &Path)>,
    model_classes: usize,
    eval_resize: Option<usize>,
    n: Option<usize>,
) -> Result<ImageFiles, DataError> {
    let shown = dir.display().to_string();
    let (folders, loose): (Vec<_>, Vec<_>) =
        entries(dir)?.into_iter().partition(|(_, is_dir)| *is_dir);
    let folders: Vec<PathBuf> = folders.into_iter().map(|(p, _)| p).collect();
    if folders.is_empty() {
        return Err(DataError::NoClassFolders { dir: shown });
    }
    let names: Vec<String> = folders
        .iter()
        .map(|p| {
            p.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        })
        .collect();
    let labels = labels(dir, &names, classes, model_classes)?;
    let mut order: Vec<(usize, &PathBuf)> = labels.iter().copied().zip(&folders).collect();
    order.sort();
    let mut files = Vec::new();
    let mut file_labels = Vec::new();
    // Files beside the class folders belong to no class.
    let mut skipped = loose.len();
    for (label, folder) in order {
        let before = files.len();
        images_below(folder, 0, &mut files, &mut skipped)?;
        file_labels.resize(files.len().max(before), label);
        if n.is_some_and(|n| files.len() >= n) {
            break;
        }
    }
    if let Some(n) = n {
        files.truncate(n);
        file_labels.truncate(n);
    }
    if files.is_empty() {
        return Err(DataError::Empty {
            what: format!("image folder {shown}"),
            hint: format!(
                "; images need one of the extensions {}",
                IMAGE_EXTENSIONS.join(", ")
            ),
        });
    }
    let skipped_text = if skipped > 0 {
        format!(", {skipped} other files skipped")
    } else {
        String::new()
    };
    let description = format!(
        "image folder {shown} ({} images, {} classes{skipped_text})",
        files.len(),
        folders.len(),
    );
    Ok(ImageFiles::new(
        files,
        file_labels,
        eval_resize,
        description,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_extensions_and_synsets() {
        assert!(is_image_file(Path::new("a/b.JPEG")));
        assert!(is_image_file(Path::new("x.tiff")));
        assert!(!is_image_file(Path::new("notes.txt")));
        assert!(!is_image_file(Path::new("jpg")));
        assert!(is_synset("n01440764"));
        assert!(!is_synset("n0144076"));
        assert!(!is_synset("cat"));
    }
}
