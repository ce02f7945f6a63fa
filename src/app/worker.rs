//! The background worker: a named thread that owns the engine, runs one attack-and-analyse job at a
//! time and sends an immutable [`Snapshot`] back. Jobs arrive over a channel; when several are
//! queued only the newest runs (stale ones are dropped), and submitting a job cancels the one that
//! is running. Files (images and models) are read on the loader thread ([`super::loader`]), so a
//! long attack never delays them.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::array::Array;
use crate::attack::report::{RunRecord, image_records};
use crate::attack::{AttackConfig, AttackError, Cancel};
use crate::engine::cpu::CpuEngine;
use crate::engine::gpu::{GpuContext, GpuEngine};
use crate::engine::{Engine, EngineChoice, ForwardOptions, TapSelection};
use crate::model::Network;
use crate::model::graph::TapKind;

/// Called by the worker whenever a reply is ready (the app passes `ctx.request_repaint`).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// One attack-and-analyse request.
#[derive(Clone)]
pub struct AnalyseJob {
    /// Increasing id; replies carry it.
    pub id: u64,
    /// The network.
    pub net: Arc<Network>,
    /// Where the model came from (for the record).
    pub model_name: String,
    /// The image `[1, C, H, W]` in [0, 1], already in the model's input shape.
    pub x: Arc<Array>,
    /// The true label, when known (bundled images).
    pub label: Option<usize>,
    /// Where the image came from (for the record).
    pub source: String,
    /// The attack.
    pub cfg: AttackConfig,
    /// The engine to run it on.
    pub engine: EngineChoice,
    /// Cancels this job.
    pub cancel: Cancel,
}

/// One tap of the network, clean and adversarial.
#[derive(Clone, Debug)]
pub struct TapPair {
    /// Tap name.
    pub name: String,
    /// What it shows.
    pub kind: TapKind,
    /// Clean activation, as the engine returned it (`[1, C, H, W]` or `[1, F]`).
    pub clean: Array,
    /// Adversarial activation, same shape.
    pub adv: Array,
    /// ||A(x_adv) − A(x)|| / ||A(x)||.
    pub amplification: f32,
}

impl TapPair {
    /// `[C, H, W]` for spatial taps, `None` for flat ones (logits).
    pub fn chw(&self) -> Option<[usize; 3]> {
        match self.clean.shape() {
            &[_, c, h, w] => Some([c, h, w]),
            _ => None,
        }
    }
}

/// Everything the views show for one job: immutable once built.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The job's id.
    pub id: u64,
    /// The attack that produced it.
    pub cfg: AttackConfig,
    /// The clean image `[1, C, H, W]`.
    pub x: Arc<Array>,
    /// The adversarial image, same shape.
    pub x_adv: Array,
    /// Every tap in network order.
    pub taps: Vec<TapPair>,
    /// The record, in the format `advlens attack` writes.
    pub record: RunRecord,
    /// Wall time of the job, milliseconds.
    pub elapsed_ms: f64,
}

impl Snapshot {
    /// The tap called `name`.
    pub fn tap(&self, name: &str) -> Option<&TapPair> {
        self.taps.iter().find(|t| t.name == name)
    }

    /// The perturbation `x_adv − x`.
    pub fn delta(&self) -> Vec<f32> {
        self.x_adv
            .data()
            .iter()
            .zip(self.x.data())
            .map(|(a, b)| a - b)
            .collect()
    }
}

/// What the worker sends back.
pub enum Reply {
    /// A job finished.
    Analysed(Box<Snapshot>),
    /// A job failed (cancelled jobs send nothing).
    Failed {
        /// The job's id.
        id: u64,
        /// What went wrong.
        error: String,
    },
    /// Something the user should know that is not a failure (e.g. a GPU fallback).
    Notice(String),
}

enum Request {
    Analyse(Box<AnalyseJob>),
    SetGpu(Box<GpuContext>),
}

