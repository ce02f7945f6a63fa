// The iterative attack step on the device (FGSM, BIM, PGD, MI-FGSM; L-inf or L2), so a whole
// attack runs without reading anything back until it ends. Per example: `dim` pixels, `k`
// logits. `record` holds, for every step s and example i, the row
// [loss, linf(delta), l2(delta), logits...] at offset (s * n + i) * (k + 3), followed by three
// scratch slots of n values each (L1 norm of the gradient, L2 norm of the step direction, L2
// norm of delta) at `scratch`.

struct Params {
    n: u32, k: u32, dim: u32, step: u32,
    eps: f32, alpha: f32, mu: f32, dir: f32,
    l2: u32, momentum: u32, scratch: u32, mode: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x_adv: array<f32>;
@group(0) @binding(2) var<storage, read_write> x0: array<f32>;
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;
@group(0) @binding(4) var<storage, read_write> acc: array<f32>;
@group(0) @binding(5) var<storage, read_write> logits: array<f32>;
@group(0) @binding(6) var<storage, read_write> dz: array<f32>;
@group(0) @binding(7) var<storage, read_write> classes: array<f32>;
@group(0) @binding(8) var<storage, read_write> record: array<f32>;

const LANES: u32 = 64u;
const GROUP: u32 = 256u;
var<workgroup> red: array<f32, 64>;

fn row(i: u32) -> u32 {
    return (p.step * p.n + i) * (p.k + 3u);
}

// Softmax cross-entropy against classes[i], one thread per example: records the loss and the
// logits, and writes dL/dz = softmax(z) - onehot into dz for the backward pass.
@compute @workgroup_size(64)
fn cross_entropy(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.n) {
        return;
    }
    let base = i * p.k;
    let y = u32(classes[i]);
    var m = logits[base];
    for (var j = 1u; j < p.k; j++) {
        m = max(m, logits[base + j]);
    }
    var sum = 0.0;
    for (var j = 0u; j < p.k; j++) {
        sum += exp(logits[base + j] - m);
    }
    let r = row(i);
    for (var j = 0u; j < p.k; j++) {
        let z = logits[base + j];
        let prob = exp(z - m) / sum;
        dz[base + j] = prob - select(0.0, 1.0, j == y);
        record[r + 3u + j] = z;
    }
    let py = exp(logits[base + y] - m) / sum;
    record[r] = -log(max(py, 1.17549435e-38));
}

fn reduce(v: f32, lane: u32, take_max: bool) -> f32 {
    red[lane] = v;
    workgroupBarrier();
    for (var off = LANES / 2u; off > 0u; off /= 2u) {
        if (lane < off) {
            if (take_max) {
                red[lane] = max(red[lane], red[lane + off]);
            } else {
                red[lane] = red[lane] + red[lane + off];
            }
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// One workgroup per example. mode 0: linf and l2 of delta into the step's record row;
// mode 1: L1 norm of the gradient into scratch slot 0; mode 2: L2 norm of the step direction
// (the momentum buffer when momentum is on, else the gradient) into slot 1; mode 3: L2 norm of
// delta into slot 2.
@compute @workgroup_size(64)
fn norms(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let i = wg.x;
    let base = i * p.dim;
    var a = 0.0;
    var b = 0.0;
    for (var e = lane; e < p.dim; e += LANES) {
        var v = 0.0;
        if (p.mode == 0u || p.mode == 3u) {
            v = x_adv[base + e] - x0[base + e];
        } else if (p.mode == 1u) {
            v = grad[base + e];
        } else if (p.momentum != 0u) {
            v = acc[base + e];
        } else {
            v = grad[base + e];
        }
        a = max(a, abs(v));
        b += select(v * v, abs(v), p.mode == 1u);
    }
    let linf = reduce(a, lane, true);
    let total = reduce(b, lane, false);
    if (lane == 0u) {
        if (p.mode == 0u) {
            record[row(i) + 1u] = linf;
            record[row(i) + 2u] = sqrt(total);
        } else if (p.mode == 1u) {
            record[p.scratch + i] = total;
        } else if (p.mode == 2u) {
            record[p.scratch + p.n + i] = sqrt(total);
        } else {
            record[p.scratch + 2u * p.n + i] = sqrt(total);
        }
    }
}

// MI-FGSM: acc = mu * acc + grad / ||grad||_1 (no contribution where the gradient is zero).
@compute @workgroup_size(256)
fn momentum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var e = gid.x; e < p.n * p.dim; e += nwg.x * GROUP) {
        let n1 = record[p.scratch + e / p.dim];
        acc[e] = p.mu * acc[e] + select(0.0, grad[e] / n1, n1 > 0.0);
    }
}

// One update: x += dir * alpha * sign(d) (L-inf) or dir * alpha * d / ||d||_2 (L2), with d the
// momentum buffer or the gradient; L-inf then projects onto the eps box and [0, 1] in place.
@compute @workgroup_size(256)
fn update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var e = gid.x; e < p.n * p.dim; e += nwg.x * GROUP) {
        let d = select(grad[e], acc[e], p.momentum != 0u);
        var x = x_adv[e];
        if (p.l2 == 0u) {
            x += p.dir * p.alpha * sign(d);
            let o = x0[e];
            x = clamp(o + clamp(x - o, -p.eps, p.eps), 0.0, 1.0);
        } else {
            let n2 = record[p.scratch + p.n + e / p.dim];
            x += select(0.0, p.dir * p.alpha * d / n2, n2 > 0.0);
        }
        x_adv[e] = x;
    }
}

// L2 projection after the update: scale delta into the eps ball, then clip to [0, 1].
@compute @workgroup_size(256)
fn project_l2(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var e = gid.x; e < p.n * p.dim; e += nwg.x * GROUP) {
        let nd = record[p.scratch + 2u * p.n + e / p.dim];
        let factor = select(1.0, p.eps / nd, nd > p.eps && nd > 0.0);
        let o = x0[e];
        x_adv[e] = clamp(o + (x_adv[e] - o) * factor, 0.0, 1.0);
    }
}
