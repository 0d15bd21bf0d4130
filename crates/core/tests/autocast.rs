//! `precision = "bf16_autocast"`: libtorch's autocast region around the forward pass. Against
//! the same weights in f32: the loss and the gradients agree to bf16's precision (stated
//! tolerances) but are not identical (bf16 really ran); parameters and gradients stay f32; the
//! region ends with the forward pass (an f32 model afterwards is bitwise unchanged) and works
//! on any thread (data-parallel workers enter their own).

mod common;

#[cfg(feature = "cpp")]
use common::{build, tokens};
#[cfg(feature = "cpp")]
use strata_core::Gpt;
use strata_core::{DwaConfig, MlpKind, ModelConfig, NormKind, PositionKind};
use strata_tensor::Precision;
#[cfg(feature = "cpp")]
use tch::{Kind, Tensor, nn};

/// Largest allowed |loss(autocast) - loss(f32)| (losses near ln(vocab) = 4.2; measured
/// 4.8e-5 to 6.5e-5 on these models).
#[cfg(feature = "cpp")]
const LOSS_TOLERANCE: f64 = 1e-3;
/// Largest allowed ‖g(autocast) - g(f32)‖ / ‖g(f32)‖ over all gradients (measured 4.6e-3 to
/// 5.8e-3).
#[cfg(feature = "cpp")]
const GRAD_TOLERANCE: f64 = 2e-2;

/// The model kinds checked: the 2019 block, the modern block, DenseFormer 1x1.
fn kinds() -> Vec<(&'static str, ModelConfig)> {
    let base = ModelConfig {
        vocab_size: 67,
        n_layer: 2,
        n_head: 4,
        d_model: 64,
        block_size: 16,
        ..ModelConfig::default()
    };
    let modern = ModelConfig {
        mlp: MlpKind::Relu2,
        norm: NormKind::Rmsnorm,
        positions: PositionKind::Rotary,
        qk_norm: true,
        tied_embeddings: false,
        ..base.clone()
    };
    let dwa = ModelConfig {
        dwa: Some(DwaConfig {
            dilation: 1,
            period: 1,
        }),
        ..base.clone()
    };
    vec![("baseline", base), ("modern", modern), ("dwa", dwa)]
}

/// The loss of `model` on fixed batches and the flattened gradients (name order).
#[cfg(feature = "cpp")]
fn loss_and_grads(vs: &nn::VarStore, model: &Gpt) -> (f64, Tensor) {
    let (x, y) = (tokens(4, 16, 67, 1), tokens(4, 16, 67, 2));
    let loss = model.loss(&x, &y, false).unwrap();
    assert_eq!(loss.kind(), Kind::Float);
    loss.backward();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let grads: Vec<Tensor> = vars
        .iter()
        .map(|(name, t)| {
            assert_eq!(t.kind(), Kind::Float, "{name}");
            let g = t.grad();
            assert_eq!(g.kind(), Kind::Float, "{name}'s gradient");
            g.flatten(0, -1)
        })
        .collect();
    (loss.double_value(&[]), Tensor::cat(&grads, 0))
}

#[cfg(not(feature = "cpp"))]
#[test]
fn without_the_cpp_feature_autocast_is_refused_naming_the_field() {
    let (_, config) = kinds().remove(0);
    let config = ModelConfig {
        precision: Precision::Bf16Autocast,
        ..config
    };
    let err = config.validate("model.toml").unwrap_err().to_string();
    assert!(
        err.contains("model.precision") && err.contains("`cpp` feature"),
        "{err}"
    );
}

#[cfg(feature = "cpp")]
#[test]
fn autocast_agrees_with_f32_to_bf16_precision_and_leaves_no_state_behind() {
    for (name, config) in kinds() {
        let auto_config = ModelConfig {
            precision: Precision::Bf16Autocast,
            ..config.clone()
        };
        let (vs32, m32) = build(&config, 7);
        let (vs_ac, m_ac) = build(&auto_config, 7);
        let (l32, g32) = loss_and_grads(&vs32, &m32);
        let (l_ac, g_ac) = loss_and_grads(&vs_ac, &m_ac);
        let loss_gap = (l_ac - l32).abs();
        let grad_gap = (&g_ac - &g32).norm().double_value(&[]) / g32.norm().double_value(&[]);
        assert!(
            loss_gap > 0.0,
            "{name}: autocast changed nothing (bf16 did not run)"
        );
        assert!(loss_gap <= LOSS_TOLERANCE, "{name}: loss {l_ac} vs {l32}");
        assert!(
            grad_gap > 0.0 && grad_gap <= GRAD_TOLERANCE,
            "{name}: gradients differ by {grad_gap}"
        );
        // The region ended: the f32 model gives the same loss, bit for bit.
        let again = m32
            .loss(&tokens(4, 16, 67, 1), &tokens(4, 16, 67, 2), false)
            .unwrap()
            .double_value(&[]);
        assert_eq!(again.to_bits(), l32.to_bits(), "{name}: autocast leaked");
        // A worker thread enters its own region and computes the same loss.
        let on_thread = std::thread::spawn(move || {
            let (_vs, model) = build(&auto_config, 7);
            tch::no_grad(|| {
                model
                    .loss(&tokens(4, 16, 67, 1), &tokens(4, 16, 67, 2), false)
                    .unwrap()
                    .double_value(&[])
            })
        })
        .join()
        .unwrap();
        assert_eq!(on_thread.to_bits(), l_ac.to_bits(), "{name}: thread");
    }
}
