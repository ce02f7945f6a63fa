// Tiled matrix product C[z] = alpha * A[z] * B[z] + beta * C[z] (+ bias), the one GEMM core of the
// gpu engine. The loaders make it serve three jobs (chosen by uniform flags, so every branch is
// uniform across a workgroup):
//   a_mode 0: A read through strides (plain or transposed matrices, 1x1 convolutions, linear);
//   a_mode 1: A = the weights of a convolution laid out for its input gradient
//             (rows = input channels of the group, k = (out channel, kernel row, kernel col));
//   b_mode 0: B read through strides;
//   b_mode 1: B = the im2col matrix of a convolution input, formed on the fly (forward);
//   b_mode 2: B = the output gradient of a convolution gathered for its input gradient
//             (only the taps that land on the stride grid contribute).
// z indexes (image, group); each operand's offset is z1 * s_z1 + z2 * s_z2 with
// z1 = z / zdiv, z2 = z % zdiv. Padded taps read zero through `select`, never out of bounds.
// Tile: 32 x 32 outputs per workgroup, 8 x 8 threads with 4 x 4 outputs each, 16-deep k slices.

struct Params {
    m: u32, n: u32, k: u32, zdiv: u32,
    alpha: f32, beta: f32, bias_mode: u32, a_mode: u32,
    a_z1: u32, a_z2: u32, a_rs: u32, a_cs: u32,
    b_z1: u32, b_z2: u32, b_rs: u32, b_cs: u32,
    c_z1: u32, c_z2: u32, c_rs: u32, c_cs: u32,
    b_mode: u32, h: u32, w: u32, oh: u32,
    ow: u32, kh: u32, kw: u32, stride: u32,
    pad_t: u32, pad_l: u32, chan: u32, bias_z2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> a_buf: array<f32>;
@group(0) @binding(2) var<storage, read_write> b_buf: array<f32>;
@group(0) @binding(3) var<storage, read_write> c_buf: array<f32>;
@group(0) @binding(4) var<storage, read_write> bias_buf: array<f32>;

const TILE: u32 = 32u;
const DEPTH: u32 = 16u;

var<workgroup> a_tile: array<array<f32, 32>, 16>;
var<workgroup> b_tile: array<array<f32, 32>, 16>;

fn load_a(base: u32, row: u32, col: u32) -> f32 {
    if (row >= p.m || col >= p.k) {
        return 0.0;
    }
    if (p.a_mode == 0u) {
        return a_buf[base + row * p.a_rs + col * p.a_cs];
    }
    // Convolution weights [O, Cg, KH, KW] read as [Cg, (Og, KH, KW)] for group g.
    let kk = p.kh * p.kw;
    let o = col / kk;
    let r = col % kk;
    return a_buf[base + o * p.chan * kk + row * kk + r];
}

fn load_b(base: u32, row: u32, col: u32) -> f32 {
    if (row >= p.k || col >= p.n) {
        return 0.0;
    }
    if (p.b_mode == 0u) {
        return b_buf[base + row * p.b_rs + col * p.b_cs];
    }
    let kk = p.kh * p.kw;
    let c = row / kk;
    let r = row % kk;
    let ky = r / p.kw;
    let kx = r % p.kw;
    if (p.b_mode == 1u) {
        // Forward im2col: row = (input channel, ky, kx), col = output pixel.
        let oy = col / p.ow;
        let ox = col % p.ow;
        let iy = i32(oy * p.stride + ky) - i32(p.pad_t);
        let ix = i32(ox * p.stride + kx) - i32(p.pad_l);
        let inside = iy >= 0 && ix >= 0 && iy < i32(p.h) && ix < i32(p.w);
        let idx = select(0u, base + c * p.h * p.w + u32(iy) * p.w + u32(ix), inside);
        return select(0.0, b_buf[idx], inside);
    }
    // Input gradient: row = (output channel, ky, kx), col = input pixel.
    let iy = col / p.w;
    let ix = col % p.w;
    let ty = i32(iy + p.pad_t) - i32(ky);
    let tx = i32(ix + p.pad_l) - i32(kx);
    let s = i32(p.stride);
    let oy = ty / s;
    let ox = tx / s;
    let ok = ty >= 0 && tx >= 0 && ty % s == 0 && tx % s == 0 && oy < i32(p.oh) && ox < i32(p.ow);
    let idx = select(0u, base + c * p.oh * p.ow + u32(oy) * p.ow + u32(ox), ok);
    return select(0.0, b_buf[idx], ok);
}

@compute @workgroup_size(8, 8, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let z = wg.z;
    let z1 = z / p.zdiv;
    let z2 = z % p.zdiv;
    let a_base = z1 * p.a_z1 + z2 * p.a_z2;
    let b_base = z1 * p.b_z1 + z2 * p.b_z2;
    let c_base = z1 * p.c_z1 + z2 * p.c_z2;
    let row0 = wg.y * TILE;
    let col0 = wg.x * TILE;
    var acc: array<array<f32, 4>, 4>;
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            acc[i][j] = 0.0;
        }
    }
    let steps = (p.k + DEPTH - 1u) / DEPTH;
    for (var s = 0u; s < steps; s++) {
        let k0 = s * DEPTH;
        // 512 values per operand tile, 8 per thread.
        for (var e = 0u; e < 8u; e++) {
            let flat = li + e * 64u;
            // A tile as [k][m]: consecutive threads walk k for coalesced row-major reads.
            let ak = flat % DEPTH;
            let am = flat / DEPTH;
            a_tile[ak][am] = load_a(a_base, row0 + am, k0 + ak);
            let bn = flat % TILE;
            let bk = flat / TILE;
            b_tile[bk][bn] = load_b(b_base, k0 + bk, col0 + bn);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < DEPTH; kk++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                av[i] = a_tile[kk][lid.y + 8u * i];
                bv[i] = b_tile[kk][lid.x + 8u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i][j] = fma(av[i], bv[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + lid.y + 8u * i;
        if (row >= p.m) {
            continue;
        }
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + lid.x + 8u * j;
            if (col >= p.n) {
                continue;
            }
            let idx = c_base + row * p.c_rs + col * p.c_cs;
            var v = p.alpha * acc[i][j];
            if (p.beta != 0.0) {
                v += p.beta * c_buf[idx];
            }
            if (p.bias_mode == 1u) {
                v += bias_buf[z2 * p.bias_z2 + row];
            } else if (p.bias_mode == 2u) {
                v += bias_buf[col];
            }
            c_buf[idx] = v;
        }
    }
}
