//! `strata compare` through the real binary: 2 arms x 2 seeds x 2 budgets in parallel child
//! processes, the report and plots written, a second call trains nothing, `--report-only`
//! re-analyses, and bad comparison files are refused with the reason.

mod common;

use common::{Fixture, strata_run};

/// Baseline against DenseFormer 1x1 over the fixture's tiny config.
const COMPARE: &str = "name = \"cli-compare\"\nbase = \"tiny.toml\"\nseeds = [1, 2]\n\
    budgets = [10, 20]\nbaseline_extra_budgets = [40]\nevals_per_run = 2\nbootstrap = 200\n\
    target_loss = 0.5\n\
    [[arms]]\nname = \"baseline\"\n\
    [[arms]]\nname = \"dwa\"\nset = [\"model.dwa.dilation=1\", \"model.dwa.period=1\"]\n";

#[test]
fn a_parallel_comparison_runs_once_and_reports() {
    let fx = Fixture::new(10);
    std::fs::write(fx.path().join("cmp.toml"), COMPARE).unwrap();
    let args = [
        "compare", "--config", "cmp.toml", "--out", "cmp", "--jobs", "2", "--quiet",
    ];
    let first = strata_run(fx.path(), &args).ok();
    assert!(
        first.stdout.contains("cmp/cli-compare.md"),
        "{}",
        first.stdout
    );
    assert!(first.stdout.contains("dwa: "), "{}", first.stdout);
    let results = std::fs::read_to_string(fx.path().join("cmp/results.jsonl")).unwrap();
    // Baseline: 3 budgets x 2 seeds; the variant 2 x 2.
    assert_eq!(results.lines().count(), 10, "{results}");
    for line in results.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(record["final_val_loss"].as_f64().unwrap() > 0.0);
        assert!(record["train_flops"].as_f64().unwrap() > 0.0);
    }
    let report = std::fs::read_to_string(fx.path().join("cmp/cli-compare.md")).unwrap();
    for needle in [
        "## Verdicts",
        "paired",
        "Student-t",
        "bootstrap",
        "| dwa | 10 |",
        "never reached",
    ] {
        assert!(report.contains(needle), "{needle}: {report}");
    }
    for plot in ["loss-vs-compute", "paired-differences"] {
        assert!(
            fx.path()
                .join(format!("cmp/cli-compare-{plot}.png"))
                .exists(),
            "{plot}"
        );
    }
    assert!(
        first.stderr.contains("compare run started"),
        "{}",
        first.stderr
    );

    let again = strata_run(fx.path(), &args).ok();
    assert!(!again.stderr.contains("run started"), "{}", again.stderr);
    assert!(again.stderr.contains("trained=0"), "{}", again.stderr);
    std::fs::remove_file(fx.path().join("cmp/cli-compare.md")).unwrap();
    strata_run(
        fx.path(),
        &[
            "compare",
            "--config",
            "cmp.toml",
            "--out",
            "cmp",
            "--report-only",
        ],
    )
    .ok();
    assert!(fx.path().join("cmp/cli-compare.md").exists());
    // A comparison stopped after its first seeds: the finished seeds are analysed.
    let more_seeds = COMPARE.replace("seeds = [1, 2]", "seeds = [1, 2, 3]");
    std::fs::write(fx.path().join("cmp3.toml"), more_seeds).unwrap();
    let partial = strata_run(
        fx.path(),
        &[
            "compare",
            "--config",
            "cmp3.toml",
            "--out",
            "cmp",
            "--report-only",
        ],
    )
    .ok();
    assert!(partial.stdout.contains("dwa: "), "{}", partial.stdout);
}

