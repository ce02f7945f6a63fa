// Windowed pooling, forward and input gradient, NCHW. `planes` = images x channels of h x w cells
// pooled to oh x ow. Max pooling picks the first largest in-map cell (row-major) of a window;
// average pooling divides by the number of in-map cells (padding excluded). The backward is a
// gather: one thread per input cell sums the windows that selected it, so no atomics are needed.

struct Params {
    planes: u32, h: u32, w: u32, oh: u32,
    ow: u32, kh: u32, kw: u32, stride: u32,
    pad_t: u32, pad_l: u32, kind: u32, unused: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;

const GROUP: u32 = 256u;

// The window of output cell (oy, ox): first in-map row/col and one past the last.
fn window(oy: u32, ox: u32) -> vec4<i32> {
    let y0 = i32(oy * p.stride) - i32(p.pad_t);
    let x0 = i32(ox * p.stride) - i32(p.pad_l);
    return vec4<i32>(max(y0, 0), max(x0, 0), min(y0 + i32(p.kh), i32(p.h)), min(x0 + i32(p.kw), i32(p.w)));
}

// Flat index (in the plane) of the window's selected cell, or -1 for an empty window.
fn argmax(base: u32, win: vec4<i32>) -> i32 {
    var best = -1;
    var best_v = 0.0;
    for (var yy = win.x; yy < win.z; yy++) {
        for (var xx = win.y; xx < win.w; xx++) {
            let idx = yy * i32(p.w) + xx;
            let v = x[base + u32(idx)];
            if (best < 0 || v > best_v) {
                best = idx;
                best_v = v;
            }
        }
    }
    return best;
}

fn cells(win: vec4<i32>) -> f32 {
    return f32(max(win.z - win.x, 0) * max(win.w - win.y, 0));
}

@compute @workgroup_size(256)
fn pool_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let total = p.planes * p.oh * p.ow;
    for (var i = gid.x; i < total; i += nwg.x * GROUP) {
        let plane = i / (p.oh * p.ow);
        let o = i % (p.oh * p.ow);
        let win = window(o / p.ow, o % p.ow);
        let base = plane * p.h * p.w;
        var v = 0.0;
        if (p.kind == 0u) {
            let best = argmax(base, win);
            if (best >= 0) {
                v = x[base + u32(best)];
            }
        } else {
            let n = cells(win);
            for (var yy = win.x; yy < win.z; yy++) {
                for (var xx = win.y; xx < win.w; xx++) {
                    v += x[base + u32(yy * i32(p.w) + xx)];
                }
            }
            v = select(0.0, v / n, n > 0.0);
        }
        y[i] = v;
    }
}

@compute @workgroup_size(256)
fn pool_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let total = p.planes * p.h * p.w;
    let s = i32(p.stride);
    for (var i = gid.x; i < total; i += nwg.x * GROUP) {
        let plane = i / (p.h * p.w);
        let cell = i32(i % (p.h * p.w));
        let cy = cell / i32(p.w);
        let cx = cell % i32(p.w);
        let base = plane * p.h * p.w;
        // Output rows whose window covers row cy: oy*s - pad_t <= cy < oy*s - pad_t + kh.
        let ty = cy + i32(p.pad_t);
        let tx = cx + i32(p.pad_l);
        let oy0 = max((ty - i32(p.kh) + s) / s, 0);
        let ox0 = max((tx - i32(p.kw) + s) / s, 0);
        let oy1 = min(ty / s, i32(p.oh) - 1);
        let ox1 = min(tx / s, i32(p.ow) - 1);
        var acc = 0.0;
        for (var oy = oy0; oy <= oy1; oy++) {
            for (var ox = ox0; ox <= ox1; ox++) {
                let win = window(u32(oy), u32(ox));
                let g = dy[plane * p.oh * p.ow + u32(oy) * p.ow + u32(ox)];
                if (p.kind == 0u) {
                    if (argmax(base, win) == cell) {
                        acc += g;
                    }
                } else {
                    acc += g / cells(win);
                }
            }
        }
        dx[i] += acc;
    }
}
