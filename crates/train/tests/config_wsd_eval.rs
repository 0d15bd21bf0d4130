//! The WSD, branch and evaluation-slice fields of `[train]`: defaults leave existing configs
//! as they were, values parse, and impossible ones are refused naming the field.

use strata_train::RunConfig;
use strata_train::evaluation::EvalTokens;
use strata_train::schedule::{DecayShape, Schedule, ScheduleKind};

const BASE: &str = r#"
[model]
n_layer = 2
n_head = 2
d_model = 8
block_size = 4
[train]
batch_size = 2
max_iters = 100
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 10
eval_interval = 5
eval_iters = 1
"#;

/// Parses `BASE` with `overrides`.
fn parse(overrides: &[&str]) -> strata_tensor::Result<RunConfig> {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    RunConfig::parse(BASE, "x.toml", "x", &overrides)
}

/// The error text of a config that must be refused.
fn refusal(overrides: &[&str]) -> String {
    parse(overrides).unwrap_err().to_string()
}

#[test]
fn defaults_keep_cosine_and_random_batches_and_write_nothing_new() {
    let c = parse(&[]).unwrap();
    let t = &c.train;
    assert_eq!(t.schedule, ScheduleKind::Cosine);
    assert_eq!((t.decay_fraction, t.decay_shape), (0.2, DecayShape::Linear));
    assert!(t.branch_budgets.is_empty() && t.eval_tokens.is_none() && !t.eval_unseen);
    assert!(matches!(t.schedule(), Schedule::Cosine(_)));
    let text = c.to_toml();
    for key in [
        "schedule",
        "decay_fraction",
        "decay_shape",
        "branch_budgets",
        "eval_tokens",
        "eval_unseen",
    ] {
        assert!(
            !text.contains(key),
            "{key} written for a config without it:\n{text}"
        );
    }
}

#[test]
fn wsd_and_slice_fields_parse_and_round_trip() {
    let c = parse(&[
        "train.schedule=\"wsd\"",
        "train.decay_fraction=0.25",
        "train.decay_shape=\"1-sqrt\"",
        "train.branch_budgets=[40, 80]",
        "train.eval_tokens=\"all\"",
        "train.eval_unseen=true",
    ])
    .unwrap();
    let t = &c.train;
    assert_eq!(t.schedule, ScheduleKind::Wsd);
    assert_eq!(t.decay_shape, DecayShape::OneMinusSqrt);
    assert_eq!(t.eval_tokens, Some(EvalTokens::All));
    assert_eq!(t.branch_steps(), vec![30, 60], "40 - 10 and 80 - 20");
    let Schedule::Wsd(s) = t.schedule() else {
        panic!("expected WSD")
    };
    assert_eq!((s.decay_start, s.max_iters), (75, 100));
    let again = RunConfig::parse(&c.to_toml(), "again.toml", "x", &[]).unwrap();
    assert_eq!(again, c);
    let counted = parse(&["train.eval_tokens=4096"]).unwrap();
    assert_eq!(counted.train.eval_tokens, Some(EvalTokens::Count(4096)));
}

#[test]
fn impossible_schedule_and_evaluation_values_are_refused_by_name() {
    for bad in ["0", "1.5", "-0.1", "nan"] {
        let err = refusal(&[&format!("train.decay_fraction={bad}")]);
        assert!(
            err.contains("train.decay_fraction") && err.contains("(0, 1]"),
            "{err}"
        );
    }
    let err = refusal(&["train.decay_shape=\"cubic\""]);
    assert!(
        err.contains("decay_shape") && err.contains("1-sqrt"),
        "{err}"
    );
    let err = refusal(&["train.branch_budgets=[50]"]);
    assert!(
        err.contains("train.branch_budgets") && err.contains("wsd"),
        "{err}"
    );
    let wsd = "train.schedule=\"wsd\"";
    // 200 steps would decay from 160, after this run's decay start (80).
    let err = refusal(&[wsd, "train.branch_budgets=[50, 200]"]);
    assert!(
        err.contains("train.branch_budgets") && err.contains("160"),
        "{err}"
    );
    // 11 steps would decay from 9, inside the 10-step warmup.
    let err = refusal(&[wsd, "train.branch_budgets=[11]"]);
    assert!(
        err.contains("train.branch_budgets") && err.contains("9"),
        "{err}"
    );
    let err = refusal(&[wsd, "train.decay_fraction=0.95"]);
    assert!(
        err.contains("train.decay_fraction") && err.contains("warmup"),
        "{err}"
    );
    let err = refusal(&[wsd, "train.lr_decay_iters=50"]);
    assert!(err.contains("train.lr_decay_iters"), "{err}");
    for bad in ["0", "-3", "\"most\""] {
        let err = refusal(&[&format!("train.eval_tokens={bad}")]);
        assert!(
            err.contains("eval_tokens") && err.contains("all"),
            "{bad}: {err}"
        );
    }
    let err = refusal(&["train.eval_tokens=3"]);
    assert!(
        err.contains("train.eval_tokens") && err.contains("block_size"),
        "{err}"
    );
    let err = refusal(&["train.eval_unseen=true"]);
    assert!(err.contains("train.eval_unseen"), "{err}");
}
