//! Retrofit: depth methods added to a trained baseline keep its function at the switch
//! (bit for bit for DWA and LAuReL-RW, whose new weights start at the identity), then train;
//! a checkpoint that is not the new model's base, a retrofit without a method, and a
//! checkpoint that already has one are refused naming the field.

mod common;

use common::{corpus, tiny_config};
use strata_core::{LaurelConfig, LaurelKind};
use strata_tensor::TensorExt;
use strata_train::{RunConfig, RunOptions, Trainer, checkpoint, train};
use tch::Tensor;

/// Retrofit options into `out` from the run folder `from`.
fn retrofit_options(from: &std::path::Path, out: &std::path::Path) -> RunOptions {
    let mut options = RunOptions::new("retrofit.toml", out);
    options.init_from = Some(from.to_path_buf());
    options.retrofit = true;
    options
}

#[test]
fn a_retrofit_keeps_the_trained_function_and_then_trains_the_new_weights() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let base_dir = dir.path().join("base");
    train(
        tiny_config(&data, 20, false, 0.0),
        &RunOptions::new("b.toml", &base_dir),
    )
    .unwrap();
    let trained = checkpoint::load(&base_dir).unwrap();
    let (_vs, base) = checkpoint::load_model(&trained, tch::Device::Cpu).unwrap();
    let idx = Tensor::from_slice(&[1i64, 5, 7, 2, 9, 3, 3, 0, 4, 4, 8, 1]).view([2, 6]);
    let want = tch::no_grad(|| base.forward(&idx, false).unwrap());

    let dwa = tiny_config(&data, 10, true, 0.0);
    let mut laurel = tiny_config(&data, 10, false, 0.0);
    laurel.model.depth.laurel = Some(LaurelConfig {
        kind: LaurelKind::Rw,
        rank: None,
    });
    let mut mudd = tiny_config(&data, 10, false, 0.0);
    mudd.model.depth.mudd = true;
    // DWA and LAuReL keep the function bit for bit; MUDD up to the rounding of its separate
    // query, key and value products.
    for (label, config, tolerance) in [
        ("dwa 1x1", dwa, 0.0),
        ("laurel-rw", laurel, 0.0),
        ("mudd", mudd, 1e-5),
    ] {
        let out = dir.path().join(label);
        let trainer = Trainer::new(config.clone(), &retrofit_options(&base_dir, &out)).unwrap();
        let got = tch::no_grad(|| trainer.model().forward(&idx, false).unwrap());
        let err = got.max_rel_diff(&want).unwrap();
        assert!(
            err <= tolerance,
            "{label}: the retrofit changed the function ({err})"
        );
        drop(trainer);
        let mut options = retrofit_options(&base_dir, &out);
        options.overwrite = true;
        let summary = train(config, &options).unwrap();
        assert_eq!(summary.steps, 10);
        let after = checkpoint::load(&out).unwrap();
        let (_vs, model) = checkpoint::load_model(&after, tch::Device::Cpu).unwrap();
        let moved = tch::no_grad(|| model.forward(&idx, false).unwrap());
        assert!(!moved.equal(&want), "{label}: nothing trained");
        let depth: Vec<&String> = after
            .loaded
            .model
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                ["dwa.", "laurel.", "mudd."]
                    .iter()
                    .any(|p| n.starts_with(p))
            })
            .collect();
        assert!(!depth.is_empty(), "{label}: the new weights are saved");
    }
}

#[test]
fn a_retrofit_that_is_not_one_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let base_dir = dir.path().join("base");
    train(
        tiny_config(&data, 4, false, 0.0),
        &RunOptions::new("b.toml", &base_dir),
    )
    .unwrap();
    let dwa_dir = dir.path().join("dwa");
    train(
        tiny_config(&data, 4, true, 0.0),
        &RunOptions::new("d.toml", &dwa_dir),
    )
    .unwrap();
    let wider = {
        let mut c: RunConfig = tiny_config(&data, 4, true, 0.0);
        c.model.d_model = 48;
        c
    };
    let cases = [
        (wider, &base_dir, "model.d_model"),
        (
            tiny_config(&data, 4, false, 0.0),
            &base_dir,
            "model.dwa / model.depth",
        ),
        (tiny_config(&data, 4, true, 0.0), &dwa_dir, "already has"),
    ];
    for (i, (config, from, expected)) in cases.into_iter().enumerate() {
        let out = dir.path().join(format!("bad-{i}"));
        let err = train(config, &retrofit_options(from, &out))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(expected),
            "case {i}: `{err}` lacks `{expected}`"
        );
        assert!(!out.exists(), "case {i}: nothing may be written");
    }
    let mut options = RunOptions::new("r.toml", dir.path().join("none"));
    options.retrofit = true;
    let err = train(tiny_config(&data, 4, true, 0.0), &options)
        .unwrap_err()
        .to_string();
    assert!(err.contains("init_from"), "{err}");
}
