//! The background jobs seen from the UI: replies from the worker, submitting a new analysis
//! when its inputs change (a slow attack only once no widget is being dragged), cancelling and
//! re-running a slow attack, and starting the robustness curve.

use std::sync::Arc;

use super::{AdvlensApp, JobKey};
use crate::analysis::RobustnessJob;
use crate::analysis::{AnalyseJob, eot_draws, is_slow_job};
use crate::app::loader::InputPrep;
use crate::app::robustness::RobustnessRun;
use crate::app::settings::CurveAttack;
use crate::app::slow_run::{SlowRun, SlowState};
use crate::app::worker::Reply;
use crate::attack::{AttackConfig, route_eot};
use crate::cancel::Cancel;
use crate::defense::Defense;

impl AdvlensApp {
    /// Takes every reply the worker and the loader have sent.
    pub fn poll_worker(&mut self) {
        let Some(w) = &self.worker else {
            self.poll_loader();
            return;
        };
        let (replies, stopped) = w.drain();
        if let Some(e) = stopped {
            self.errors.push(e.to_string());
            self.worker = None;
            self.busy = false;
        }
        for r in replies {
            self.take_reply(r);
        }
        self.poll_loader();
    }

    fn take_reply(&mut self, r: Reply) {
        let newest = |id: u64| id + 1 == self.next_id;
        match r {
            Reply::Analysed(s) => {
                if newest(s.id) {
                    self.busy = false;
                }
                self.set_slow_state(s.id, SlowState::Done);
                if self.snapshot.as_ref().is_none_or(|old| s.id > old.id) {
                    self.snapshot = Some(Arc::from(s));
                }
            }
            Reply::Failed { id, error } => {
                if newest(id) {
                    self.busy = false;
                }
                self.set_slow_state(id, SlowState::Failed(error.clone()));
                self.errors.push(format!("attack failed: {error}"));
            }
            Reply::Cancelled { id } => {
                if newest(id) {
                    self.busy = false;
                }
                self.set_slow_state(id, SlowState::Cancelled);
            }
            Reply::Progress { id, stage, done } => {
                if let Some(run) = self.slow.as_mut().filter(|r| r.id == id) {
                    run.stage = Some(stage);
                    run.done = done;
                }
            }
            Reply::Notice(n) => self.errors.push(n),
        }
    }

    fn set_slow_state(&mut self, id: u64, state: SlowState) {
        if let Some(run) = self.slow.as_mut().filter(|r| r.id == id) {
            if state == SlowState::Done {
                run.done = 1.0;
            }
            run.state = state;
        }
    }

    /// `cfg` and the defence of the settings with EOT's draws where the attack takes them, as
    /// the command line routes them ([`route_eot`]: in APGD's and AutoAttack's own loops, else
    /// inside each gradient call), and only for a random chain (the EOT control is off
    /// otherwise).
    fn routed(&self, mut cfg: AttackConfig) -> (AttackConfig, Defense) {
        let mut defense = self.settings.defense.clone();
        let k = if defense.chain.is_random() {
            defense.eot
        } else {
            1
        };
        route_eot(&mut cfg, &mut defense, k);
        (cfg, defense)
    }

    /// What the next job would be computed from.
    fn job_key(&self) -> JobKey {
        let (cfg, defense) = self.routed(self.settings.attack.config());
        JobKey {
            cfg,
            defense,
            engine: self.settings.engine,
            image_gen: self.image_gen,
            net: Arc::as_ptr(&self.net) as usize,
        }
    }

    /// Whether the current settings make a slow job (a slow attack, or EOT over a random
    /// defence): it runs in the background with progress, not live on the slider.
    pub fn selected_is_slow(&self) -> bool {
        let (cfg, defense) = self.routed(self.settings.attack.config());
        is_slow_job(&cfg, &defense)
    }

    /// Why the selected defence cannot run in front of the model in use (a chain that does not
    /// fit its input size), or `None` when it can. No job is submitted while there is a reason.
    pub fn defense_error(&self) -> Option<String> {
        self.settings
            .defense
            .check(self.net.input_shape())
            .err()
            .map(|e| e.to_string())
    }

    /// Whether the current settings wait for a drag to end: a slow job whose inputs changed
    /// while a widget (the ε slider) is being dragged.
    pub(super) fn waiting_for_release(&self) -> bool {
        self.dragging && self.selected_is_slow() && self.submitted.as_ref() != Some(&self.job_key())
    }

