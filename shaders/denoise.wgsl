// The local denoise operations of Xie et al. over 3x3 windows (stride 1, cells outside the map
// excluded), forward and input gradient: mean, median (lower median, ties broken by position),
// and the bilateral filter with embedded Gaussian affinity. NCHW; one image has c channels of
// h x w cells and, for the bilateral filter, d-channel embeddings theta/phi. Backward kernels are
// gathers (one thread per input cell), never atomics.

struct Params {
    planes: u32, h: u32, w: u32, c: u32,
    d: u32, images: u32, scale: f32, unused: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> theta: array<f32>;
@group(0) @binding(3) var<storage, read_write> phi: array<f32>;
// y in forward kernels, dL/dy in backward kernels.
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
// Bilateral: the 9 softmax weights of every cell, [images, 9, h*w].
@group(0) @binding(5) var<storage, read_write> wts: array<f32>;
// Bilateral: dL/dlogit of every cell's 9 weights, [images, 9, h*w].
@group(0) @binding(6) var<storage, read_write> dlog: array<f32>;
// Bilateral: dL/dtheta (first backward kernel) or dL/dphi (second).
@group(0) @binding(7) var<storage, read_write> demb: array<f32>;
@group(0) @binding(8) var<storage, read_write> dx: array<f32>;

const GROUP: u32 = 256u;

// Neighbour k (0..9, row-major over dy, dx in -1..=1) of cell (cy, cx), or -1 outside the map.
fn neighbour(cy: i32, cx: i32, k: u32) -> i32 {
    let ny = cy + i32(k / 3u) - 1;
    let nx = cx + i32(k % 3u) - 1;
    if (ny < 0 || nx < 0 || ny >= i32(p.h) || nx >= i32(p.w)) {
        return -1;
    }
    return ny * i32(p.w) + nx;
}

fn valid_count(cy: i32, cx: i32) -> f32 {
    var n = 0.0;
    for (var k = 0u; k < 9u; k++) {
        if (neighbour(cy, cx, k) >= 0) {
            n += 1.0;
        }
    }
    return n;
}

// The in-map cell holding the lower median of the window around (cy, cx): the cell whose rank,
// ordering by value then position, is (count - 1) / 2.
fn median_cell(base: u32, cy: i32, cx: i32) -> i32 {
    let want = (u32(valid_count(cy, cx)) - 1u) / 2u;
    for (var k = 0u; k < 9u; k++) {
        let a = neighbour(cy, cx, k);
        if (a < 0) {
            continue;
        }
        let va = x[base + u32(a)];
        var rank = 0u;
        for (var j = 0u; j < 9u; j++) {
            let b = neighbour(cy, cx, j);
            if (b < 0 || b == a) {
                continue;
            }
            let vb = x[base + u32(b)];
            if (vb < va || (vb == va && b < a)) {
                rank++;
            }
        }
        if (rank == want) {
            return a;
        }
    }
    return -1;
}

@compute @workgroup_size(256)
fn mean_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let hw = p.h * p.w;
    for (var i = gid.x; i < p.planes * hw; i += nwg.x * GROUP) {
        let base = (i / hw) * hw;
        let cell = i32(i % hw);
        let cy = cell / i32(p.w);
        let cx = cell % i32(p.w);
        var acc = 0.0;
        for (var k = 0u; k < 9u; k++) {
            let nb = neighbour(cy, cx, k);
            if (nb >= 0) {
                acc += x[base + u32(nb)];
            }
        }
        y[i] = acc / valid_count(cy, cx);
    }
}

// dx[q] += sum over the windows containing q of dy / (cells in that window).
@compute @workgroup_size(256)
fn mean_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let hw = p.h * p.w;
    for (var i = gid.x; i < p.planes * hw; i += nwg.x * GROUP) {
        let base = (i / hw) * hw;
        let cell = i32(i % hw);
        let cy = cell / i32(p.w);
        let cx = cell % i32(p.w);
        var acc = 0.0;
        // The 3x3 window is symmetric: q is in the window of each of its neighbours.
        for (var k = 0u; k < 9u; k++) {
            let nb = neighbour(cy, cx, k);
            if (nb >= 0) {
                acc += y[base + u32(nb)] / valid_count(nb / i32(p.w), nb % i32(p.w));
            }
        }
        dx[i] += acc;
    }
}

@compute @workgroup_size(256)
fn median_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let hw = p.h * p.w;
    for (var i = gid.x; i < p.planes * hw; i += nwg.x * GROUP) {
        let base = (i / hw) * hw;
        let cell = i32(i % hw);
        let m = median_cell(base, cell / i32(p.w), cell % i32(p.w));
        y[i] = x[base + u32(max(m, 0))];
    }
}

// dx[q] += dy of every window whose median is q.
@compute @workgroup_size(256)
fn median_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let hw = p.h * p.w;
    for (var i = gid.x; i < p.planes * hw; i += nwg.x * GROUP) {
        let base = (i / hw) * hw;
        let cell = i32(i % hw);
        let cy = cell / i32(p.w);
        let cx = cell % i32(p.w);
        var acc = 0.0;
        for (var k = 0u; k < 9u; k++) {
            let nb = neighbour(cy, cx, k);
            if (nb >= 0 && median_cell(base, nb / i32(p.w), nb % i32(p.w)) == cell) {
                acc += y[base + u32(nb)];
            }
        }
        dx[i] += acc;
    }
}

