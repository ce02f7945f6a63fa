//! The gpu engine's host-side mirrors of its shaders agree with the shaders, as naga reflects
//! them (no adapter needed): each `#[repr(C)]` parameter struct has its WGSL `Params` struct's
//! size, member names, member offsets and scalar types; each entry point enum value names a
//! compute entry point of its file, and every compute entry point has a value.

use std::collections::BTreeSet;
use std::mem::{offset_of, size_of};

use advlens::engine::gpu::uniforms::{
    ApgdParams, AttackParams, DenoiseParams, DepthwiseParams, ElementwiseParams, MatmulParams,
    PoolParams, SoftmaxParams, Uniform,
};
use advlens::engine::gpu::{Entry, Shader};

/// A Rust parameter struct as the test sees it.
struct Layout {
    rust: &'static str,
    shader: Shader,
    size: usize,
    /// (name, offset, scalar type name) per field, in declaration order.
    fields: Vec<(&'static str, usize, &'static str)>,
}

/// The layout of `$t`, whose fields are listed with their types: a field missing from the list
/// changes the struct's size, a wrong name or type does not compile, so the list is the struct.
macro_rules! layout {
    ($t:ty { $($field:ident: $ty:ident),* $(,)? }) => {{
        let value = <$t>::default();
        $(let _: $ty = value.$field;)*
        Layout {
            rust: stringify!($t),
            shader: <$t as Uniform>::SHADER,
            size: size_of::<$t>(),
            fields: vec![$((stringify!($field), offset_of!($t, $field), stringify!($ty))),*],
        }
    }};
}

// Four fields a line, as the WGSL structs are written.
#[rustfmt::skip]
fn layouts() -> Vec<Layout> {
    vec![
        layout!(MatmulParams {
            m: u32, n: u32, k: u32, zdiv: u32,
            alpha: f32, beta: f32, bias_mode: u32, a_mode: u32,
            a_z1: u32, a_z2: u32, a_rs: u32, a_cs: u32,
            b_z1: u32, b_z2: u32, b_rs: u32, b_cs: u32,
            c_z1: u32, c_z2: u32, c_rs: u32, c_cs: u32,
            b_mode: u32, h: u32, w: u32, oh: u32,
            ow: u32, kh: u32, kw: u32, stride: u32,
            pad_t: u32, pad_l: u32, chan: u32, bias_z2: u32,
        }),
        layout!(ElementwiseParams {
            count: u32, c: u32, hw: u32, extra: u32,
        }),
        layout!(PoolParams {
            planes: u32, h: u32, w: u32, oh: u32,
            ow: u32, kh: u32, kw: u32, stride: u32,
            pad_t: u32, pad_l: u32, kind: u32, unused: u32,
        }),
        layout!(DepthwiseParams {
            planes: u32, c: u32, h: u32, w: u32,
            oh: u32, ow: u32, kh: u32, kw: u32,
            stride: u32, pad_t: u32, pad_l: u32, bias: u32,
        }),
        layout!(SoftmaxParams {
            rows: u32, cols: u32, scale: f32, unused: u32,
        }),
        layout!(DenoiseParams {
            planes: u32, h: u32, w: u32, c: u32,
            d: u32, images: u32, scale: f32, unused: u32,
        }),
        layout!(AttackParams {
            n: u32, k: u32, dim: u32, step: u32,
            eps: f32, alpha: f32, mu: f32, dir: f32,
            l2: u32, momentum: u32, scratch: u32, mode: u32,
        }),
        layout!(ApgdParams {
            n: u32, dim: u32, eps: f32, a: f32,
            l2: u32, mode: u32, scratch: u32, per: u32,
        }),
    ]
}

fn parse(shader: Shader) -> naga::Module {
    naga::front::wgsl::parse_str(shader.source()).unwrap_or_else(|e| {
        panic!(
            "{}: {}",
            shader.file_name(),
            e.emit_to_string(shader.source())
        )
    })
}

/// The WGSL scalar type name of `ty` (`u32`, `f32`, …).
fn scalar_name(module: &naga::Module, ty: naga::Handle<naga::Type>) -> String {
    match &module.types[ty].inner {
        naga::TypeInner::Scalar(s) => match (s.kind, s.width) {
            (naga::ScalarKind::Uint, 4) => "u32".into(),
            (naga::ScalarKind::Sint, 4) => "i32".into(),
            (naga::ScalarKind::Float, 4) => "f32".into(),
            other => format!("{other:?}"),
        },
        other => format!("{other:?}"),
    }
}

#[test]
fn every_parameter_struct_matches_its_shader() {
    let layouts = layouts();
    let covered: BTreeSet<&str> = layouts.iter().map(|l| l.shader.file_name()).collect();
    let all: BTreeSet<&str> = Shader::ALL.iter().map(|s| s.file_name()).collect();
    assert_eq!(covered, all, "one parameter struct per shader");
    for layout in layouts {
        let what = format!("{} vs {}", layout.rust, layout.shader.file_name());
        let module = parse(layout.shader);
        // The struct bound as the uniform at binding 0: the block every launch uploads.
        let uniforms: Vec<_> = module
            .global_variables
            .iter()
            .filter(|(_, v)| v.space == naga::AddressSpace::Uniform)
            .collect();
        assert_eq!(uniforms.len(), 1, "{what}: one uniform");
        let var = uniforms[0].1;
        assert_eq!(var.binding.as_ref().map(|b| b.binding), Some(0), "{what}");
        let ty = &module.types[var.ty];
        assert_eq!(ty.name.as_deref(), Some("Params"), "{what}");
        let naga::TypeInner::Struct { members, span } = &ty.inner else {
            panic!("{what}: the uniform is not a struct");
        };
        assert_eq!(layout.size, *span as usize, "{what}: size");
        assert_eq!(
            layout.size % 16,
            0,
            "{what}: uniform blocks are 16-byte multiples"
        );
        let want: Vec<(String, usize, String)> = members
            .iter()
            .map(|m| {
                (
                    m.name.clone().unwrap_or_default(),
                    m.offset as usize,
                    scalar_name(&module, m.ty),
                )
            })
            .collect();
        let got: Vec<(String, usize, String)> = layout
            .fields
            .iter()
            .map(|&(n, o, t)| (n.to_string(), o, t.to_string()))
            .collect();
        assert_eq!(got, want, "{what}: (name, offset, type) per member");
    }
}

#[test]
fn entry_points_match_the_shaders() {
    let names: BTreeSet<(&str, &str)> = Entry::ALL
        .iter()
        .map(|e| (e.shader().file_name(), e.name()))
        .collect();
    assert_eq!(names.len(), Entry::ALL.len(), "entry points are distinct");
    for shader in Shader::ALL {
        let module = parse(shader);
        let in_module: BTreeSet<&str> = module
            .entry_points
            .iter()
            .filter(|e| e.stage == naga::ShaderStage::Compute)
            .map(|e| e.name.as_str())
            .collect();
        let declared: BTreeSet<&str> = Entry::ALL
            .iter()
            .filter(|e| e.shader() == shader)
            .map(|e| e.name())
            .collect();
        assert_eq!(declared, in_module, "{}", shader.file_name());
    }
}
