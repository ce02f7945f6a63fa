//! The defended model: a [`Defense`]'s input transformations in front of any engine. Forward
//! passes run the network on the transformed batch (its taps are those of the network after the
//! transformation, and [`Forward::seen`] holds what it saw); gradient passes map the network's
//! input gradient back through the chain by the defence's [`GradientMode`] and, for a random
//! chain, average over `eot` independent draws (the mean of the losses, logits and gradients).
//! The transforms run on the host whatever the engine, so every engine sees the same inputs.
//! An empty chain passes every call straight to the engine, device loops included.

use super::{
    ApgdSession, ApgdSpec, Engine, EngineError, Forward, ForwardOptions, FusedLoop, FusedOutcome,
    Gradient, Loss, check_input,
};
use crate::array::Array;
use crate::defense::{Applied, Defense, DefenseError, Draws};
use crate::model::Network;

/// An engine with a defence in front of its network.
pub struct Defended {
    inner: Box<dyn Engine>,
    defense: Defense,
    /// Passes run since the draws were last restarted: each gets fresh randomness.
    calls: u64,
}

impl From<DefenseError> for EngineError {
    fn from(e: DefenseError) -> Self {
        EngineError::Defense(e.to_string())
    }
}

impl Defended {
    /// `inner` behind `defense`, checked against the network's input size.
    pub fn new(inner: Box<dyn Engine>, defense: Defense) -> Result<Self, EngineError> {
        defense.check(inner.network().input_shape())?;
        Ok(Self {
            inner,
            defense,
            calls: 0,
        })
    }

    /// The defence in front of the network.
    pub fn defense(&self) -> &Defense {
        &self.defense
    }

    /// Replaces the defence (checked first; on error the old one stays) and restarts the draws.
    pub fn set_defense(&mut self, defense: Defense) -> Result<(), EngineError> {
        defense.check(self.inner.network().input_shape())?;
        self.defense = defense;
        self.calls = 0;
        Ok(())
    }

    /// Sets how many draws each gradient averages over (see [`Defense::eot`]), keeping the
    /// chain and the sequence of draws; on error the old value stays.
    pub fn set_eot(&mut self, eot: usize) -> Result<(), EngineError> {
        let defense = Defense {
            eot,
            ..self.defense.clone()
        };
        defense.check(self.inner.network().input_shape())?;
        self.defense = defense;
        Ok(())
    }

    /// Restarts the sequence of draws, so the passes that follow repeat those after the last
    /// restart (a random defence's view stays put until the user asks for a new draw).
    pub fn restart_draws(&mut self) {
        self.calls = 0;
    }

    /// The engine behind the defence.
    pub fn inner_mut(&mut self) -> &mut dyn Engine {
        self.inner.as_mut()
    }

    /// Gives back the engine behind the defence.
    pub fn into_inner(self) -> Box<dyn Engine> {
        self.inner
    }

    /// Applies the chain to `x` with the next pass's draw (what the next forward pass would see
    /// if it were this one).
    pub fn transform(&mut self, x: &Array) -> Result<Array, EngineError> {
        check_input(self.inner.network(), x)?;
        Ok(self.apply(x, 0)?.x)
    }

    /// The gradient at `x` through draw `draw` of this pass, mapped back through the chain.
    fn draw_gradient(
        &mut self,
        x: &Array,
        draw: u64,
        loss: &Loss,
        opts: &ForwardOptions,
    ) -> Result<Gradient, EngineError> {
        let applied = self.apply(x, draw)?;
        let g = self.inner.input_grad(&applied.x, loss, opts)?;
        let grad = applied.backward(&g.grad, self.defense.gradient)?;
        Ok(Gradient { grad, ..g })
    }

    fn apply(&self, x: &Array, draw: u64) -> Result<Applied, DefenseError> {
        self.defense.chain.apply(
            x,
            &Draws::Seeded {
                seed: self.defense.seed,
                call: self.calls,
                draw,
            },
        )
    }
}

impl Engine for Defended {
    fn describe(&self) -> String {
        if self.defense.is_none() {
            return self.inner.describe();
        }
        format!(
            "{}, defence {}",
            self.inner.describe(),
            self.defense.describe()
        )
    }

    fn network(&self) -> &Network {
        self.inner.network()
    }

    fn active_defense(&self) -> Option<&Defense> {
        (!self.defense.is_none()).then_some(&self.defense)
    }

    fn forward(&mut self, x: &Array, opts: &ForwardOptions) -> Result<Forward, EngineError> {
        if self.defense.is_none() {
            return self.inner.forward(x, opts);
        }
        check_input(self.inner.network(), x)?;
        let applied = self.apply(x, 0)?;
        self.calls += 1;
        let mut out = self.inner.forward(&applied.x, opts)?;
        out.seen = Some(applied.x);
        Ok(out)
    }

    fn input_grad(
        &mut self,
        x: &Array,
        loss: &Loss,
        opts: &ForwardOptions,
    ) -> Result<Gradient, EngineError> {
        if self.defense.is_none() {
            return self.inner.input_grad(x, loss, opts);
        }
        check_input(self.inner.network(), x)?;
        let draws = self.defense.draws_per_gradient();
        let mut out = self.draw_gradient(x, 0, loss, opts)?;
        for draw in 1..draws as u64 {
            let g = self.draw_gradient(x, draw, loss, opts)?;
            add(out.grad.data_mut(), g.grad.data());
            add(out.logits.data_mut(), g.logits.data());
            add(&mut out.loss, &g.loss);
        }
        self.calls += 1;
        if draws > 1 {
            let s = 1.0 / draws as f32;
            out.grad.data_mut().iter_mut().for_each(|v| *v *= s);
            out.logits.data_mut().iter_mut().for_each(|v| *v *= s);
            out.loss.iter_mut().for_each(|v| *v *= s);
        }
        Ok(out)
    }

    fn iterate(
        &mut self,
        x: &Array,
        start: &Array,
        classes: &[usize],
        spec: &FusedLoop,
        opts: &ForwardOptions,
        cancelled: &dyn Fn() -> bool,
    ) -> Option<Result<FusedOutcome, EngineError>> {
        if !self.defense.is_none() {
            return None;
        }
        self.inner.iterate(x, start, classes, spec, opts, cancelled)
    }

    fn apgd_session<'a>(
        &'a mut self,
        x: &Array,
        start: &Array,
        loss: &Loss,
        sign: f32,
        spec: ApgdSpec,
        opts: &ForwardOptions,
    ) -> Option<Result<Box<dyn ApgdSession + 'a>, EngineError>> {
        if !self.defense.is_none() {
            return None;
        }
        self.inner.apgd_session(x, start, loss, sign, spec, opts)
    }
}

fn add(acc: &mut [f32], v: &[f32]) {
    acc.iter_mut().zip(v).for_each(|(a, b)| *a += b);
}
