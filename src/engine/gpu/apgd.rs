//! Auto-PGD's points and gradients on the device: the current point is the plan's input buffer
//! and the gradient its input gradient; the previous, best and fooling points, the best gradient
//! and the clean images live in buffers of their own. Between steps the host reads back only the
//! logits and two distances per image (it computes the loss and its gradient on the logits, so
//! every [`Loss`] works, and uploads that gradient) and writes the step sizes and the masks of
//! the schedule's decisions; the whole images come back once, at the end.

use super::buffers::upload;
use super::context::GpuContext;
use super::dispatch::{Dispatch, encode_all, grid};
use super::error::gpu_err;
use super::kernels::Entry;
use super::uniforms::{ApgdParams, AttackParams};
use super::{GpuEngine, R};
use crate::array::Array;
use crate::engine::{ApgdSession, ApgdSpec, ForwardOptions, Loss, Probe, check_input};

/// The slots after the scratch slots in the record buffer, `n` values each.
#[derive(Clone, Copy)]
enum Slot {
    StepSize = 0,
    Improved = 1,
    Fooled = 2,
    Halve = 3,
}

/// One APGD run's device state (see the module docs).
pub(super) struct DeviceApgd<'a> {
    engine: &'a mut GpuEngine,
    loss: Loss,
    sign: f32,
    spec: ApgdSpec,
    bypass: bool,
    shape: Vec<usize>,
    n: usize,
    k: usize,
    dim: usize,
    x0: wgpu::Buffer,
    prev: wgpu::Buffer,
    z: wgpu::Buffer,
    /// The best points, then the fooling points.
    kept: wgpu::Buffer,
    g_best: wgpu::Buffer,
    /// The attack family's record rows (`[loss, linf, l2, logits…]`, only the distances used),
    /// its three scratch slots, then the [`Slot`]s.
    record: wgpu::Buffer,
}

impl GpuEngine {
    /// A device APGD session from `start`, or `None` when the batch does not fit one pass (the
    /// caller runs on the host).
    pub(super) fn apgd_device(
        &mut self,
        x: &Array,
        start: &Array,
        loss: &Loss,
        sign: f32,
        spec: ApgdSpec,
        opts: &ForwardOptions,
    ) -> Option<R<DeviceApgd<'_>>> {
        let n = x.batch();
        let limit = {
            let l = &self.ctx.limits;
            l.max_storage_buffer_binding_size.min(l.max_buffer_size) as usize
        };
        if n > self.max_batch() || 2 * x.len() * 4 > limit {
            return None;
        }
        Some(self.open_apgd(x, start, loss, sign, spec, opts))
    }

    fn open_apgd(
        &mut self,
        x: &Array,
        start: &Array,
        loss: &Loss,
        sign: f32,
        spec: ApgdSpec,
        opts: &ForwardOptions,
    ) -> R<DeviceApgd<'_>> {
        check_input(&self.net, x)?;
        check_input(&self.net, start)?;
        if start.shape() != x.shape() {
            return Err(gpu_err("start and images do not match"));
        }
        let n = x.batch();
        let k = self.net.num_classes();
        let bypass = opts.bypass_denoise;
        self.prepare(n)?;
        let plan = self.plan.as_ref().ok_or_else(|| gpu_err("plan missing"))?;
        let device = &self.ctx.device;
        self.ctx
            .queue
            .write_buffer(plan.value(0, bypass), 0, bytemuck::cast_slice(start.data()));
        let both: Vec<f32> = start.data().iter().chain(start.data()).copied().collect();
        let zeros = vec![0.0; x.len()];
        let session = DeviceApgd {
            x0: upload(device, "apgd clean images", x.data()),
            prev: upload(device, "apgd previous points", start.data()),
            z: upload(device, "apgd steps", &zeros),
            kept: upload(device, "apgd best and fooling points", &both),
            g_best: upload(device, "apgd best gradients", &zeros),
            record: upload(device, "apgd record", &vec![0.0; n * (k + 3) + 7 * n]),
            loss: loss.clone(),
            sign,
            spec,
            bypass,
            shape: x.shape().to_vec(),
            n,
            k,
            dim: x.example_len(),
            engine: self,
        };
        session.engine.ctx.take_error()?;
        Ok(session)
    }
}

