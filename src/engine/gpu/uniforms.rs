//! The uniform parameter block of each kernel family: one `#[repr(C)]` [`bytemuck::Pod`] struct
//! per WGSL `Params` struct, field for field in the same order, so the bytes a launch uploads are
//! the struct's bytes. WGSL lays a uniform struct of 4-byte scalars out densely, each block here
//! is a multiple of 16 bytes (padded with `unused` where the shader pads), and `tests/gpu_layout.rs`
//! checks every size and offset against naga's reflection of the shader.

use bytemuck::{Pod, Zeroable};

use super::kernels::Shader;

/// A parameter block: the bytes bound at binding 0 of every kernel of [`Uniform::SHADER`].
pub trait Uniform: Pod {
    /// The kernel family whose `Params` struct this mirrors.
    const SHADER: Shader;
}

/// A count or stride as the 32-bit word the kernels index with (buffers are limited to the
/// device's binding size, far below 2³² floats, so nothing is lost).
fn word(v: usize) -> u32 {
    v as u32
}

/// `shaders/matmul.wgsl`: `C[z] = α·A[z]·B[z] + β·C[z] (+ bias)`, each operand addressed by
/// `z1·s_z1 + z2·s_z2 + row·rs + col·cs` with `z1 = z / zdiv`, `z2 = z % zdiv`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct MatmulParams {
    /// Rows of `C`.
    pub m: u32,
    /// Columns of `C`.
    pub n: u32,
    /// The summed dimension.
    pub k: u32,
    /// Groups per image: splits `z` into (image, group).
    pub zdiv: u32,
    /// Scale of the product.
    pub alpha: f32,
    /// Scale of the old `C` (1 accumulates).
    pub beta: f32,
    /// 0 no bias, 1 one per row of `C` (convolution), 2 one per column (linear).
    pub bias_mode: u32,
    /// 0 strided `A`, 1 convolution weights laid out for the input gradient.
    pub a_mode: u32,
    /// `A` stride per `z1`.
    pub a_z1: u32,
    /// `A` stride per `z2`.
    pub a_z2: u32,
    /// `A` row stride.
    pub a_rs: u32,
    /// `A` column stride.
    pub a_cs: u32,
    /// `B` stride per `z1`.
    pub b_z1: u32,
    /// `B` stride per `z2`.
    pub b_z2: u32,
    /// `B` row stride.
    pub b_rs: u32,
    /// `B` column stride.
    pub b_cs: u32,
    /// `C` stride per `z1`.
    pub c_z1: u32,
    /// `C` stride per `z2`.
    pub c_z2: u32,
    /// `C` row stride.
    pub c_rs: u32,
    /// `C` column stride.
    pub c_cs: u32,
    /// 0 strided `B`, 1 im2col of a convolution input, 2 output gradient gathered for the input
    /// gradient.
    pub b_mode: u32,
    /// Convolution input height.
    pub h: u32,
    /// Convolution input width.
    pub w: u32,
    /// Convolution output height.
    pub oh: u32,
    /// Convolution output width.
    pub ow: u32,
    /// Kernel height.
    pub kh: u32,
    /// Kernel width.
    pub kw: u32,
    /// Convolution stride.
    pub stride: u32,
    /// Padding above.
    pub pad_t: u32,
    /// Padding on the left.
    pub pad_l: u32,
    /// Input channels per group.
    pub chan: u32,
    /// Bias stride per `z2` (output channels per group).
    pub bias_z2: u32,
}

impl Uniform for MatmulParams {
    const SHADER: Shader = Shader::Matmul;
}

impl MatmulParams {
    /// A plain product `C[m, n] = A[m, k]·B[k, n]`; `a`, `b`, `c` are each operand's strides
    /// `[per z1, per z2, row, column]`.
    pub fn plain(
        m: usize,
        n: usize,
        k: usize,
        a: [usize; 4],
        b: [usize; 4],
        c: [usize; 4],
    ) -> Self {
        let mut p = Self {
            m: word(m),
            n: word(n),
            k: word(k),
            zdiv: 1,
            alpha: 1.0,
            ..Self::default()
        };
        p.set_a(a);
        [p.b_z1, p.b_z2, p.b_rs, p.b_cs] = b.map(word);
        [p.c_z1, p.c_z2, p.c_rs, p.c_cs] = c.map(word);
        p
    }

    /// Sets `A`'s strides `[per z1, per z2, row, column]`.
    pub fn set_a(&mut self, a: [usize; 4]) {
        [self.a_z1, self.a_z2, self.a_rs, self.a_cs] = a.map(word);
    }

    /// Sets the convolution geometry `[h, w, oh, ow, kh, kw, stride, pad_t, pad_l]` the
    /// convolution loaders read.
    pub fn set_geometry(&mut self, geom: [usize; 9]) {
        [
            self.h,
            self.w,
            self.oh,
            self.ow,
            self.kh,
            self.kw,
            self.stride,
            self.pad_t,
            self.pad_l,
        ] = geom.map(word);
    }

    /// Workgroups for `z` products: 32×32 outputs of `C` per workgroup.
    pub fn groups(&self, z: usize) -> [u32; 3] {
        [
            self.n.div_ceil(32).max(1),
            self.m.div_ceil(32).max(1),
            word(z.max(1)),
        ]
    }
}

