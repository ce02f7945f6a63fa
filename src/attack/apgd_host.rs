//! The host's [`ApgdSession`]: APGD's points and gradients as arrays in memory, every gradient
//! from [`Engine::input_grad`] (the mean over `eot` passes). Engines without a session of their
//! own, and runs with EOT, use this one.

use super::Norm;
use super::project::{distances, l1, l2, project, sign};
use crate::array::Array;
use crate::engine::{ApgdSession, Engine, EngineError, ForwardOptions, Loss, Probe};

/// APGD's vectors on the host.
pub(super) struct HostSession<'a> {
    engine: &'a mut dyn Engine,
    x: &'a Array,
    loss: &'a Loss,
    sign: f32,
    eot: usize,
    eps: f32,
    norm: Norm,
    opts: &'a ForwardOptions,
    cur: Array,
    prev: Array,
    grad: Array,
    best: Array,
    best_grad: Array,
    found: Array,
}

impl<'a> HostSession<'a> {
    /// A session on `engine` from `start`, ascending `sign · loss` averaged over `eot` passes.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        engine: &'a mut dyn Engine,
        x: &'a Array,
        start: &Array,
        loss: &'a Loss,
        sign: f32,
        eot: usize,
        (eps, norm): (f32, Norm),
        opts: &'a ForwardOptions,
    ) -> Self {
        Self {
            engine,
            x,
            loss,
            sign,
            eot: eot.max(1),
            eps,
            norm,
            opts,
            cur: start.clone(),
            prev: start.clone(),
            grad: Array::zeros(x.shape().to_vec()),
            best: start.clone(),
            best_grad: Array::zeros(x.shape().to_vec()),
            found: start.clone(),
        }
    }
}

/// One step of APGD for one image: `z = P(x + η·dir(g))`, then
/// `P(x + a·(z − x) + (1 − a)·(x − x_prev))`.
#[allow(clippy::too_many_arguments)]
fn step_image(
    cur: &mut [f32],
    prev: &mut [f32],
    g: &[f32],
    x: &[f32],
    eta: f32,
    a: f32,
    eps: f32,
    norm: Norm,
) {
    let scale = match norm {
        Norm::Linf => 0.0,
        Norm::L2 => 1.0 / (l2(g) + 1e-12),
    };
    let mut z: Vec<f32> = cur
        .iter()
        .zip(g)
        .map(|(&c, &gi)| match norm {
            Norm::Linf => c + eta * sign(gi),
            Norm::L2 => c + eta * gi * scale,
        })
        .collect();
    project(&mut z, x, eps, norm);
    for ((c, p), zi) in cur.iter_mut().zip(prev.iter_mut()).zip(&z) {
        let momentum = *c - *p;
        *p = *c;
        *c += a * (zi - *c) + (1.0 - a) * momentum;
    }
    project(cur, x, eps, norm);
}

/// Copies image `i` of `from` into `to`.
fn copy_image(to: &mut Array, from: &Array, i: usize) {
    to.example_mut(i).copy_from_slice(from.example(i));
}

impl ApgdSession for HostSession<'_> {
    fn evaluate(&mut self) -> Result<Probe, EngineError> {
        let mut g = self.engine.input_grad(&self.cur, self.loss, self.opts)?;
        for _ in 1..self.eot {
            let more = self.engine.input_grad(&self.cur, self.loss, self.opts)?;
            for (a, b) in g.grad.data_mut().iter_mut().zip(more.grad.data()) {
                *a += b;
            }
            for (a, b) in g.loss.iter_mut().zip(&more.loss) {
                *a += b;
            }
            g.logits = more.logits;
        }
        let scale = self.sign / self.eot as f32;
        for v in g.grad.data_mut() {
            *v *= scale;
        }
        for v in &mut g.loss {
            *v *= scale;
        }
        self.grad = g.grad;
        let (linf, l2) = (0..self.x.batch())
            .map(|i| distances(self.cur.example(i), self.x.example(i)))
            .unzip();
        Ok(Probe {
            logits: g.logits,
            loss: g.loss,
            linf,
            l2,
        })
    }

    fn grad_l1(&mut self) -> Result<Vec<f32>, EngineError> {
        Ok((0..self.x.batch())
            .map(|i| l1(self.grad.example(i)))
            .collect())
    }

    fn step(&mut self, eta: &[f32], a: f32) -> Result<(), EngineError> {
        for (i, &e) in eta.iter().enumerate() {
            let (c, p) = (self.cur.example_mut(i), self.prev.example_mut(i));
            let (g, x) = (self.grad.example(i), self.x.example(i));
            step_image(c, p, g, x, e, a, self.eps, self.norm);
        }
        Ok(())
    }

    fn keep(&mut self, improved: &[bool], fooled: &[bool]) -> Result<(), EngineError> {
        for i in 0..self.x.batch() {
            if improved[i] {
                copy_image(&mut self.best, &self.cur, i);
                copy_image(&mut self.best_grad, &self.grad, i);
            }
            if fooled[i] {
                copy_image(&mut self.found, &self.cur, i);
            }
        }
        Ok(())
    }

    fn restore(&mut self, halve: &[bool]) -> Result<(), EngineError> {
        for (i, _) in halve.iter().enumerate().filter(|(_, h)| **h) {
            copy_image(&mut self.cur, &self.best, i);
            copy_image(&mut self.grad, &self.best_grad, i);
        }
        Ok(())
    }

    fn finish(&mut self, fooled: &[bool]) -> Result<Array, EngineError> {
        let mut out = self.best.clone();
        for (i, _) in fooled.iter().enumerate().filter(|(_, f)| **f) {
            copy_image(&mut out, &self.found, i);
        }
        Ok(out)
    }
}
