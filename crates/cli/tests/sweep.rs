//! `strata sweep` through the real binary: runs in parallel child processes, a second call
//! trains nothing, `--report-only` refits, and a bad sweep file is refused.

mod common;

use common::{Fixture, strata_run};

/// A 2 x 2 x 2 sweep over the fixture's tiny config.
const SWEEP: &str = "name = \"cli-sweep\"\nbase = \"tiny.toml\"\ntokens = [320, 640]\n\
    evals_per_run = 2\n\
    [[sizes]]\nn_layer = 1\nd_model = 16\nn_head = 2\n\
    [[sizes]]\nn_layer = 2\nd_model = 16\nn_head = 2\n\
    [[variants]]\nname = \"baseline\"\n\
    [[variants]]\nname = \"dwa\"\nset = [\"model.dwa.dilation=1\", \"model.dwa.period=1\"]\n\
    [fit]\nbootstrap = 5\n";

#[test]
fn a_parallel_sweep_runs_once_and_reports() {
    let fx = Fixture::new(10);
    std::fs::write(fx.path().join("sweep.toml"), SWEEP).unwrap();
    let args = [
        "sweep",
        "--config",
        "sweep.toml",
        "--out",
        "sw",
        "--docs",
        "report",
        "--jobs",
        "2",
        "--quiet",
    ];
    let first = strata_run(fx.path(), &args).ok();
    assert!(
        first.stdout.contains("report/cli-sweep.md"),
        "{}",
        first.stdout
    );
    let results = std::fs::read_to_string(fx.path().join("sw/results.jsonl")).unwrap();
    assert_eq!(results.lines().count(), 8);
    for line in results.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(record["final_val_loss"].as_f64().unwrap() > 0.0);
        assert!(record["train_flops"].as_f64().unwrap() > 0.0);
    }
    let report = std::fs::read_to_string(fx.path().join("report/cli-sweep.md")).unwrap();
    for section in [
        "## Measured multipliers over `baseline`",
        "## Compute multipliers from the fitted laws, over `baseline`",
        "at least 2 are needed for an interval",
    ] {
        assert!(report.contains(section), "{report}");
    }

    let again = strata_run(fx.path(), &args).ok();
    assert!(again.stderr.contains("finished=8"), "{}", again.stderr);
    assert!(
        !again.stderr.contains("sweep run started"),
        "{}",
        again.stderr
    );
    strata_run(
        fx.path(),
        &[
            "sweep",
            "--config",
            "sweep.toml",
            "--out",
            "sw",
            "--report-only",
        ],
    )
    .ok();
    assert!(
        fx.path()
            .join("sw/cli-sweep-baseline-loss-vs-flops.png")
            .exists()
    );

    std::fs::write(
        fx.path().join("bad.toml"),
        SWEEP.replace("tokens", "budgets"),
    )
    .unwrap();
    strata_run(fx.path(), &["sweep", "--config", "bad.toml"]).fails_with(&["bad.toml", "budgets"]);
}
