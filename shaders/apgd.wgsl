// Auto-PGD's step and its per-image copies on the device (L-inf or L2), so the host only reads
// losses and logits between steps. Per example: `dim` pixels. `record` is the attack family's
// record buffer (shaders/attack.wgsl): its `norms` kernel leaves the L2 norm of the gradient in
// slot 1 (at scratch + n + i) and of the perturbation in slot 2 (at scratch + 2n + i); after
// those slots, at `per`, come four per-image values the host writes: the step size, then the
// masks improved, fooled and halve (1 or 0).

struct Params {
    n: u32, dim: u32, eps: f32, a: f32,
    l2: u32, mode: u32, scratch: u32, per: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> cur: array<f32>;
@group(0) @binding(2) var<storage, read_write> x0: array<f32>;
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;
@group(0) @binding(4) var<storage, read_write> prev: array<f32>;
@group(0) @binding(5) var<storage, read_write> z: array<f32>;
// The best point of each image at [0, n * dim), the latest fooling point after it.
@group(0) @binding(6) var<storage, read_write> kept: array<f32>;
@group(0) @binding(7) var<storage, read_write> g_best: array<f32>;
@group(0) @binding(8) var<storage, read_write> record: array<f32>;

const GROUP: u32 = 256u;

fn box_linf(v: f32, o: f32) -> f32 {
    return clamp(o + clamp(v - o, -p.eps, p.eps), 0.0, 1.0);
}

// z = cur + eta_i * sign(g) projected (L-inf), or cur + eta_i * g / (||g||_2 + 1e-12), projected
// afterwards by the attack family's norms and project_l2 (L2).
@compute @workgroup_size(256)
fn apgd_direction(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var e = gid.x; e < p.n * p.dim; e += nwg.x * GROUP) {
        let i = e / p.dim;
        let eta = record[p.per + i];
        if (p.l2 == 0u) {
            z[e] = box_linf(cur[e] + eta * sign(grad[e]), x0[e]);
        } else {
            let scale = 1.0 / (record[p.scratch + p.n + i] + 1e-12);
            z[e] = cur[e] + eta * grad[e] * scale;
        }
    }
}

// cur + a (z - cur) + (1 - a) (cur - prev), with prev <- cur; projected here for L-inf, by
// project_l2 afterwards for L2.
@compute @workgroup_size(256)
fn apgd_momentum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var e = gid.x; e < p.n * p.dim; e += nwg.x * GROUP) {
        let c = cur[e];
        let m = c - prev[e];
        prev[e] = c;
        var x = c + (p.a * (z[e] - c) + (1.0 - p.a) * m);
        if (p.l2 == 0u) {
            x = box_linf(x, x0[e]);
        }
        cur[e] = x;
    }
}

// Masked per-image copies. mode 0: best <- cur and g_best <- grad where improved, found <- cur
// where fooled; mode 1: cur <- best and grad <- g_best where halve; mode 2: cur <- found where
// fooled, else best (the result).
@compute @workgroup_size(256)
fn apgd_copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let total = p.n * p.dim;
    for (var e = gid.x; e < total; e += nwg.x * GROUP) {
        let i = e / p.dim;
        let improved = record[p.per + p.n + i] != 0.0;
        let fooled = record[p.per + 2u * p.n + i] != 0.0;
        let halve = record[p.per + 3u * p.n + i] != 0.0;
        if (p.mode == 0u) {
            if (improved) {
                kept[e] = cur[e];
                g_best[e] = grad[e];
            }
            if (fooled) {
                kept[total + e] = cur[e];
            }
        } else if (p.mode == 1u) {
            if (halve) {
                cur[e] = kept[e];
                grad[e] = g_best[e];
            }
        } else {
            cur[e] = select(kept[e], kept[total + e], fooled);
        }
    }
}
