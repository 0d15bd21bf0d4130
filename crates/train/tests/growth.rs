//! Growth during training: a scheduled run grows at the right steps, counts its FLOPs stage
//! by stage, re-warms the learning rate after a ReLoRA restart, and refuses bad schedules.

mod common;

use common::{corpus, tiny_config};
use strata_core::flops::train_flops_per_step;
use strata_growth::GrowthOp;
use strata_train::growth_schedule::GrowthEvent;
use strata_train::metrics::read_records;
use strata_train::{RunConfig, RunOptions, checkpoint, train};

/// Growth events from `(step, op)` pairs.
fn events(list: Vec<(u64, GrowthOp)>) -> Vec<GrowthEvent> {
    list.into_iter()
        .map(|(step, op)| GrowthEvent { step, op })
        .collect()
}

#[test]
fn a_scheduled_run_grows_and_counts_flops_per_stage() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny_config(&corpus(dir.path()), 16, true, 0.0);
    config.growth = events(vec![
        (6, GrowthOp::InsertBlocks { after: vec![1] }),
        (
            10,
            GrowthOp::WidenMlp {
                hidden: 192,
                noise: 0.01,
            },
        ),
    ]);
    let out = dir.path().join("run");
    let summary = train(config.clone(), &RunOptions::new("tiny.toml", &out)).unwrap();
    let saved = checkpoint::load(&out).unwrap();
    let model = &saved.meta.config.model;
    assert_eq!((model.n_layer, model.mlp_hidden()), (3, 192));
    assert_eq!(saved.meta.growth_applied, 2);
    // FLOPs: 6 steps of the 2-layer model, 4 of the 3-layer one, 6 of the wide one.
    let mut stage = model.clone();
    stage.mlp_hidden = None;
    let f_deep = train_flops_per_step(&stage, 8, 16);
    stage.n_layer = 2;
    let f_small = train_flops_per_step(&stage, 8, 16);
    let f_wide = train_flops_per_step(model, 8, 16);
    let expected = 6.0 * f_small + 4.0 * f_deep + 6.0 * f_wide;
    assert!((summary.train_flops - expected).abs() < 1e-6 * expected);
    assert!(f_small < f_deep && f_deep < f_wide);
    // The metrics carry the running count; the written config.toml is the schedule as given.
    let records = read_records(&out.join("metrics.jsonl")).unwrap();
    let at = |step: u64| {
        records
            .iter()
            .find(|r| r.step == step && r.kind == "train")
            .and_then(|r| r.train_flops)
            .unwrap()
    };
    assert!((at(6) - 6.0 * f_small).abs() < 1e-6 * at(6));
    assert!((at(7) - at(6) - f_deep).abs() < 1e-6 * f_deep);
    let written = RunConfig::load(&out.join("config.toml"), &[]).unwrap();
    assert_eq!(written.model.n_layer, 2);
    assert_eq!(written.growth, config.growth);
    // The grown checkpoint evaluates and samples like any other.
    let (_, gpt) = checkpoint::load_model(&saved, tch::Device::Cpu).unwrap();
    assert_eq!(gpt.config().n_layer, 3);
}

#[test]
fn a_relora_restart_rewarms_the_learning_rate() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny_config(&corpus(dir.path()), 14, false, 0.0);
    config.model.lora = Some(toml::from_str("rank = 2\nscale = 1.0").expect("lora config"));
    config.growth = events(vec![
        (8, GrowthOp::ReloraRestart { rewarm_steps: 4 }),
        (11, GrowthOp::GrowLoraRank { rank: 4 }),
    ]);
    let out = dir.path().join("run");
    train(config.clone(), &RunOptions::new("tiny.toml", &out)).unwrap();
    let schedule = config.train.schedule();
    let records = read_records(&out.join("metrics.jsonl")).unwrap();
    for r in records.iter().filter(|r| r.kind == "train") {
        let step = r.step - 1; // the record follows the step
        let factor = if (8..12).contains(&step) {
            (step - 8 + 1) as f64 / 4.0
        } else {
            1.0
        };
        let lr = r.lr.unwrap();
        assert!(
            (lr - schedule.at(step) * factor).abs() < 1e-15,
            "step {step}: lr {lr}"
        );
    }
    let saved = checkpoint::load(&out).unwrap();
    assert_eq!(saved.meta.config.model.lora.as_ref().unwrap().rank, 4);
}

