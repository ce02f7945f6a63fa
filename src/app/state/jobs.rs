//! The background jobs seen from the UI: replies from the worker, submitting a new analysis
//! when its inputs change, and starting the robustness curve.

use std::sync::Arc;

use super::{AdvlensApp, JobKey};
use crate::analysis::AnalyseJob;
use crate::analysis::RobustnessJob;
use crate::app::loader::InputPrep;
use crate::app::robustness::RobustnessRun;
use crate::app::worker::Reply;
use crate::cancel::Cancel;

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
            match r {
                Reply::Analysed(s) => {
                    if s.id + 1 == self.next_id {
                        self.busy = false;
                    }
                    if self.snapshot.as_ref().is_none_or(|old| s.id > old.id) {
                        self.snapshot = Some(Arc::from(s));
                    }
                }
                Reply::Failed { id, error } => {
                    if id + 1 == self.next_id {
                        self.busy = false;
                    }
                    self.errors.push(format!("attack failed: {error}"));
                }
                Reply::Notice(n) => self.errors.push(n),
            }
        }
        self.poll_loader();
    }

    /// Submits a job when the attack, the image or the model changed since the last one.
    pub fn submit_if_changed(&mut self) {
        let key = JobKey {
            cfg: self.settings.attack.config(),
            engine: self.settings.engine,
            image_gen: self.image_gen,
            net: Arc::as_ptr(&self.net) as usize,
        };
        if self.submitted.as_ref() == Some(&key) {
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
            cancel: Cancel::new(),
        };
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
        let n = self.settings.robustness.images.clamp(1, set.len());
        let idx: Vec<usize> = (0..n).collect();
        let sub = set.select(&idx);
        let job = RobustnessJob {
            net: self.net.clone(),
            images: sub.images,
            labels: sub.labels,
            cfg: self.settings.attack.config(),
            eps: self.settings.robustness.eps_values(),
            engine: self.settings.engine,
            gpu: self.gpu.clone(),
        };
        match RobustnessRun::start(job, self.wake.clone()) {
            Ok(r) => self.robustness = Some(r),
            Err(e) => self
                .errors
                .push(format!("cannot start the robustness thread: {e}")),
        }
    }
}
