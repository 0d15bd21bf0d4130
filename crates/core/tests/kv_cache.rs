//! Cached generation: for the baseline, the modern block, shared blocks and every depth
//! method (with random, non-identity method weights), the logits of tokens fed through the
//! KV cache in pieces equal the full forward pass to 1e-5, cached greedy sampling equals
//! uncached sampling token for token (also past the block size), the cache holds exactly
//! the K/V of every layer, and overfilling it is refused.

mod common;

use common::{build, methods, randomise_depth_tensors, tiny, tokens};
use strata_core::{MlpKind, ModelConfig, NormKind, PositionKind, SampleOptions, SharingConfig};

/// Every model kind the cache must serve, labelled.
fn kinds() -> Vec<(&'static str, ModelConfig)> {
    let mut modern = tiny(None);
    (modern.positions, modern.norm, modern.mlp) =
        (PositionKind::Rotary, NormKind::Rmsnorm, MlpKind::Relu2);
    (modern.qk_norm, modern.logit_softcap, modern.tied_embeddings) = (true, Some(30.0), false);
    let mut shared = tiny(Some((1, 1)));
    shared.sharing = Some(SharingConfig {
        blocks: Some(1),
        ..Default::default()
    });
    let mut kinds = vec![
        ("baseline", tiny(None)),
        ("denseformer 1x1", tiny(Some((1, 1)))),
        ("denseformer 2x2", tiny(Some((2, 2)))),
        ("modern block", modern),
        ("one shared block, dwa", shared),
    ];
    kinds.extend(methods());
    kinds
}

/// Largest absolute difference.
fn max_diff(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn cached_logits_equal_the_full_forward_pass_for_every_kind() {
    for (kind, config) in kinds() {
        let (vs, model) = build(&config, 3);
        randomise_depth_tensors(&vs, 5);
        let _guard = tch::no_grad_guard();
        let idx = tokens(2, 8, config.vocab_size as i64, 7);
        let full = model.forward(&idx, false).unwrap();
        let mut cache = model.kv_cache();
        let mut pieces = Vec::new();
        // A prompt of 3, single tokens, then a chunk of 2 and the last one.
        for (start, len) in [(0, 3), (3, 1), (4, 1), (5, 2), (7, 1)] {
            let part = idx.narrow(1, start, len);
            pieces.push(model.forward_cached(&part, &mut cache).unwrap());
        }
        let cached = tch::Tensor::cat(&pieces, 1);
        let diff = max_diff(&full, &cached);
        assert!(diff < 1e-5, "{kind}: cached logits differ by {diff:e}");
        // Exactly the keys and values of every layer application: 2 · layers · B · T · width.
        let expected = 2 * config.n_layer * 2 * 8 * config.attn_width() * 4;
        assert_eq!(cache.bytes(), expected as i64, "{kind}");
        // The cache is full: one more token is refused, naming the block size.
        let err = model
            .forward_cached(&idx.narrow(1, 0, 1), &mut cache)
            .unwrap_err()
            .to_string();
        assert!(err.contains("block size 8"), "{kind}: {err}");
    }
}

#[test]
fn cached_sampling_equals_uncached_sampling_past_the_block_size() {
    for (kind, config) in kinds() {
        let (vs, model) = build(&config, 11);
        randomise_depth_tensors(&vs, 13);
        let prompt = [1i64, 4, 2];
        for options in [
            SampleOptions {
                temperature: 0.0,
                top_k: None,
                seed: 1,
            },
            SampleOptions {
                temperature: 0.9,
                top_k: Some(5),
                seed: 2,
            },
        ] {
            // 3 + 12 tokens: the block of 8 overflows and the cache is refilled.
            let cached = model.generate(&prompt, 12, &options).unwrap();
            let uncached = model.generate_uncached(&prompt, 12, &options).unwrap();
            assert_eq!(cached, uncached, "{kind}, {options:?}");
        }
    }
}