impl DeviceApgd<'_> {
    /// Where the attack family's scratch slots start in the record buffer.
    fn scratch(&self) -> usize {
        self.n * (self.k + 3)
    }

    /// Where `slot` starts in the record buffer.
    fn slot(&self, slot: Slot) -> usize {
        self.scratch() + (3 + slot as usize) * self.n
    }

    fn write(&self, slot: Slot, values: &[f32]) {
        let offset = (self.slot(slot) * 4) as u64;
        let queue = &self.engine.ctx.queue;
        queue.write_buffer(&self.record, offset, bytemuck::cast_slice(values));
    }

    fn write_mask(&self, slot: Slot, mask: &[bool]) {
        let v: Vec<f32> = mask.iter().map(|&m| f32::from(u8::from(m))).collect();
        self.write(slot, &v);
    }

    fn buffers(&self) -> R<(&wgpu::Buffer, &wgpu::Buffer)> {
        let plan = self
            .engine
            .plan
            .as_ref()
            .ok_or_else(|| gpu_err("plan missing"))?;
        Ok((plan.value(0, self.bypass), plan.grad(0, self.bypass)))
    }

    /// A launch of the attack family's `norms` (`mode`) or `project_l2` on `target`.
    fn attack(&self, entry: Entry, mode: u32, target: &wgpu::Buffer) -> R<Dispatch> {
        let (_, grad) = self.buffers()?;
        let params = AttackParams {
            n: self.n as u32,
            k: self.k as u32,
            dim: self.dim as u32,
            eps: self.spec.eps,
            dir: 1.0,
            l2: u32::from(self.spec.l2),
            scratch: self.scratch() as u32,
            mode,
            ..AttackParams::default()
        };
        let bufs = [
            Some(target),
            Some(&self.x0),
            Some(grad),
            None,
            None,
            None,
            None,
            Some(&self.record),
        ];
        let groups = match entry {
            Entry::Norms => [self.n as u32, 1, 1],
            _ => grid(self.n * self.dim),
        };
        Dispatch::new(&self.engine.ctx, entry, &params, &bufs, groups)
    }

    /// A launch of one of `apgd.wgsl`'s kernels.
    fn apgd(&self, entry: Entry, mode: u32, a: f32) -> R<Dispatch> {
        let (cur, grad) = self.buffers()?;
        let params = ApgdParams {
            n: self.n as u32,
            dim: self.dim as u32,
            eps: self.spec.eps,
            a,
            l2: u32::from(self.spec.l2),
            mode,
            scratch: self.scratch() as u32,
            per: self.slot(Slot::StepSize) as u32,
        };
        let bufs = [
            Some(cur),
            Some(&self.x0),
            Some(grad),
            Some(&self.prev),
            Some(&self.z),
            Some(&self.kept),
            Some(&self.g_best),
            Some(&self.record),
        ];
        Dispatch::new(
            &self.engine.ctx,
            entry,
            &params,
            &bufs,
            grid(self.n * self.dim),
        )
    }

    /// Submits `list` in one pass without waiting.
    fn submit(&self, list: &[Dispatch], label: &str) {
        let ctx: &GpuContext = &self.engine.ctx;
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        encode_all(&mut encoder, list, label);
        ctx.queue.submit([encoder.finish()]);
    }

    /// Submits `list` and reads back the first `len` floats of `source`.
    fn read(&mut self, list: &[Dispatch], source: Source, len: usize) -> R<Vec<f32>> {
        let GpuEngine {
            ctx,
            plan,
            readback,
            ..
        } = &mut *self.engine;
        let plan = plan.as_ref().ok_or_else(|| gpu_err("plan missing"))?;
        let buf = match source {
            Source::Record => &self.record,
            Source::Point => plan.value(0, self.bypass),
        };
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        encode_all(&mut encoder, list, "apgd");
        let mut data = readback.submit_and_read(ctx, encoder, &[(buf, len)])?;
        data.pop().ok_or_else(|| gpu_err("apgd results missing"))
    }
}

/// What [`DeviceApgd::read`] reads.
#[derive(Clone, Copy)]
enum Source {
    Record,
    Point,
}