#[test]
fn some_arms_train_now_and_the_rest_later_reuse_them() {
    let fx = Fixture::new(10);
    let three =
        format!("{COMPARE}[[arms]]\nname = \"laurel\"\nset = ['model.depth.laurel.kind=\"rw\"']\n");
    std::fs::write(fx.path().join("cmp.toml"), three).unwrap();
    let args = ["compare", "--config", "cmp.toml", "--out", "cmp", "--quiet"];
    let mut part = args.to_vec();
    part.extend(["--arms", "dwa"]);
    let first = strata_run(fx.path(), &part).ok();
    assert!(first.stdout.contains("dwa: ") && !first.stdout.contains("laurel: "));
    let results = std::fs::read_to_string(fx.path().join("cmp/results.jsonl")).unwrap();
    // Baseline: 3 budgets x 2 seeds; dwa 2 x 2; no laurel.
    assert_eq!(results.lines().count(), 10, "{results}");
    let report = std::fs::read_to_string(fx.path().join("cmp/cli-compare.md")).unwrap();
    assert!(report.contains("--arms dwa"), "{report}");
    // Every arm now: only laurel's 2 x 2 runs train.
    let all = strata_run(fx.path(), &args).ok();
    assert!(all.stderr.contains("trained=4"), "{}", all.stderr);
    assert!(all.stdout.contains("laurel: ") && all.stdout.contains("dwa: "));
    let last = part.len() - 1;
    part[last] = "dwa,nope";
    strata_run(fx.path(), &part).fails_with(&["cmp.toml", "`nope`", "`laurel`"]);
}

#[test]
fn bad_comparisons_are_refused_with_the_reason() {
    let fx = Fixture::new(10);
    let cases = [
        (
            COMPARE.replace("seeds = [1, 2]", "seeds = [1]"),
            "no paired noise estimate",
        ),
        (
            COMPARE.replace(
                "\"model.dwa.period=1\"]",
                "\"model.dwa.period=1\", \"data.tokenizer=bpe\"]",
            ),
            "data.tokenizer=bpe",
        ),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let file = format!("bad{i}.toml");
        std::fs::write(fx.path().join(&file), text).unwrap();
        strata_run(fx.path(), &["compare", "--config", &file]).fails_with(&[&file, needle]);
    }
}

#[test]
fn with_a_wsd_base_the_smaller_budgets_are_cooldown_branches_of_the_longest_run() {
    let fx = Fixture::new(10);
    let wsd = COMPARE.replace(
        "seeds = [1, 2]",
        "set = ['train.schedule=\"wsd\"']\nseeds = [1, 2]",
    );
    std::fs::write(fx.path().join("cmp.toml"), wsd).unwrap();
    let args = [
        "compare", "--config", "cmp.toml", "--out", "cmp", "--jobs", "2", "--quiet",
    ];
    strata_run(fx.path(), &args).ok();
    let results = std::fs::read_to_string(fx.path().join("cmp/results.jsonl")).unwrap();
    assert_eq!(results.lines().count(), 10, "{results}");
    // The baseline's longest run (40 steps) kept checkpoints where the 10- and 20-step
    // budgets start their decay (steps 8 and 16), and each branch resumed from one of them:
    // its metrics log starts with the source's records.
    let runs = fx.path().join("cmp/runs");
    let source: Vec<String> = std::fs::read_dir(runs.join("baseline-s1-i40/checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for step in ["step-000008", "step-000016"] {
        assert!(source.iter().any(|n| n == step), "{step}: {source:?}");
    }
    let branch = std::fs::read_to_string(runs.join("baseline-s1-i10/config.toml")).unwrap();
    assert!(branch.contains("max_iters = 10"), "{branch}");
    let source_metrics =
        std::fs::read_to_string(runs.join("baseline-s1-i40/metrics.jsonl")).unwrap();
    let branch_metrics =
        std::fs::read_to_string(runs.join("baseline-s1-i10/metrics.jsonl")).unwrap();
    let first = |text: &str| text.lines().next().unwrap_or_default().to_owned();
    assert_eq!(first(&source_metrics), first(&branch_metrics));
    // A branch's record counts only its own time: its summary's wall time less the source's
    // at the checkpoint it resumed (step 8 for the 10-step budget).
    let json = |path: std::path::PathBuf| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let summary_wall = json(runs.join("baseline-s1-i10/summary.json"))["wall_s"]
        .as_f64()
        .unwrap();
    let inherited =
        json(runs.join("baseline-s1-i40/checkpoints/step-000008/meta.json"))["meta"]["elapsed_s"]
            .as_f64()
            .unwrap();
    let record: serde_json::Value = results
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["run"] == "baseline-s1-i10")
        .unwrap();
    let own = record["wall_s"].as_f64().unwrap();
    assert!(inherited > 0.0 && own > 0.0, "{own} {inherited}");
    assert!(
        (own + inherited - summary_wall).abs() < 1e-9,
        "{own} + {inherited} vs {summary_wall}"
    );
    let again = strata_run(fx.path(), &args).ok();
    assert!(again.stderr.contains("trained=0"), "{}", again.stderr);
}

