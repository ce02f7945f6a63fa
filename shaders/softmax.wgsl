// Row softmax for the non-local denoise blocks, and its backward. `rows` rows of `cols` values;
// one workgroup of 64 threads per row (grid-stride over rows), reductions in workgroup memory.

struct Params {
    rows: u32, cols: u32, scale: f32, unused: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> s: array<f32>;
@group(0) @binding(2) var<storage, read_write> prob: array<f32>;

const LANES: u32 = 64u;
var<workgroup> red: array<f32, 64>;

fn reduce_max(v: f32, lane: u32) -> f32 {
    red[lane] = v;
    workgroupBarrier();
    for (var off = LANES / 2u; off > 0u; off /= 2u) {
        if (lane < off) {
            red[lane] = max(red[lane], red[lane + off]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(v: f32, lane: u32) -> f32 {
    red[lane] = v;
    workgroupBarrier();
    for (var off = LANES / 2u; off > 0u; off /= 2u) {
        if (lane < off) {
            red[lane] = red[lane] + red[lane + off];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// prob[row] = softmax(scale * s[row]).
@compute @workgroup_size(64)
fn softmax_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    for (var row = wg.x; row < p.rows; row += nwg.x) {
        let base = row * p.cols;
        var m = -3.4e38;
        for (var j = lane; j < p.cols; j += LANES) {
            m = max(m, p.scale * s[base + j]);
        }
        m = reduce_max(m, lane);
        var sum = 0.0;
        for (var j = lane; j < p.cols; j += LANES) {
            let e = exp(p.scale * s[base + j] - m);
            prob[base + j] = e;
            sum += e;
        }
        sum = reduce_sum(sum, lane);
        let inv = 1.0 / sum;
        for (var j = lane; j < p.cols; j += LANES) {
            prob[base + j] *= inv;
        }
    }
}

// s holds dL/dprob on entry and dL/d(s) on exit: scale * prob * (ds - sum(ds * prob)).
@compute @workgroup_size(64)
fn softmax_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    for (var row = wg.x; row < p.rows; row += nwg.x) {
        let base = row * p.cols;
        var dot = 0.0;
        for (var j = lane; j < p.cols; j += LANES) {
            dot += s[base + j] * prob[base + j];
        }
        dot = reduce_sum(dot, lane);
        for (var j = lane; j < p.cols; j += LANES) {
            s[base + j] = p.scale * prob[base + j] * (s[base + j] - dot);
        }
    }
}
