//! `eval --per-image FILE.jsonl`: one line per image and attack setting, and beside it
//! `FILE.batches.jsonl`, a header and one line per complete batch with everything the batch added
//! to the report. An interrupted run (Ctrl-C, a killed or preempted job) started again with the
//! same file resumes: finished batches are read back, lines of a batch that never completed are
//! dropped, and only the remaining images are evaluated.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::batch_line::BatchLine;
use super::eval::EvalSource;
use super::eval_loop::{BatchOutcome, EvalError, EvalSink};
use crate::attack::AttackConfig;
use crate::defense::Defense;

/// Version of the batch file's layout.
const FORMAT: u32 = 1;

/// What a per-image file belongs to: a run resumes a file only when these agree.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogHeader {
    /// Layout version.
    pub format: u32,
    /// Model, data and shard.
    pub source: EvalSource,
    /// The attack settings, in row order.
    pub attacks: Vec<AttackConfig>,
    /// The defence, if any.
    pub defense: Option<Defense>,
    /// Draws of a random defence each accuracy is re-predicted under.
    pub defense_draws: usize,
}

impl LogHeader {
    /// The header of a run.
    pub fn new(
        source: EvalSource,
        attacks: Vec<AttackConfig>,
        defense: Option<Defense>,
        defense_draws: usize,
    ) -> Self {
        Self {
            format: FORMAT,
            source,
            attacks,
            defense,
            defense_draws,
        }
    }
}

/// Why a per-image file cannot be written or resumed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file belongs to a different evaluation.
    #[error(
        "{path} was written by a different evaluation ({fields} differ): pass another \
         --per-image file, or delete it and its .batches.jsonl to start over"
    )]
    Mismatch {
        /// The batch file.
        path: String,
        /// The header fields that differ.
        fields: String,
    },
    /// A line in the middle of the batch file is not valid.
    #[error("{path}, line {line}: {error}; the file is damaged, delete it to start over")]
    Corrupt {
        /// The batch file.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        error: String,
    },
    /// A per-image file exists without the batch file a resume needs.
    #[error(
        "{path} exists but {batches} does not, so it cannot be resumed: delete it or pass \
         another --per-image file"
    )]
    Orphan {
        /// The per-image file.
        path: String,
        /// The missing batch file.
        batches: String,
    },
}

/// The batch file beside a per-image file: `x.jsonl` → `x.batches.jsonl`.
pub fn batches_path(per_image: &Path) -> PathBuf {
    let name = per_image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".jsonl").unwrap_or(&name);
    per_image.with_file_name(format!("{stem}.batches.jsonl"))
}

/// The open per-image and batch files of a run.
pub struct EvalLog {
    per_image: File,
    batches: File,
    path: PathBuf,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The lines of a file, the last one dropped when it does not end in a newline (a write cut
/// short).
fn complete_lines(path: &Path) -> Result<Vec<String>, LogError> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut lines = Vec::new();
    let mut reader = BufReader::new(file);
    let mut buf = String::new();
    loop {
        buf.clear();
        let n = reader.read_line(&mut buf).map_err(io_error(path))?;
        if n == 0 || !buf.ends_with('\n') {
            break;
        }
        lines.push(buf.trim_end().to_string());
    }
    Ok(lines)
}

/// The top-level fields where two headers differ.
fn differing_fields(a: &serde_json::Value, b: &serde_json::Value) -> String {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return "everything".into();
    };
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let differ: Vec<&str> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(String::as_str)
        .collect();
    differ.join(", ")
}

/// Reads the batch lines of an earlier run with `header`.
fn read_batches(path: &Path, header: &serde_json::Value) -> Result<Vec<BatchLine>, LogError> {
    let lines = complete_lines(path)?;
    let corrupt = |line: usize, error: String| LogError::Corrupt {
        path: path.display().to_string(),
        line,
        error,
    };
    let Some(first) = lines.first() else {
        return Ok(vec![]);
    };
    let on_disk: serde_json::Value =
        serde_json::from_str(first).map_err(|e| corrupt(1, format!("header: {e}")))?;
    if &on_disk != header {
        return Err(LogError::Mismatch {
            path: path.display().to_string(),
            fields: differing_fields(&on_disk, header),
        });
    }
    lines[1..]
        .iter()
        .enumerate()
        .map(|(k, l)| serde_json::from_str(l).map_err(|e| corrupt(k + 2, e.to_string())))
        .collect()
}

/// Rewrites `path` with `lines` (atomically), so that appending continues after them.
fn rewrite(path: &Path, lines: &[String]) -> Result<(), LogError> {
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    crate::io::write_atomic(path, text.as_bytes()).map_err(io_error(path))
}

impl EvalLog {
    /// Opens `per_image` for a run described by `header`, creating it or resuming it. Returns the
    /// log and the batch lines of the earlier run (empty for a new file).
    pub fn open(per_image: &Path, header: &LogHeader) -> Result<(Self, Vec<BatchLine>), LogError> {
        let batches_file = batches_path(per_image);
        let header_value = serde_json::to_value(header).map_err(|e| LogError::Corrupt {
            path: batches_file.display().to_string(),
            line: 1,
            error: e.to_string(),
        })?;
        let resumed = if batches_file.exists() {
            read_batches(&batches_file, &header_value)?
        } else {
            let has_lines = std::fs::metadata(per_image).is_ok_and(|m| m.len() > 0);
            if has_lines {
                return Err(LogError::Orphan {
                    path: per_image.display().to_string(),
                    batches: batches_file.display().to_string(),
                });
            }
            vec![]
        };
        let done: BTreeSet<usize> = resumed.iter().flat_map(BatchLine::done).collect();
        let kept = if per_image.exists() {
            complete_lines(per_image)?
                .into_iter()
                .filter(|l| {
                    serde_json::from_str::<serde_json::Value>(l)
                        .ok()
                        .and_then(|v| v.get("index").and_then(serde_json::Value::as_u64))
                        .is_some_and(|i| done.contains(&(i as usize)))
                })
                .collect()
        } else {
            vec![]
        };
        rewrite(per_image, &kept)?;
        let mut batch_lines = vec![header_value.to_string()];
        for line in &resumed {
            batch_lines.push(serde_json::to_string(line).unwrap_or_default());
        }
        rewrite(&batches_file, &batch_lines)?;
        let append = |p: &Path| OpenOptions::new().append(true).open(p).map_err(io_error(p));
        Ok((
            Self {
                per_image: append(per_image)?,
                batches: append(&batches_file)?,
                path: per_image.to_path_buf(),
            },
            resumed,
        ))
    }

    /// Appends one batch: its per-image lines first, then (once they are on disk) the batch
    /// line that makes them count on resume.
    fn append(&mut self, outcome: &BatchOutcome<'_>) -> Result<(), LogError> {
        let path = self.path.clone();
        let mut text = String::new();
        for r in outcome.records {
            text.push_str(&serde_json::to_string(r).unwrap_or_default());
            text.push('\n');
        }
        self.per_image
            .write_all(text.as_bytes())
            .and_then(|()| self.per_image.sync_data())
            .map_err(io_error(&path))?;
        let batches = batches_path(&path);
        let mut line = serde_json::to_string(outcome.line).unwrap_or_default();
        line.push('\n');
        self.batches
            .write_all(line.as_bytes())
            .and_then(|()| self.batches.sync_data())
            .map_err(io_error(&batches))
    }
}

impl EvalSink for EvalLog {
    fn batch(&mut self, outcome: &BatchOutcome<'_>) -> Result<(), EvalError> {
        self.append(outcome)
            .map_err(|e| EvalError::Output(e.to_string()))
    }
}