// Bilateral forward, one thread per (image, cell i): weights w_k = softmax over the in-map
// neighbours j_k of scale * theta_i . phi_j; y_i = sum_k w_k x_j.
@compute @workgroup_size(256)
fn bilateral_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let hw = p.h * p.w;
    for (var i = gid.x; i < p.images * hw; i += nwg.x * GROUP) {
        let image = i / hw;
        let cell = i32(i % hw);
        let cy = cell / i32(p.w);
        let cx = cell % i32(p.w);
        let eb = image * p.d * hw;
        var logit: array<f32, 9>;
        var m = -3.4e38;
        for (var k = 0u; k < 9u; k++) {
            let nb = neighbour(cy, cx, k);
            var v = 0.0;
            if (nb >= 0) {
                for (var e = 0u; e < p.d; e++) {
                    v += theta[eb + e * hw + u32(cell)] * phi[eb + e * hw + u32(nb)];
                }
                v *= p.scale;
                m = max(m, v);
            }
            logit[k] = v;
        }
        var sum = 0.0;
        for (var k = 0u; k < 9u; k++) {
            var e = 0.0;
            if (neighbour(cy, cx, k) >= 0) {
                e = exp(logit[k] - m);
            }
            logit[k] = e;
            sum += e;
        }
        let wb = image * 9u * hw;
        for (var k = 0u; k < 9u; k++) {
            logit[k] /= sum;
            wts[wb + k * hw + u32(cell)] = logit[k];
        }
        let xb = image * p.c * hw;
        for (var ch = 0u; ch < p.c; ch++) {
            var acc = 0.0;
            for (var k = 0u; k < 9u; k++) {
                let nb = neighbour(cy, cx, k);
                if (nb >= 0) {
                    acc += logit[k] * x[xb + ch * hw + u32(nb)];
                }
            }
            y[xb + ch * hw + u32(cell)] = acc;
        }
    }
}

// Bilateral backward, part 1, per (image, cell i): dlog_k = w_k (dw_k - sum_k' w_k' dw_k') with
// dw_k = dy_i . x_j; demb (dL/dtheta_i) = scale * sum_k dlog_k phi_j.
@compute @workgroup_size(256)
fn bilateral_backward_query(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let hw = p.h * p.w;
    for (var i = gid.x; i < p.images * hw; i += nwg.x * GROUP) {
        let image = i / hw;
        let cell = i32(i % hw);
        let cy = cell / i32(p.w);
        let cx = cell % i32(p.w);
        let xb = image * p.c * hw;
        let wb = image * 9u * hw;
        let eb = image * p.d * hw;
        var dw: array<f32, 9>;
        var dot = 0.0;
        for (var k = 0u; k < 9u; k++) {
            let nb = neighbour(cy, cx, k);
            var v = 0.0;
            if (nb >= 0) {
                for (var ch = 0u; ch < p.c; ch++) {
                    v += y[xb + ch * hw + u32(cell)] * x[xb + ch * hw + u32(nb)];
                }
            }
            dw[k] = v;
            dot += v * wts[wb + k * hw + u32(cell)];
        }
        for (var k = 0u; k < 9u; k++) {
            let g = wts[wb + k * hw + u32(cell)] * (dw[k] - dot);
            dw[k] = g;
            dlog[wb + k * hw + u32(cell)] = g;
        }
        for (var e = 0u; e < p.d; e++) {
            var acc = 0.0;
            for (var k = 0u; k < 9u; k++) {
                let nb = neighbour(cy, cx, k);
                if (nb >= 0) {
                    acc += dw[k] * phi[eb + e * hw + u32(nb)];
                }
            }
            demb[eb + e * hw + u32(cell)] = p.scale * acc;
        }
    }
}

// Bilateral backward, part 2, per (image, cell j): the cells i that read j as their neighbour k
// are j minus offset k. demb (dL/dphi_j) = scale * sum dlog_ik theta_i; dx_j += sum w_ik dy_i.
@compute @workgroup_size(256)
fn bilateral_backward_key(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let hw = p.h * p.w;
    for (var j = gid.x; j < p.images * hw; j += nwg.x * GROUP) {
        let image = j / hw;
        let cell = i32(j % hw);
        let cy = cell / i32(p.w);
        let cx = cell % i32(p.w);
        let xb = image * p.c * hw;
        let wb = image * 9u * hw;
        let eb = image * p.d * hw;
        for (var e = 0u; e < p.d; e++) {
            var acc = 0.0;
            for (var k = 0u; k < 9u; k++) {
                // i = j - offset(k) is neighbour 8 - k of j.
                let src = neighbour(cy, cx, 8u - k);
                if (src >= 0) {
                    acc += dlog[wb + k * hw + u32(src)] * theta[eb + e * hw + u32(src)];
                }
            }
            demb[eb + e * hw + u32(cell)] = p.scale * acc;
        }
        for (var ch = 0u; ch < p.c; ch++) {
            var acc = 0.0;
            for (var k = 0u; k < 9u; k++) {
                let src = neighbour(cy, cx, 8u - k);
                if (src >= 0) {
                    acc += wts[wb + k * hw + u32(src)] * y[xb + ch * hw + u32(src)];
                }
            }
            dx[xb + ch * hw + u32(cell)] += acc;
        }
    }
}
