//! The WGSL kernels: one [`Shader`] per file in `shaders/` (a kernel family sharing one binding
//! layout and one parameter block) and one [`Entry`] per compute entry point. Pure names and
//! sources; the device objects built from them live in the context's pipeline cache.

/// A kernel family: one WGSL file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    /// Tiled matrix products, convolution forward and input gradient.
    Matmul,
    /// Element-wise ops and global pooling.
    Elementwise,
    /// Max and average pooling.
    Pool,
    /// Depthwise convolution, forward and input gradient.
    Depthwise,
    /// Row softmax for the non-local blocks.
    Softmax,
    /// Local denoise filters (mean, median, bilateral).
    Denoise,
    /// The attack step: loss gradient on the logits, sign step, projection, random start.
    Attack,
    /// Auto-PGD's momentum step and its masked per-image copies.
    Apgd,
}

impl Shader {
    /// Every kernel family.
    pub const ALL: [Shader; 8] = [
        Shader::Matmul,
        Shader::Elementwise,
        Shader::Pool,
        Shader::Depthwise,
        Shader::Softmax,
        Shader::Denoise,
        Shader::Attack,
        Shader::Apgd,
    ];

    /// The file name under `shaders/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Shader::Matmul => "matmul.wgsl",
            Shader::Elementwise => "elementwise.wgsl",
            Shader::Pool => "pool.wgsl",
            Shader::Depthwise => "depthwise.wgsl",
            Shader::Softmax => "softmax.wgsl",
            Shader::Denoise => "denoise.wgsl",
            Shader::Attack => "attack.wgsl",
            Shader::Apgd => "apgd.wgsl",
        }
    }

    /// The WGSL source (embedded in the binary).
    pub fn source(self) -> &'static str {
        match self {
            Shader::Matmul => include_str!("../../../shaders/matmul.wgsl"),
            Shader::Elementwise => include_str!("../../../shaders/elementwise.wgsl"),
            Shader::Pool => include_str!("../../../shaders/pool.wgsl"),
            Shader::Depthwise => include_str!("../../../shaders/depthwise.wgsl"),
            Shader::Softmax => include_str!("../../../shaders/softmax.wgsl"),
            Shader::Denoise => include_str!("../../../shaders/denoise.wgsl"),
            Shader::Attack => include_str!("../../../shaders/attack.wgsl"),
            Shader::Apgd => include_str!("../../../shaders/apgd.wgsl"),
        }
    }

    /// Storage buffers the file declares (bindings 1..=n; binding 0 is the uniform parameters).
    pub fn storage_bindings(self) -> u32 {
        match self {
            Shader::Matmul | Shader::Elementwise | Shader::Pool | Shader::Depthwise => 4,
            Shader::Softmax => 2,
            Shader::Denoise => 8,
            Shader::Attack | Shader::Apgd => 8,
        }
    }
}

/// Declares [`Entry`] from one list, so a variant's name, WGSL function and family cannot drift
/// apart.
macro_rules! entries {
    ($($shader:ident { $($(#[$doc:meta])* $variant:ident = $name:literal,)* })*) => {
        /// A compute entry point (a WGSL function marked `@compute`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Entry {
            $($($(#[$doc])* $variant,)*)*
        }

        impl Entry {
            /// Every entry point of every kernel family.
            pub const ALL: &[Entry] = &[$($(Entry::$variant,)*)*];

            /// The WGSL function's name.
            pub fn name(self) -> &'static str {
                match self {
                    $($(Entry::$variant => $name,)*)*
                }
            }

            /// The file it is declared in.
            pub fn shader(self) -> Shader {
                match self {
                    $($(Entry::$variant => Shader::$shader,)*)*
                }
            }
        }
    };
}

entries! {
    Matmul {
        /// `C = αA·B + βC (+ bias)`, with convolution loaders.
        Matmul = "main",
    }
    Elementwise {
        /// Channel reorder, mean subtraction and scaling of the input.
        NormalizeForward = "normalize_forward",
        /// Gradient of [`Entry::NormalizeForward`].
        NormalizeBackward = "normalize_backward",
        /// Per-channel scale and shift (folded batch norm).
        AffineForward = "affine_forward",
        /// Gradient of [`Entry::AffineForward`].
        AffineBackward = "affine_backward",
        /// `max(x, 0)`.
        ReluForward = "relu_forward",
        /// Gradient of [`Entry::ReluForward`] (from the output).
        ReluBackward = "relu_backward",
        /// `min(max(x, 0), 6)`.
        Relu6Forward = "relu6_forward",
        /// Gradient of [`Entry::Relu6Forward`] (from the input).
        Relu6Backward = "relu6_backward",
        /// Sum of two values.
        AddForward = "add_forward",
        /// Adds one gradient into another.
        Accumulate = "accumulate",
        /// Mean over each channel's cells.
        GlobalPoolForward = "global_pool_forward",
        /// Gradient of [`Entry::GlobalPoolForward`].
        GlobalPoolBackward = "global_pool_backward",
    }
    Pool {
        /// Max or average pooling.
        PoolForward = "pool_forward",
        /// Gradient of [`Entry::PoolForward`].
        PoolBackward = "pool_backward",
    }
    Depthwise {
        /// One filter per channel (groups = channels).
        DepthwiseForward = "depthwise_forward",
        /// Gradient of [`Entry::DepthwiseForward`] with respect to its input.
        DepthwiseBackward = "depthwise_backward",
    }
    Softmax {
        /// Row softmax of scaled scores.
        SoftmaxForward = "softmax_forward",
        /// Gradient of [`Entry::SoftmaxForward`] with respect to the scores.
        SoftmaxBackward = "softmax_backward",
    }
    Denoise {
        /// 3×3 mean filter.
        MeanForward = "mean_forward",
        /// Gradient of [`Entry::MeanForward`].
        MeanBackward = "mean_backward",
        /// 3×3 median filter.
        MedianForward = "median_forward",
        /// Gradient of [`Entry::MedianForward`] (through the chosen cell).
        MedianBackward = "median_backward",
        /// Bilateral filter over 3×3 neighbourhoods with embedded similarities.
        BilateralForward = "bilateral_forward",
        /// Bilateral gradient, query side (and the weight logits).
        BilateralBackwardQuery = "bilateral_backward_query",
        /// Bilateral gradient, key side and the values.
        BilateralBackwardKey = "bilateral_backward_key",
    }
    Attack {
        /// Cross-entropy loss and its gradient on the logits, recorded per step.
        CrossEntropy = "cross_entropy",
        /// Per-example norms of the perturbation or the gradient.
        Norms = "norms",
        /// Momentum accumulation (MI-FGSM).
        Momentum = "momentum",
        /// The signed or normalised step.
        Update = "update",
        /// Projection onto the L2 ball.
        ProjectL2 = "project_l2",
    }
    Apgd {
        /// `z = P(x + η·dir(g))` with a step size per image.
        ApgdDirection = "apgd_direction",
        /// The momentum combination of `z`, the point and the previous point.
        ApgdMomentum = "apgd_momentum",
        /// Masked per-image copies between the point, the best and the fooling points.
        ApgdCopy = "apgd_copy",
    }
}