#[test]
fn a_job_list_trains_each_run_once_wherever_it_runs_and_report_only_collects_them() {
    let fx = Fixture::new(10);
    let wsd = COMPARE.replace(
        "seeds = [1, 2]",
        "set = ['train.schedule=\"wsd\"']\nseeds = [1, 2]",
    );
    std::fs::write(fx.path().join("cmp.toml"), wsd).unwrap();
    let cmp = ["compare", "--config", "cmp.toml", "--out", "cmp"];
    let listed = strata_run(
        fx.path(),
        &[&cmp[..], &["--write-jobs", "jobs.txt"]].concat(),
    )
    .ok();
    assert!(
        listed.stdout.contains("cooldown branches"),
        "{}",
        listed.stdout
    );
    let list = std::fs::read_to_string(fx.path().join("jobs.txt")).unwrap();
    let lines: Vec<&str> = list.lines().collect();
    // 4 source runs (2 arms x 2 seeds, each its longest budget), then 6 branches.
    assert_eq!(lines.len(), 10, "{list}");
    let job_file = |line: &str| {
        line.rsplit(' ')
            .next()
            .unwrap()
            .trim_matches('\'')
            .to_owned()
    };
    let sh = |line: &str| {
        let mut cmd = common::strata(fx.path());
        cmd.arg("job").arg(job_file(line));
        cmd
    };
    // A branch before its source: refused, naming the source.
    common::run(&mut sh(lines[9])).fails_with(&[
        "cooldown branch",
        "has not finished",
        "run that run's line first",
    ]);
    // Two workers on the same line at once: one trains it, the other skips it (the run
    // folder's lock, or the finished summary), and the run is trained once.
    let (a, b) = (sh(lines[0]).spawn().unwrap(), sh(lines[0]).spawn().unwrap());
    let (a, b) = (
        common::wait(a, "worker a", common::TIMEOUT).ok(),
        common::wait(b, "worker b", common::TIMEOUT).ok(),
    );
    let trained = [&a, &b]
        .iter()
        .filter(|o| o.stderr.contains("trained job="))
        .count();
    let skipped = [&a, &b]
        .iter()
        .filter(|o| o.stderr.contains("skipped"))
        .count();
    assert_eq!(
        (trained, skipped),
        (1, 1),
        "{}\n---\n{}",
        a.stderr,
        b.stderr
    );
    let run = job_file(lines[0]);
    let run = std::path::Path::new(&run).parent().unwrap();
    let steps: Vec<u64> = common::records(&common::metrics(run), "train")
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    let mut unique = steps.clone();
    unique.dedup();
    assert_eq!(steps, unique, "a step was logged twice");
    for line in &lines {
        common::run(&mut sh(line)).ok();
    }
    let report = strata_run(fx.path(), &[&cmp[..], &["--report-only"]].concat()).ok();
    assert!(
        report.stdout.contains("cli-compare.md"),
        "{}",
        report.stdout
    );
    let results = std::fs::read_to_string(fx.path().join("cmp/results.jsonl")).unwrap();
    assert_eq!(results.lines().count(), 10, "{results}");
}