/// The handle the app keeps: submit jobs, poll replies.
pub struct Worker {
    requests: Option<Sender<Request>>,
    replies: Receiver<Reply>,
    running: Option<Cancel>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the worker thread. `wake` is called after every reply.
    pub fn start(wake: Waker) -> std::io::Result<Self> {
        let (req_tx, req_rx) = channel();
        let (rep_tx, rep_rx) = channel();
        let thread = std::thread::Builder::new()
            .name("advlens-worker".into())
            .spawn(move || worker_loop(&req_rx, &rep_tx, &wake))?;
        Ok(Self {
            requests: Some(req_tx),
            replies: rep_rx,
            running: None,
            thread: Some(thread),
        })
    }

    /// Queues `job`, cancelling the previously submitted one.
    pub fn submit(&mut self, job: AnalyseJob) {
        if let Some(old) = self.running.replace(job.cancel.clone()) {
            old.cancel();
        }
        self.send(Request::Analyse(Box::new(job)));
    }

    /// Gives the worker the device the window renders with, for the gpu engine.
    pub fn set_gpu(&mut self, ctx: GpuContext) {
        self.send(Request::SetGpu(Box::new(ctx)));
    }

    fn send(&self, req: Request) {
        if let Some(tx) = &self.requests {
            // A send error means the thread has gone; `poll` reports that.
            let _ = tx.send(req);
        }
    }

