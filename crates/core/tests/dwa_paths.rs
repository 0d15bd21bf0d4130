//! DenseFormer's DWA through the fused layer stack (training) and the no-grad kernels
//! (evaluation) against the reference loop over live tensors.

mod common;

use strata_core::{Gpt, Implementation};
use strata_tensor::TensorExt;
use tch::{Tensor, nn};

/// Replaces every DWA weight by a random value, so that no path can pass by leaning on the
/// one-hot initialisation.
fn randomise_dwa(vs: &nn::VarStore) {
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            if name.starts_with("dwa.") {
                let r = t.randn_like() * 0.5;
                t.copy_(&r);
            }
        }
    });
}

/// Loss and every named gradient of one training-mode forward and backward pass.
fn loss_and_grads(
    vs: &nn::VarStore,
    model: &mut Gpt,
    idx: &Tensor,
    path: Implementation,
) -> (f64, Vec<(String, Tensor)>) {
    let mut vs_vars = vs.variables();
    for t in vs_vars.values_mut() {
        t.zero_grad();
    }
    model.depth.set_kernel(path);
    let loss = model.loss(idx, &idx.roll([1], [1]), true).unwrap();
    loss.backward();
    let mut grads: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(name, t)| (name, t.grad().copy()))
        .collect();
    grads.sort_by(|a, b| a.0.cmp(&b.0));
    (loss.double_value(&[]), grads)
}

#[test]
fn fused_training_pass_equals_the_reference_in_loss_and_every_gradient() {
    for (dilation, period) in [(1, 1), (2, 1), (1, 2), (2, 3)] {
        let mut config = common::tiny(Some((dilation, period)));
        config.n_layer = 6;
        let (vs, mut model) = common::build(&config, 21);
        randomise_dwa(&vs);
        let idx = common::tokens(3, 8, 11, 22);
        let (loss_ref, grads_ref) =
            loss_and_grads(&vs, &mut model, &idx, Implementation::Reference);
        let (loss_fused, grads_fused) = loss_and_grads(&vs, &mut model, &idx, Implementation::Auto);
        assert!(
            (loss_fused - loss_ref).abs() < 1e-5,
            "{dilation}x{period}: loss {loss_fused} vs {loss_ref}"
        );
        for ((name, a), (_, b)) in grads_fused.iter().zip(&grads_ref) {
            let err = a.max_rel_diff(b).unwrap();
            assert!(
                err < 1e-4,
                "{dilation}x{period}: gradient of {name} differs by {err}"
            );
        }
    }
}

#[test]
fn evaluation_logits_equal_training_logits_and_the_reference() {
    let mut config = common::tiny(Some((2, 1)));
    config.n_layer = 5;
    let (vs, model) = common::build(&config, 31);
    randomise_dwa(&vs);
    let idx = common::tokens(2, 8, 11, 32);
    let training = model.forward(&idx, true).unwrap();
    assert!(training.requires_grad());
    let mut model = model.with_kernel(Implementation::Reference);
    let reference = tch::no_grad(|| model.forward(&idx, false)).unwrap();
    for path in [
        Implementation::Auto,
        Implementation::CpuNoGrad,
        Implementation::Fused,
    ] {
        model.depth.set_kernel(path);
        let eval = tch::no_grad(|| model.forward(&idx, false)).unwrap();
        let err = eval.max_rel_diff(&reference).unwrap();
        assert!(err < 1e-5, "{path:?}: {err}");
    }
    assert!(training.detach().max_rel_diff(&reference).unwrap() < 1e-5);
    // The model's kernel reaches every weighted sum: the CUDA path refuses a CPU stack.
    model.depth.set_kernel(Implementation::CudaNoGrad);
    let err = tch::no_grad(|| model.forward(&idx, false)).unwrap_err();
    assert!(err.to_string().contains("CUDA stack"), "{err}");
}
