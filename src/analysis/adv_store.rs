//! `eval --save-adv DIR` and `eval --adv-from DIR`: adversarial images kept losslessly for
//! transfer (black-box) evaluation. `DIR/manifest.json` names the model, data and attack
//! settings; each setting has a folder of `.npz` archives, one per batch, holding `x` (the
//! adversarial images, float32 NCHW in [0, 1], exactly as the attack returned them), `y` (labels)
//! and `index` (data-set indices), the last two stored as float32 (exact below 2²⁴). Shards and
//! resumed runs write disjoint archives into the same folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::eval::EvalSource;
use super::eval_loop::{BatchOutcome, EvalError, EvalSink};
use crate::array::Array;
use crate::data::Labelled;
use crate::model::npz;

/// The manifest's name inside a store.
const MANIFEST: &str = "manifest.json";

/// What a store holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdvManifest {
    /// The model and data the images were crafted on.
    pub source: EvalSource,
    /// One entry per attack setting: its heading (`pgd-10 ε=0.1`) and folder name.
    pub attacks: Vec<(String, String)>,
}

/// Why a store cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum AdvStoreError {
    /// Reading or writing failed.
    #[error("{path}: {message}")]
    Io {
        /// The file or folder.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The store was made by a different run.
    #[error("{path} holds images from another run ({reason}); pass another --save-adv folder")]
    Mismatch {
        /// The manifest.
        path: String,
        /// What differs.
        reason: String,
    },
}

fn io(path: &Path, e: impl ToString) -> AdvStoreError {
    AdvStoreError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// A folder name for an attack heading: `pgd-10 ε=0.1` → `pgd-10_eps0.1`.
pub fn attack_slug(heading: &str) -> String {
    heading
        .replace('ε', "eps")
        .chars()
        .filter_map(|c| match c {
            '=' => None,
            c if c.is_ascii_alphanumeric() || c == '-' || c == '.' => Some(c),
            _ => Some('_'),
        })
        .collect()
}

/// Writes each batch's adversarial images into a store.
pub struct AdvStore {
    dir: PathBuf,
    slugs: Vec<String>,
}

impl AdvStore {
    /// Creates (or reopens, for a shard or a resumed run of the same evaluation) the store in
    /// `dir` for attack settings with `headings`.
    pub fn create(
        dir: &Path,
        source: &EvalSource,
        headings: &[String],
    ) -> Result<Self, AdvStoreError> {
        let mut source = source.clone();
        source.shard = None;
        let manifest = AdvManifest {
            source,
            attacks: headings
                .iter()
                .map(|h| (h.clone(), attack_slug(h)))
                .collect(),
        };
        let path = dir.join(MANIFEST);
        if path.exists() {
            let old = read_manifest(dir)?;
            if old != manifest {
                return Err(AdvStoreError::Mismatch {
                    path: path.display().to_string(),
                    reason: format!(
                        "{} on {} with {}",
                        old.source.model,
                        old.source.data,
                        old.attacks
                            .iter()
                            .map(|(h, _)| h.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
        for (_, slug) in &manifest.attacks {
            let sub = dir.join(slug);
            std::fs::create_dir_all(&sub).map_err(|e| io(&sub, e))?;
        }
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| io(&path, e))?;
        crate::io::write_atomic(&path, &json).map_err(|e| io(&path, e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            slugs: manifest.attacks.into_iter().map(|(_, s)| s).collect(),
        })
    }
}

/// Indices or labels as a float32 vector (exact below 2²⁴).
fn as_floats(v: &[usize]) -> Result<Array, EvalError> {
    Array::new(vec![v.len()], v.iter().map(|&i| i as f32).collect())
        .map_err(|e| EvalError::Output(e.to_string()))
}

impl EvalSink for AdvStore {
    fn batch(&mut self, outcome: &BatchOutcome<'_>) -> Result<(), EvalError> {
        let Some(&first) = outcome.batch.indices.first() else {
            return Ok(());
        };
        for (slug, x) in self.slugs.iter().zip(outcome.adversarial) {
            let path = self.dir.join(slug).join(format!("batch-{first:09}.npz"));
            let bytes = npz::write_npz(
                &[
                    ("x".into(), x.clone()),
                    ("y".into(), as_floats(&outcome.batch.labels)?),
                    ("index".into(), as_floats(&outcome.batch.indices)?),
                ],
                true,
            );
            crate::io::write_atomic(&path, &bytes)
                .map_err(|e| EvalError::Output(io(&path, e).to_string()))?;
        }
        Ok(())
    }
}

/// Reads a store's manifest.
pub fn read_manifest(dir: &Path) -> Result<AdvManifest, AdvStoreError> {
    let path = dir.join(MANIFEST);
    let bytes = std::fs::read(&path).map_err(|e| {
        io(
            &path,
            format!(
                "{e}: is {} a folder written by eval --save-adv?",
                dir.display()
            ),
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| io(&path, e))
}

/// The adversarial images of one attack setting in a store, in data-set order.
pub struct AdvSet {
    /// The attack setting's heading.
    pub heading: String,
    /// Their data-set indices.
    pub indices: Vec<usize>,
    /// The images and their labels.
    pub set: Labelled,
}

/// Reads every attack setting's images from a store (duplicates from a batch written twice are
/// read once).
pub fn load_adversarial(dir: &Path) -> Result<(AdvManifest, Vec<AdvSet>), AdvStoreError> {
    let manifest = read_manifest(dir)?;
    let mut sets = Vec::new();
    for (heading, slug) in &manifest.attacks {
        let sub = dir.join(slug);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&sub)
            .map_err(|e| io(&sub, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "npz"))
            .collect();
        files.sort();
        let mut by_index: BTreeMap<usize, (Array, usize)> = BTreeMap::new();
        for f in &files {
            let arrays = npz::read_npz(f).map_err(|e| io(f, e))?;
            let get = |k: &str| {
                arrays
                    .get(k)
                    .ok_or_else(|| io(f, format!("no array `{k}` in the archive")))
            };
            let (x, y, index) = (get("x")?, get("y")?, get("index")?);
            if x.shape().len() != 4 || y.len() != x.batch() || index.len() != x.batch() {
                return Err(io(f, "x, y and index do not agree in length"));
            }
            for i in 0..x.batch() {
                let (yi, ii) = (y.data()[i], index.data()[i]);
                if !(yi >= 0.0 && ii >= 0.0 && yi.fract() == 0.0 && ii.fract() == 0.0) {
                    return Err(io(f, "labels and indices must be whole numbers"));
                }
                by_index.insert(ii as usize, (x.select(&[i]), yi as usize));
            }
        }
        let indices: Vec<usize> = by_index.keys().copied().collect();
        let (images, labels): (Vec<Array>, Vec<usize>) = by_index.into_values().unzip();
        if images.is_empty() {
            return Err(io(&sub, "no adversarial images saved here yet"));
        }
        let images = Array::concat(&images).map_err(|e| io(&sub, e))?;
        sets.push(AdvSet {
            heading: heading.clone(),
            indices,
            set: Labelled { images, labels },
        });
    }
    Ok((manifest, sets))
}