    /// Whether the result on screen is not the result of the current settings (a newer job is
    /// running, was cancelled or failed, or waits for the slider to be released).
    pub fn is_stale(&self) -> bool {
        self.snapshot
            .as_ref()
            .is_some_and(|s| s.id + 1 != self.next_id)
            || self.submitted.as_ref() != Some(&self.job_key())
    }

    /// The slow attack submitted last (runtime state), if the newest job is one.
    pub fn slow_run(&self) -> Option<&SlowRun> {
        self.slow.as_ref()
    }

    /// Cancels the running slow attack; the views keep the last finished result.
    pub fn cancel_slow(&mut self) {
        let Some(run) = self.slow.as_mut().filter(|r| r.in_flight()) else {
            return;
        };
        run.state = SlowState::Cancelling;
        if let Some(w) = &mut self.worker {
            w.cancel_running();
        }
    }

    /// Submits the current settings again (the bar's "Run attack").
    pub fn rerun(&mut self) {
        self.submitted = None;
    }

    /// Submits a job when the attack, the defence, the image or the model changed since the last
    /// one. A slow job waits until no widget is being dragged: it runs when the ε slider is
    /// released. A defence that does not fit the model is not submitted (the controls say why).
    pub fn submit_if_changed(&mut self) {
        let key = self.job_key();
        if self.submitted.as_ref() == Some(&key) {
            return;
        }
        if self.waiting_for_release() || self.defense_error().is_some() {
            return;
        }
        // After a model change the image is converted again on the loader; wait for it.
        if self.x.shape() != InputPrep::of(&self.net).shape().as_slice() {
            return;
        }
        let Some(worker) = &mut self.worker else {
            return;
        };
        // A job still waits for the worker (it is finishing a cancelled step): another would only
        // supersede it unseen, and the queue would grow with every frame the step takes. Submit
        // once the worker has taken it; the wake keeps frames coming until then.
        if worker.queued() > 0 {
            (self.wake)();
            return;
        }
        let job = AnalyseJob {
            id: self.next_id,
            net: self.net.clone(),
            model_name: self.model_name.clone(),
            x: self.x.clone(),
            label: self.label,
            source: self.settings.image.describe(),
            cfg: key.cfg.clone(),
            engine: key.engine,
            defense: key.defense.clone(),
            cancel: Cancel::new(),
        };
        self.slow = job
            .is_slow()
            .then(|| SlowRun::new(self.next_id, &key.cfg, eot_draws(&key.cfg, &key.defense)));
        self.next_id += 1;
        worker.submit(job);
        self.busy = true;
        self.submitted = Some(key);
    }

    pub(super) fn start_robustness(&mut self) {
        if !self.is_fashion_model() {
            self.errors.push(
                "the robustness curve runs on the bundled Fashion-MNIST images: it needs a 1×28×28, 10-class model",
            );
            return;
        }
        let Some(set) = &self.bundled else {
            self.errors
                .push("the bundled test images are not available");
            return;
        };
        if let Some(e) = self.defense_error() {
            self.errors.push(format!(
                "the robustness curve cannot run behind this defence: {e}"
            ));
            return;
        }
        let (cfg, defense) = self.routed(
            self.settings
                .robustness
                .curve_config(&self.settings.attack.config()),
        );
        let n = self.settings.robustness.images.clamp(1, set.len());
        let idx: Vec<usize> = (0..n).collect();
        let sub = set.select(&idx);
        let job = RobustnessJob {
            net: self.net.clone(),
            images: sub.images,
            labels: sub.labels,
            cfg,
            eps: self.settings.robustness.eps_values(),
            engine: self.settings.engine,
            gpu: self.gpu.clone(),
            defense,
        };
        let apgd = (self.settings.robustness.attack == CurveAttack::ApgdCe)
            .then_some(self.settings.robustness.apgd_steps);
        match RobustnessRun::start(job, self.wake.clone()) {
            Ok(mut r) => {
                if let Some(steps) = apgd {
                    r.attack = format!("apgd-ce {steps} steps");
                }
                if !self.settings.defense.is_none() {
                    r.attack = format!("{} behind {}", r.attack, self.settings.defense.chain);
                }
                self.robustness = Some(r);
            }
            Err(e) => self
                .errors
                .push(format!("cannot start the robustness thread: {e}")),
        }
    }
}