#[test]
fn bad_growth_schedules_are_refused_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_config(&corpus(dir.path()), 16, false, 0.0);
    let cases = [
        (
            vec![(0, GrowthOp::InsertBlocks { after: vec![1] })],
            "growth[0].step",
        ),
        (
            vec![(16, GrowthOp::InsertBlocks { after: vec![1] })],
            "max_iters - 1 = 15",
        ),
        (
            vec![
                (8, GrowthOp::InsertBlocks { after: vec![1] }),
                (4, GrowthOp::InsertBlocks { after: vec![1] }),
            ],
            "previous growth is at step 8",
        ),
        (
            vec![(
                4,
                GrowthOp::WidenMlp {
                    hidden: 64,
                    noise: 0.0,
                },
            )],
            "hidden must grow beyond the current 128",
        ),
        (
            vec![
                (4, GrowthOp::InsertBlocks { after: vec![2] }),
                (5, GrowthOp::InsertBlocks { after: vec![4] }),
            ],
            "growth[1] (insert_blocks(after=[4]))",
        ),
        (
            vec![
                (
                    4,
                    toml::from_str("op = \"add_depth\"\ndepth = { mudd = true }").unwrap(),
                ),
                (
                    6,
                    toml::from_str("op = \"add_depth\"\ndepth = { attn_res = true }").unwrap(),
                ),
            ],
            "growth[1] (add_depth(attnres))",
        ),
        (
            vec![(4, toml::from_str("op = \"add_depth\"").unwrap())],
            "expected a method to add",
        ),
    ];
    for (list, expected) in cases {
        let mut config = base.clone();
        config.growth = events(list);
        let out = dir.path().join("bad");
        let err = train(config, &RunOptions::new("tiny.toml", &out))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tiny.toml"), "{err}");
        assert!(err.contains(expected), "`{err}` lacks `{expected}`");
        assert!(
            !out.join("checkpoints").exists(),
            "nothing written for a refused run"
        );
    }
}

#[test]
fn growth_tables_parse_and_unknown_keys_are_refused() {
    let text = "[model]\nn_layer = 2\nn_head = 2\nd_model = 32\nblock_size = 16\n\
        [train]\nbatch_size = 8\nmax_iters = 20\nlearning_rate = 1e-3\nmin_lr = 1e-4\n\
        warmup_iters = 2\neval_interval = 10\neval_iters = 2\n";
    let good = format!(
        "{text}[[growth]]\nstep = 5\nop = \"widen_residual\"\nd_model = 64\n\
         [[growth]]\nstep = 9\nop = \"insert_blocks\"\nafter = [0, 2]\n"
    );
    let config = RunConfig::parse(&good, "g.toml", "g", &[]).unwrap();
    assert_eq!(
        config.growth[0].op,
        GrowthOp::WidenResidual {
            d_model: 64,
            noise: 0.0,
            widen_heads: false
        }
    );
    assert_eq!(config.growth[1].step, 9);
    for (bad, expected) in [
        (
            "[[growth]]\nstep = 5\nop = \"widen_mlp\"\nhiden = 64\n",
            "hiden",
        ),
        (
            "[[growth]]\nstep = 5\nop = \"grow_everything\"\n",
            "grow_everything",
        ),
        ("[[growth]]\nop = \"insert_blocks\"\nafter = [1]\n", "step"),
    ] {
        let err = RunConfig::parse(&format!("{text}{bad}"), "g.toml", "g", &[]).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("g.toml") && message.contains(expected),
            "{message}"
        );
    }
}

#[test]
fn the_shipped_growth_config_grows_to_the_recipes_size() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let config = RunConfig::load(&root.join("growth-cpu.toml"), &[]).unwrap();
    let recipe = RunConfig::load(&root.join("denseformer-cpu.toml"), &[]).unwrap();
    let mut start = config.model.clone();
    start.vocab_size = 65;
    strata_train::growth_schedule::validate(
        &config.growth,
        &start,
        config.train.max_iters,
        "growth-cpu.toml",
    )
    .unwrap();
    let end =
        strata_train::growth_schedule::model_after(&config.growth, &start, config.growth.len())
            .unwrap();
    let mut target = recipe.model.clone();
    target.vocab_size = 65;
    let (a, b) = (
        strata_core::flops::matmul_weights_per_layer(&end),
        strata_core::flops::matmul_weights_per_layer(&target),
    );
    assert_eq!((end.n_layer, end.d_model, end.mlp_hidden()), (4, 128, 512));
    assert_eq!((end.attn_width(), a), (128, b));
}

