// Depthwise convolution (one filter per channel: groups = input channels = output channels),
// forward and input gradient, NCHW. `planes` = images x channels of h x w cells, each filtered by
// its channel's kh x kw weights (OIHW with I = 1) to oh x ow, plus the channel's bias when
// `bias` is 1. Zero padding reads nothing. The backward is a gather: one thread per input cell
// sums the outputs whose window covers it (only the taps on the stride grid), so no atomics.

struct Params {
    planes: u32, c: u32, h: u32, w: u32,
    oh: u32, ow: u32, kh: u32, kw: u32,
    stride: u32, pad_t: u32, pad_l: u32, bias: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// Forward: the input values; backward: the output gradient.
@group(0) @binding(1) var<storage, read_write> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> bias: array<f32>;
// Forward: the output values; backward: the input gradient (added to).
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

const GROUP: u32 = 256u;

@compute @workgroup_size(256)
fn depthwise_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let total = p.planes * p.oh * p.ow;
    for (var i = gid.x; i < total; i += nwg.x * GROUP) {
        let plane = i / (p.oh * p.ow);
        let o = i % (p.oh * p.ow);
        let ch = plane % p.c;
        let y0 = i32((o / p.ow) * p.stride) - i32(p.pad_t);
        let x0 = i32((o % p.ow) * p.stride) - i32(p.pad_l);
        let base = plane * p.h * p.w;
        let wbase = ch * p.kh * p.kw;
        var acc = 0.0;
        if (p.bias == 1u) {
            acc = bias[ch];
        }
        for (var ky = 0; ky < i32(p.kh); ky++) {
            let yy = y0 + ky;
            if (yy < 0 || yy >= i32(p.h)) {
                continue;
            }
            for (var kx = 0; kx < i32(p.kw); kx++) {
                let xx = x0 + kx;
                if (xx < 0 || xx >= i32(p.w)) {
                    continue;
                }
                acc += src[base + u32(yy) * p.w + u32(xx)] * weight[wbase + u32(ky) * p.kw + u32(kx)];
            }
        }
        dst[i] = acc;
    }
}

@compute @workgroup_size(256)
fn depthwise_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let total = p.planes * p.h * p.w;
    let s = i32(p.stride);
    for (var i = gid.x; i < total; i += nwg.x * GROUP) {
        let plane = i / (p.h * p.w);
        let cell = i % (p.h * p.w);
        let ch = plane % p.c;
        // Output (oy, ox) reads input (oy*s - pad_t + ky, ox*s - pad_l + kx).
        let ty = i32(cell / p.w) + i32(p.pad_t);
        let tx = i32(cell % p.w) + i32(p.pad_l);
        let gbase = plane * p.oh * p.ow;
        let wbase = ch * p.kh * p.kw;
        var acc = 0.0;
        for (var ky = 0; ky < i32(p.kh); ky++) {
            let sy = ty - ky;
            if (sy < 0 || sy % s != 0 || sy / s >= i32(p.oh)) {
                continue;
            }
            for (var kx = 0; kx < i32(p.kw); kx++) {
                let sx = tx - kx;
                if (sx < 0 || sx % s != 0 || sx / s >= i32(p.ow)) {
                    continue;
                }
                acc += src[gbase + u32(sy / s) * p.ow + u32(sx / s)] * weight[wbase + u32(ky) * p.kw + u32(kx)];
            }
        }
        dst[i] += acc;
    }
}