    /// The next reply, if one is waiting. `Err` when the worker thread has stopped.
    pub fn poll(&self) -> Result<Option<Reply>, String> {
        match self.replies.try_recv() {
            Ok(r) => Ok(Some(r)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err("the worker thread stopped".into()),
        }
    }

    /// Waits up to `timeout` for the next reply (tests and headless use).
    pub fn wait(&self, timeout: std::time::Duration) -> Option<Reply> {
        self.replies.recv_timeout(timeout).ok()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(c) = &self.running {
            c.cancel();
        }
        self.requests = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The engine the worker keeps between jobs, rebuilt when the network or the choice changes.
struct EngineCache {
    net: Arc<Network>,
    choice: EngineChoice,
    engine: Box<dyn Engine>,
}

fn worker_loop(rx: &Receiver<Request>, tx: &Sender<Reply>, wake: &Waker) {
    let mut cache: Option<EngineCache> = None;
    let mut gpu: Option<GpuContext> = None;
    while let Ok(first) = rx.recv() {
        // Drain the queue: only the newest analyse job runs.
        let mut newest: Option<Box<AnalyseJob>> = None;
        let mut pending = vec![first];
        while let Ok(r) = rx.try_recv() {
            pending.push(r);
        }
        for req in pending {
            match req {
                Request::Analyse(job) => newest = Some(job),
                Request::SetGpu(ctx) => {
                    gpu = Some(*ctx);
                    cache = None;
                }
            }
        }
        let Some(job) = newest else { continue };
        if job.cancel.is_cancelled() {
            continue;
        }
        let (engine, notice) = engine_for(&mut cache, &job.net, job.engine, gpu.as_ref());
        if let Some(n) = notice {
            let _ = tx.send(Reply::Notice(n));
        }
        let reply = match engine {
            Ok(engine) => match analyse(engine, &job) {
                Ok(s) => Some(Reply::Analysed(Box::new(s))),
                Err(AttackError::Cancelled) => None,
                Err(e) => Some(Reply::Failed {
                    id: job.id,
                    error: e.to_string(),
                }),
            },
            Err(error) => Some(Reply::Failed { id: job.id, error }),
        };
        if let Some(r) = reply {
            if tx.send(r).is_err() {
                break;
            }
            wake();
        }
    }
}

/// The engine for `net` and `choice`, reusing the cached one when it matches, and a notice when
/// the choice could not be honoured.
fn engine_for<'a>(
    cache: &'a mut Option<EngineCache>,
    net: &Arc<Network>,
    choice: EngineChoice,
    gpu: Option<&GpuContext>,
) -> (Result<&'a mut dyn Engine, String>, Option<String>) {
    let stale = cache
        .as_ref()
        .is_none_or(|c| !Arc::ptr_eq(&c.net, net) || c.choice != choice);
    let mut notice = None;
    if stale {
        *cache = None;
        match open(net, choice, gpu) {
            Ok((engine, n)) => {
                notice = n;
                *cache = Some(EngineCache {
                    net: net.clone(),
                    choice,
                    engine,
                });
            }
            Err(e) => return (Err(e), None),
        }
    }
    match cache {
        Some(c) => (Ok(c.engine.as_mut()), notice),
        None => (Err("no engine".into()), notice),
    }
}

/// Opens the engine: `cpu`; `gpu` on the window's device (any adapter); `auto` on the window's
/// device when it is a hardware GPU, falling back to the cpu engine when the GPU fails. The
/// second value is a notice for the user when the choice could not be honoured.
pub fn open(
    net: &Arc<Network>,
    choice: EngineChoice,
    gpu: Option<&GpuContext>,
) -> Result<(Box<dyn Engine>, Option<String>), String> {
    let cpu = || -> Result<Box<dyn Engine>, String> {
        Ok(Box::new(
            CpuEngine::new(net.clone()).map_err(|e| e.to_string())?,
        ))
    };
    match (choice, gpu) {
        (EngineChoice::Cpu, _) => Ok((cpu()?, None)),
        (EngineChoice::Gpu, Some(ctx)) => match GpuEngine::new(net.clone(), ctx.clone()) {
            Ok(e) => Ok((Box::new(e), None)),
            Err(e) => Ok((
                cpu()?,
                Some(format!(
                    "the gpu engine could not start ({e}); using the cpu engine"
                )),
            )),
        },
        (EngineChoice::Gpu, None) => Ok((
            cpu()?,
            Some("the window has no wgpu device; using the cpu engine".into()),
        )),
        (EngineChoice::Auto, Some(ctx)) if !ctx.is_software() => {
            let opened = crate::engine::select::open_auto(net.clone(), Ok(ctx.clone()))
                .map_err(|e| e.to_string())?;
            Ok((opened.engine, opened.notice))
        }
        (EngineChoice::Auto, _) => Ok((cpu()?, None)),
    }
}

/// Runs the attack of `job` and the clean and adversarial forward passes with every tap.
pub fn analyse(engine: &mut dyn Engine, job: &AnalyseJob) -> Result<Snapshot, AttackError> {
    let t0 = Instant::now();
    let labels = job.label.map(|l| vec![l]);
    let result = crate::attack::run(engine, &job.x, labels.as_deref(), &job.cfg, &job.cancel)?;
    job.cancel.check()?;
    let opts = ForwardOptions {
        taps: TapSelection::All,
        bypass_denoise: job.cfg.bypass_denoise,
    };
    let clean = engine.forward(&job.x, &opts)?;
    let adv = engine.forward(&result.x_adv, &opts)?;
    let net = engine.network();
    let taps = clean
        .taps
        .into_iter()
        .zip(adv.taps)
        .map(|((name, c), (_, a))| {
            let kind = net.graph.tap(&name).map_or(TapKind::Block, |t| t.kind);
            let amplification = crate::analysis::amplification(&c, &a)
                .first()
                .copied()
                .unwrap_or(0.0);
            TapPair {
                name,
                kind,
                clean: c,
                adv: a,
                amplification,
            }
        })
        .collect();
    let images = image_records(
        net,
        &job.x,
        std::slice::from_ref(&job.source),
        &result,
        &clean.logits,
        &adv.logits,
    );
    let record = RunRecord {
        advlens_version: env!("CARGO_PKG_VERSION").into(),
        engine: engine.describe(),
        model: job.model_name.clone(),
        architecture: net.config.summary(),
        attack: job.cfg.clone(),
        images,
    };
    Ok(Snapshot {
        id: job.id,
        cfg: job.cfg.clone(),
        x: job.x.clone(),
        x_adv: result.x_adv,
        taps,
        record,
        elapsed_ms: t0.elapsed().as_secs_f64() * 1e3,
    })
}