/// `shaders/elementwise.wgsl`: NCHW element-wise ops and global pooling.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct ElementwiseParams {
    /// Elements in all.
    pub count: u32,
    /// Channels per image.
    pub c: u32,
    /// Cells per channel.
    pub hw: u32,
    /// Op-specific: the input's channel count for the input normalisation.
    pub extra: u32,
}

impl Uniform for ElementwiseParams {
    const SHADER: Shader = Shader::Elementwise;
}

impl ElementwiseParams {
    /// The block for `count` elements of `c` channels of `hw` cells.
    pub fn new(count: usize, c: usize, hw: usize, extra: usize) -> Self {
        Self {
            count: word(count),
            c: word(c),
            hw: word(hw),
            extra: word(extra),
        }
    }
}

/// `shaders/pool.wgsl`: windowed max or average pooling.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct PoolParams {
    /// Images × channels.
    pub planes: u32,
    /// Input height.
    pub h: u32,
    /// Input width.
    pub w: u32,
    /// Output height.
    pub oh: u32,
    /// Output width.
    pub ow: u32,
    /// Window height.
    pub kh: u32,
    /// Window width.
    pub kw: u32,
    /// Window stride.
    pub stride: u32,
    /// Padding above.
    pub pad_t: u32,
    /// Padding on the left.
    pub pad_l: u32,
    /// 0 max, 1 average.
    pub kind: u32,
    /// Pads the block to 16 bytes.
    pub unused: u32,
}

impl Uniform for PoolParams {
    const SHADER: Shader = Shader::Pool;
}

/// `shaders/depthwise.wgsl`: depthwise convolution.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct DepthwiseParams {
    /// Images × channels.
    pub planes: u32,
    /// Channels.
    pub c: u32,
    /// Input height.
    pub h: u32,
    /// Input width.
    pub w: u32,
    /// Output height.
    pub oh: u32,
    /// Output width.
    pub ow: u32,
    /// Kernel height.
    pub kh: u32,
    /// Kernel width.
    pub kw: u32,
    /// Stride.
    pub stride: u32,
    /// Padding above.
    pub pad_t: u32,
    /// Padding on the left.
    pub pad_l: u32,
    /// 1 when a bias is added.
    pub bias: u32,
}

impl Uniform for DepthwiseParams {
    const SHADER: Shader = Shader::Depthwise;
}

/// `shaders/softmax.wgsl`: row softmax of scaled scores.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct SoftmaxParams {
    /// Rows.
    pub rows: u32,
    /// Scores per row.
    pub cols: u32,
    /// Factor applied to the scores (1/√d).
    pub scale: f32,
    /// Pads the block to 16 bytes.
    pub unused: u32,
}

impl Uniform for SoftmaxParams {
    const SHADER: Shader = Shader::Softmax;
}

/// `shaders/denoise.wgsl`: 3×3 mean, median and bilateral filters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct DenoiseParams {
    /// Images × channels.
    pub planes: u32,
    /// Map height.
    pub h: u32,
    /// Map width.
    pub w: u32,
    /// Channels per image.
    pub c: u32,
    /// Embedding width of the bilateral filter.
    pub d: u32,
    /// Images.
    pub images: u32,
    /// Factor applied to embedding dot products (1/√d).
    pub scale: f32,
    /// Pads the block to 16 bytes.
    pub unused: u32,
}

impl Uniform for DenoiseParams {
    const SHADER: Shader = Shader::Denoise;
}

/// `shaders/attack.wgsl`: one step of the device-side attack loop.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct AttackParams {
    /// Examples.
    pub n: u32,
    /// Logits per example.
    pub k: u32,
    /// Pixels per example.
    pub dim: u32,
    /// The step whose record row the kernels write.
    pub step: u32,
    /// Perturbation budget.
    pub eps: f32,
    /// Step size.
    pub alpha: f32,
    /// Momentum decay (MI-FGSM).
    pub mu: f32,
    /// +1 to ascend the loss, −1 to descend it (targeted).
    pub dir: f32,
    /// 1 for the L2 norm, 0 for L∞.
    pub l2: u32,
    /// 1 when momentum is on.
    pub momentum: u32,
    /// Offset of the scratch slots in the record buffer.
    pub scratch: u32,
    /// What `norms` measures: 0 the perturbation (recorded), 1 the gradient's L1 norm, 2 the step
    /// direction's L2 norm, 3 the perturbation's L2 norm.
    pub mode: u32,
}

impl Uniform for AttackParams {
    const SHADER: Shader = Shader::Attack;
}

/// `shaders/apgd.wgsl`: Auto-PGD's step and copies.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct ApgdParams {
    /// Examples.
    pub n: u32,
    /// Pixels per example.
    pub dim: u32,
    /// Perturbation budget.
    pub eps: f32,
    /// The weight of the new direction against the momentum (1 on the first step, then 0.75).
    pub a: f32,
    /// 1 for the L2 norm, 0 for L∞.
    pub l2: u32,
    /// What `apgd_copy` does: 0 keep the best and fooling points, 1 go back to the best point, 2
    /// write the result.
    pub mode: u32,
    /// Offset of the attack family's scratch slots in the record buffer.
    pub scratch: u32,
    /// Offset of the per-image step sizes and masks in the record buffer.
    pub per: u32,
}

impl Uniform for ApgdParams {
    const SHADER: Shader = Shader::Apgd;
}
