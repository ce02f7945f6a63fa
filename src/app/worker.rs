//! The background worker: a named [`Task`] that owns the engine, runs one attack-and-analyse job
//! at a time and sends an immutable [`Snapshot`] back. When several jobs are queued only the
//! newest runs (stale ones are dropped), and submitting a job cancels the one that is running.
//! The slow jobs ([`AnalyseJob::is_slow`]: Square, AutoAttack, EOT over a random defence) report
//! their progress as they go, and a job the worker stopped part-way says so
//! ([`Reply::Cancelled`]). Files (images and models) are read on the loader thread
//! ([`super::loader`]), so a long attack never delays them.
//!
//! The engine always runs behind the job's defence ([`Defended`]; an empty chain passes every
//! call straight through). Its draws restart with every job and again before the views' forward
//! passes, so a random defence shows the same view of the clean image for every ε until its seed
//! changes (the "Redraw" button), however many passes the attack took.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::task::{Replier, Stopped, Task, Waker};
use crate::analysis::{AnalyseJob, Snapshot, analyse_result, attack_job};
use crate::attack::{AttackError, DiagnoseOptions, Progress, diagnose};
use crate::cancel::Cancel;
use crate::engine::Opened;
use crate::engine::gpu::GpuContext;
use crate::engine::{Defended, EngineChoice, open_engine};
use crate::model::Network;

/// Name of the worker thread.
pub const WORKER_THREAD: &str = "advlens-worker";

/// What the worker sends back.
pub enum Reply {
    /// A job finished.
    Analysed(Box<Snapshot>),
    /// A job failed (a cancelled job sends [`Reply::Cancelled`] instead).
    Failed {
        /// The job's id.
        id: u64,
        /// What went wrong.
        error: String,
    },
    /// Something the user should know that is not a failure (e.g. a GPU fallback).
    Notice(String),
    /// How far a slow job has got (sent only for [`AnalyseJob::is_slow`] jobs, at most every
    /// [`PROGRESS_STEP`] of the run or when the stage changes).
    Progress {
        /// The job's id.
        id: u64,
        /// The attack (or AutoAttack's component) running now.
        stage: &'static str,
        /// Fraction of the whole job done, in [0, 1].
        done: f32,
    },
    /// The worker stopped job `id` part-way because it was cancelled (jobs dropped before they
    /// started send nothing): the worker is free again.
    Cancelled {
        /// The job's id.
        id: u64,
    },
}

/// The smallest change of [`Reply::Progress::done`] worth a message (and a repaint).
pub const PROGRESS_STEP: f32 = 0.005;

enum Request {
    Analyse(Box<AnalyseJob>),
    SetGpu(Box<GpuContext>),
}

/// The handle the app keeps: submit jobs, poll replies. Dropping it cancels the running job; the
/// thread ends on its own (it is not joined).
pub struct Worker {
    task: Task<Request, Reply>,
    running: Option<Cancel>,
}

impl Worker {
    /// Starts the worker thread. `wake` is called after every reply.
    pub fn start(wake: Waker) -> std::io::Result<Self> {
        let mut state = WorkerState::default();
        let task = Task::spawn(WORKER_THREAD, wake, move |batch, reply| {
            state.handle(batch, reply)
        })?;
        Ok(Self {
            task,
            running: None,
        })
    }

    /// Queues `job`, cancelling the previously submitted one.
    pub fn submit(&mut self, job: AnalyseJob) {
        if let Some(old) = self.running.replace(job.cancel.clone()) {
            old.cancel();
        }
        self.task.send(Request::Analyse(Box::new(job)));
    }

    /// Cancels the submitted job; the worker stops it at its next step and replies
    /// [`Reply::Cancelled`] (nothing when it had not started it yet).
    pub fn cancel_running(&mut self) {
        if let Some(c) = self.running.take() {
            c.cancel();
        }
    }

    /// Gives the worker the device the window renders with, for the gpu engine.
    pub fn set_gpu(&mut self, ctx: GpuContext) {
        self.task.send(Request::SetGpu(Box::new(ctx)));
    }

    /// Every reply waiting, and whether the thread has stopped.
    pub fn drain(&self) -> (Vec<Reply>, Option<Stopped>) {
        self.task.drain()
    }

    /// Jobs waiting behind the running one (the soak test checks this stays small).
    pub fn queued(&self) -> usize {
        self.task.queued()
    }

    /// Waits up to `timeout` for the next reply (tests and headless use).
    pub fn wait(&self, timeout: Duration) -> Option<Reply> {
        self.task.wait(timeout).ok().flatten()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(c) = &self.running {
            c.cancel();
        }
    }
}

