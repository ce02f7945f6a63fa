// Element-wise kernels of the gpu engine, forward and input gradient. NCHW layout; `c` channels
// of `hw` cells per image, `count` elements in all. Every kernel walks its elements in a
// grid-stride loop, so any size fits the dispatch limits. Gradient kernels add into their
// destination (a node's input gradient sums the contributions of all its consumers).

struct Params {
    count: u32, c: u32, hw: u32, extra: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read_write> other: array<f32>;
@group(0) @binding(4) var<storage, read_write> aux: array<f32>;

const GROUP: u32 = 256u;

fn first(gid: vec3<u32>) -> u32 {
    return gid.x;
}

fn stride_of(nwg: vec3<u32>) -> u32 {
    return nwg.x * GROUP;
}

fn channel(i: u32) -> u32 {
    return (i / p.hw) % p.c;
}

// dst = (src[order[c]] - mean[c]) * inv_std[c] with `c` output and `extra` input channels;
// aux = [order (as f32), mean, inv_std], `c` entries each.
@compute @workgroup_size(256)
fn normalize_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = first(gid); i < p.count; i += stride_of(nwg)) {
        let ch = channel(i);
        let cell = i % p.hw;
        let image = i / (p.hw * p.c);
        let src_ch = u32(aux[ch]);
        dst[i] = (src[(image * p.extra + src_ch) * p.hw + cell] - aux[p.c + ch]) * aux[2u * p.c + ch];
    }
}

// dst (the input gradient; `count` input elements) += the output gradient of every output channel
// that reads the element, times its inv_std.
@compute @workgroup_size(256)
fn normalize_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = first(gid); i < p.count; i += stride_of(nwg)) {
        let src_ch = (i / p.hw) % p.extra;
        let cell = i % p.hw;
        let image = i / (p.hw * p.extra);
        var acc = 0.0;
        for (var ch = 0u; ch < p.c; ch++) {
            if (u32(aux[ch]) == src_ch) {
                acc += src[(image * p.c + ch) * p.hw + cell] * aux[2u * p.c + ch];
            }
        }
        dst[i] += acc;
    }
}

// Batch norm in inference mode, folded: dst = src * scale[c] + shift[c]; aux = [scale, shift].
@compute @workgroup_size(256)
fn affine_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = first(gid); i < p.count; i += stride_of(nwg)) {
        let ch = channel(i);
        dst[i] = src[i] * aux[ch] + aux[p.c + ch];
    }
}

// dst += src * scale[c].
@compute @workgroup_size(256)
fn affine_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = first(gid); i < p.count; i += stride_of(nwg)) {
        dst[i] += src[i] * aux[channel(i)];
    }
}

@compute @workgroup_size(256)
fn relu_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = first(gid); i < p.count; i += stride_of(nwg)) {
        dst[i] = max(src[i], 0.0);
    }
}

// dst += src where the ReLU's output (other) is positive.
@compute @workgroup_size(256)
fn relu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = first(gid); i < p.count; i += stride_of(nwg)) {
        dst[i] += select(0.0, src[i], other[i] > 0.0);
    }
}

@compute @workgroup_size(256)
fn relu6_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = first(gid); i < p.count; i += stride_of(nwg)) {
        dst[i] = clamp(src[i], 0.0, 6.0);
    }
}

// dst += src where the ReLU6's input (other) lies strictly inside (0, 6).
@compute @workgroup_size(256)
fn relu6_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = first(gid); i < p.count; i += stride_of(nwg)) {
        let x = other[i];
        dst[i] += select(0.0, src[i], x > 0.0 && x < 6.0);
    }
}

// dst = src + other.
@compute @workgroup_size(256)
fn add_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = first(gid); i < p.count; i += stride_of(nwg)) {
        dst[i] = src[i] + other[i];
    }
}

// dst += src.
@compute @workgroup_size(256)
fn accumulate(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = first(gid); i < p.count; i += stride_of(nwg)) {
        dst[i] += src[i];
    }
}

// Global average pool: dst[plane] = mean of src's plane; `count` planes of `hw` cells.
@compute @workgroup_size(256)
fn global_pool_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = first(gid); i < p.count; i += stride_of(nwg)) {
        var acc = 0.0;
        for (var j = 0u; j < p.hw; j++) {
            acc += src[i * p.hw + j];
        }
        dst[i] = acc / f32(p.hw);
    }
}

// dst (count = planes * hw cells) += src[plane] / hw.
@compute @workgroup_size(256)
fn global_pool_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = first(gid); i < p.count; i += stride_of(nwg)) {
        dst[i] += src[i / p.hw] / f32(p.hw);
    }
}