#[test]
fn the_grown_model_is_evaluated_at_the_growth_step_with_the_same_loss() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny_config(&corpus(dir.path()), 12, true, 0.0);
    config.train.eval_interval = 100; // evaluations at 0, at the growth step and at the end
    let plain = dir.path().join("plain");
    let mut stopped = RunOptions::new("tiny.toml", &plain);
    stopped.stop_after = Some(5);
    train(config.clone(), &stopped).unwrap();
    // The model before growing, evaluated on the run's fixed batches.
    let before = common::checkpoint_val_loss(&plain).mean;
    config.growth = events(vec![(5, GrowthOp::InsertBlocks { after: vec![2] })]);
    let grown = dir.path().join("grown");
    train(config, &RunOptions::new("tiny.toml", &grown)).unwrap();
    let records = read_records(&grown.join("metrics.jsonl")).unwrap();
    let evals: Vec<_> = records
        .iter()
        .filter(|r| r.kind == "eval")
        .map(|r| r.step)
        .collect();
    assert_eq!(evals, vec![0, 5, 12]);
    let at_growth = records
        .iter()
        .find(|r| r.kind == "eval" && r.step == 5)
        .unwrap();
    let val = at_growth.val_loss.unwrap();
    assert!((val - before).abs() < 1e-5 * before, "{val} vs {before}");
}

#[test]
fn depth_methods_switched_on_mid_run_continue_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_config(&corpus(dir.path()), 12, false, 0.0);
    let mut late = base.clone();
    late.growth = events(vec![(
        6,
        toml::from_str("op = \"add_depth\"\ndwa = { dilation = 1, period = 1 }").unwrap(),
    )]);
    let (base_out, late_out) = (dir.path().join("base"), dir.path().join("late"));
    train(base.clone(), &RunOptions::new("tiny.toml", &base_out)).unwrap();
    let summary = train(late.clone(), &RunOptions::new("tiny.toml", &late_out)).unwrap();
    let losses = |out: &std::path::Path| -> Vec<(u64, f64)> {
        read_records(&out.join("metrics.jsonl"))
            .unwrap()
            .iter()
            .filter(|r| r.kind == "train")
            .map(|r| (r.step, r.loss.unwrap()))
            .collect()
    };
    let (a, b) = (losses(&base_out), losses(&late_out));
    assert_eq!(a.len(), b.len());
    for ((step, x), (_, y)) in a.iter().zip(&b) {
        // Records follow their step: up to record 6 the same run; record 7 is the first step
        // of the grown model, whose DWA starts as the identity (same weights, same loss).
        match step {
            ..=6 => assert_eq!(x, y, "step {step}: the runs differ before the switch"),
            7 => assert!(
                (x - y).abs() <= 1e-6 * x,
                "switch changed the loss: {x} vs {y}"
            ),
            _ => {}
        }
    }
    assert_ne!(a.last(), b.last(), "the added weights never trained");
    let saved = checkpoint::load(&late_out).unwrap();
    assert_eq!(saved.meta.config.model.variant_name(), "denseformer-1x1");
    let base_model = checkpoint::load(&base_out).unwrap().meta.config.model;
    let f_base = train_flops_per_step(&base_model, 8, 16);
    let f_dwa = train_flops_per_step(&saved.meta.config.model, 8, 16);
    let expected = 6.0 * f_base + 6.0 * f_dwa;
    assert!((summary.train_flops - expected).abs() < 1e-6 * expected);
    // A cooldown branch that ends at the switch or before never grows.
    let mut wsd = late.clone();
    wsd.train.schedule = strata_train::schedule::ScheduleKind::Wsd;
    let source = std::path::Path::new("late.toml");
    let short = strata_train::branch::branch_config(&wsd, 6, source).unwrap();
    assert!(short.growth.is_empty());
    let long = strata_train::branch::branch_config(&wsd, 10, source).unwrap();
    assert_eq!(long.growth, late.growth);
}