impl ApgdSession for DeviceApgd<'_> {
    fn evaluate(&mut self) -> R<Probe> {
        let (n, k) = (self.n, self.k);
        let out = self.engine.net.graph.output;
        let norms = self.attack(Entry::Norms, 0, self.buffers()?.0)?;
        let (logits, values, dz, rows) = {
            let GpuEngine {
                ctx,
                plan,
                readback,
                ..
            } = &mut *self.engine;
            let plan = plan.as_ref().ok_or_else(|| gpu_err("plan missing"))?;
            let mut encoder = ctx.device.create_command_encoder(&Default::default());
            let forward = plan.forward(self.bypass).iter().chain([&norms]);
            encode_all(&mut encoder, forward, "apgd forward");
            let sources = [
                (plan.value(out, self.bypass), n * k),
                (&self.record, n * (k + 3)),
            ];
            let mut data = readback
                .submit_and_read(ctx, encoder, &sources)?
                .into_iter();
            let z = data.next().ok_or_else(|| gpu_err("logits missing"))?;
            let rows = data.next().ok_or_else(|| gpu_err("distances missing"))?;
            let logits = Array::new(vec![n, k], z).map_err(|e| gpu_err(e.to_string()))?;
            let (mut values, mut dz) = self.loss.evaluate(&logits)?;
            values.iter_mut().for_each(|v| *v *= self.sign);
            dz.data_mut().iter_mut().for_each(|v| *v *= self.sign);
            (logits, values, dz, rows)
        };
        let GpuEngine { ctx, plan, .. } = &mut *self.engine;
        let plan = plan.as_ref().ok_or_else(|| gpu_err("plan missing"))?;
        ctx.queue.write_buffer(
            plan.grad(out, self.bypass),
            0,
            bytemuck::cast_slice(dz.data()),
        );
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        plan.clear_grads(&mut encoder, out, self.bypass);
        encode_all(&mut encoder, plan.backward(self.bypass), "apgd backward");
        ctx.queue.submit([encoder.finish()]);
        Ok(Probe {
            logits,
            loss: values,
            linf: (0..n).map(|i| rows[i * (k + 3) + 1]).collect(),
            l2: (0..n).map(|i| rows[i * (k + 3) + 2]).collect(),
        })
    }

    fn grad_l1(&mut self) -> R<Vec<f32>> {
        let cur = self.buffers()?.0;
        let norms = self.attack(Entry::Norms, 1, cur)?;
        let (s, n) = (self.scratch(), self.n);
        let rec = self.read(&[norms], Source::Record, s + n)?;
        Ok(rec[s..].to_vec())
    }

    fn step(&mut self, eta: &[f32], a: f32) -> R<()> {
        self.write(Slot::StepSize, eta);
        let (cur, _) = self.buffers()?;
        let l2 = self.spec.l2;
        let mut list = Vec::new();
        if l2 {
            list.push(self.attack(Entry::Norms, 2, cur)?);
        }
        list.push(self.apgd(Entry::ApgdDirection, 0, a)?);
        if l2 {
            list.push(self.attack(Entry::Norms, 3, &self.z)?);
            list.push(self.attack(Entry::ProjectL2, 0, &self.z)?);
        }
        list.push(self.apgd(Entry::ApgdMomentum, 0, a)?);
        if l2 {
            list.push(self.attack(Entry::Norms, 3, cur)?);
            list.push(self.attack(Entry::ProjectL2, 0, cur)?);
        }
        self.submit(&list, "apgd step");
        Ok(())
    }

    fn keep(&mut self, improved: &[bool], fooled: &[bool]) -> R<()> {
        if !improved.iter().chain(fooled).any(|&m| m) {
            return Ok(());
        }
        self.write_mask(Slot::Improved, improved);
        self.write_mask(Slot::Fooled, fooled);
        let copy = self.apgd(Entry::ApgdCopy, 0, 0.0)?;
        self.submit(&[copy], "apgd keep");
        Ok(())
    }

    fn restore(&mut self, halve: &[bool]) -> R<()> {
        if !halve.iter().any(|&m| m) {
            return Ok(());
        }
        self.write_mask(Slot::Halve, halve);
        let copy = self.apgd(Entry::ApgdCopy, 1, 0.0)?;
        self.submit(&[copy], "apgd restore");
        Ok(())
    }

    fn finish(&mut self, fooled: &[bool]) -> R<Array> {
        self.write_mask(Slot::Fooled, fooled);
        let copy = self.apgd(Entry::ApgdCopy, 2, 0.0)?;
        let len = self.n * self.dim;
        let data = self.read(&[copy], Source::Point, len)?;
        Array::new(self.shape.clone(), data).map_err(|e| gpu_err(e.to_string()))
    }
}