/// The engine the worker keeps between jobs, rebuilt when the network or the choice changes;
/// each job sets its own defence in front of it.
struct EngineCache {
    net: Arc<Network>,
    choice: EngineChoice,
    engine: Defended,
}

/// What lives on the worker thread between batches.
#[derive(Default)]
struct WorkerState {
    cache: Option<EngineCache>,
    gpu: Option<GpuContext>,
}

impl WorkerState {
    /// Runs the newest analyse job of `batch` after applying any new device.
    fn handle(&mut self, batch: Vec<Request>, reply: &Replier<Reply>) -> bool {
        let mut newest = None;
        for req in batch {
            match req {
                Request::Analyse(job) => newest = Some(job),
                Request::SetGpu(ctx) => {
                    self.gpu = Some(*ctx);
                    self.cache = None;
                }
            }
        }
        let Some(job) = newest else { return true };
        if job.cancel.is_cancelled() {
            return reply.send(Reply::Cancelled { id: job.id });
        }
        let (engine, notice) = self.engine_for(&job.net, job.engine);
        if let Some(n) = notice
            && !reply.send(Reply::Notice(n))
        {
            return false;
        }
        let engine = engine.and_then(|e| {
            // A defence that does not fit the model fails this job only (the app checks it
            // before submitting, so this is the last line of defence).
            e.set_defense(job.defense.clone())
                .map_err(|err| format!("cannot put the defence in front of the model: {err}"))?;
            Ok(e)
        });
        let result = match engine {
            Ok(engine) => match run_job(engine, &job, reply) {
                Ok(s) => Some(Reply::Analysed(Box::new(s))),
                Err(AttackError::Cancelled) => Some(Reply::Cancelled { id: job.id }),
                Err(e) => Some(Reply::Failed {
                    id: job.id,
                    error: e.to_string(),
                }),
            },
            Err(error) => Some(Reply::Failed { id: job.id, error }),
        };
        result.is_none_or(|r| reply.send(r))
    }

    /// The engine for `net` and `choice` (the policy of [`open_engine`], on the window's device),
    /// reusing the cached one when it matches, and a notice when the choice could not be honoured.
    fn engine_for(
        &mut self,
        net: &Arc<Network>,
        choice: EngineChoice,
    ) -> (Result<&mut Defended, String>, Option<String>) {
        let stale = self
            .cache
            .as_ref()
            .is_none_or(|c| !Arc::ptr_eq(&c.net, net) || c.choice != choice);
        let mut notice = None;
        if stale {
            self.cache = None;
            match open_engine(net.clone(), choice, self.gpu.as_ref()) {
                Ok(Opened { engine, notice: n }) => {
                    notice = n;
                    match Defended::new(engine, crate::defense::Defense::default()) {
                        Ok(engine) => {
                            self.cache = Some(EngineCache {
                                net: net.clone(),
                                choice,
                                engine,
                            });
                        }
                        Err(e) => return (Err(format!("cannot open the engine: {e}")), notice),
                    }
                }
                Err(e) => {
                    let error = format!("cannot open the {choice} engine: {e}");
                    return (Err(error), None);
                }
            }
        }
        match &mut self.cache {
            Some(c) => (Ok(&mut c.engine), notice),
            None => (Err("no engine".into()), notice),
        }
    }
}

/// The attack of `job` (forwarding the progress of a slow job), then the analysis of its
/// result, on `engine` with the job's defence already set.
fn run_job(
    engine: &mut Defended,
    job: &AnalyseJob,
    reply: &Replier<Reply>,
) -> Result<Snapshot, AttackError> {
    let started = Instant::now();
    let last: Cell<Option<(&'static str, f32)>> = Cell::new(None);
    let slow = job.is_slow();
    let progress = |p: Progress| {
        let due = last
            .get()
            .is_none_or(|(stage, done)| stage != p.stage || p.done - done >= PROGRESS_STEP);
        if slow && due {
            last.set(Some((p.stage, p.done)));
            reply.send(Reply::Progress {
                id: job.id,
                stage: p.stage,
                done: p.done,
            });
        }
    };
    engine.restart_draws();
    let mut result = attack_job(engine, job, &progress)?;
    job.cancel.check()?;
    // The cheap checks only (no unbounded re-run), so a live slider stays live; the panel shows
    // `Snapshot::diagnostics`.
    let checks = DiagnoseOptions {
        unbounded: None,
        cancel: job.cancel.clone(),
        ..DiagnoseOptions::default()
    };
    result.diagnostics = diagnose(engine, &job.x, &result, &job.cfg, &checks)?;
    // The views' passes draw from the start again: what they show of the clean image depends
    // on the seed only, not on how many passes the attack and its checks took.
    engine.restart_draws();
    analyse_result(engine, job, result, started)
}
