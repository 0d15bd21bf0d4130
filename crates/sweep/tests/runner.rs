//! Running a sweep: every run trained once, finished runs skipped on a second call, an
//! interrupted run resumed to the same result, and the report written.

use std::path::Path;
use strata_sweep::report::{analyse, write_report};
use strata_sweep::{SweepConfig, SweepOptions, run_sweep};
use strata_train::{RunConfig, RunOptions};

/// A tiny base config and a sweep over it in `dir`; returns the sweep file.
fn tiny_sweep(dir: &Path) -> std::path::PathBuf {
    let corpus = dir.join("corpus.txt");
    std::fs::write(&corpus, &strata_train::prepare::TINY_SHAKESPEARE[..20_000]).unwrap();
    let base = format!(
        "[model]\nn_layer = 1\nn_head = 2\nd_model = 16\nblock_size = 16\n\
         [data]\npath = \"{}\"\ntokenizer = \"char\"\n\
         [train]\nbatch_size = 4\nmax_iters = 10\nlearning_rate = 3e-3\nmin_lr = 3e-4\n\
         warmup_iters = 2\neval_interval = 5\neval_iters = 2\nlog_interval = 1\ndevice = \"cpu\"\n",
        corpus.display()
    );
    std::fs::write(dir.join("base.toml"), base).unwrap();
    let sweep = "name = \"tiny-sweep\"\nbase = \"base.toml\"\ntokens = [640, 1280]\n\
        evals_per_run = 2\n\
        [[sizes]]\nn_layer = 1\nd_model = 16\nn_head = 2\n\
        [[sizes]]\nn_layer = 2\nd_model = 24\nn_head = 2\n\
        [[variants]]\nname = \"baseline\"\n\
        [[variants]]\nname = \"dwa\"\nset = [\"model.dwa.dilation=1\", \"model.dwa.period=1\"]\n\
        [fit]\nbootstrap = 10\n";
    let file = dir.join("sweep.toml");
    std::fs::write(&file, sweep).unwrap();
    file
}

#[test]
fn a_sweep_runs_once_skips_finished_runs_and_resumes_interrupted_ones() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = SweepConfig::load(&tiny_sweep(dir.path())).unwrap();
    let out = dir.path().join("out");
    let first = run_sweep(&sweep, &SweepOptions::new(&out)).unwrap();
    assert_eq!(
        (first.trained, first.skipped, first.records.len()),
        (8, 0, 8)
    );
    let lines = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 8);
    let r = &first.records[1];
    assert_eq!(
        (r.variant.as_str(), r.n_layer, r.token_budget, r.steps),
        ("baseline", 1, 1280, 20)
    );
    assert_eq!(r.tokens, 20 * 4 * 16);
    let model = &r.config.model;
    let per_step = strata_core::flops::train_flops_per_step(model, 4, 16);
    assert!((r.train_flops - 20.0 * per_step).abs() < 1e-6 * r.train_flops);
    assert!(first.records[4].config.model.dwa.is_some());

    let again = run_sweep(&sweep, &SweepOptions::new(&out)).unwrap();
    assert_eq!((again.trained, again.skipped), (0, 8));

    // Interrupt one run half way (its folder as a crash would leave it), then continue.
    let id = &first.records[3].run;
    let run_dir = out.join("runs").join(id);
    std::fs::remove_dir_all(&run_dir).unwrap();
    let plan = strata_sweep::plan::plan(&sweep).unwrap();
    let config: RunConfig = plan[3].config.clone();
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::write(run_dir.join("run.toml"), config.to_toml()).unwrap();
    let mut partial = RunOptions::new(run_dir.join("run.toml"), &run_dir);
    partial.stop_after = Some(7);
    assert!(strata_train::train(config, &partial).unwrap().interrupted);
    let resumed = run_sweep(&sweep, &SweepOptions::new(&out)).unwrap();
    assert_eq!((resumed.trained, resumed.skipped), (1, 7));
    let (before, after) = (&first.records[3], &resumed.records[3]);
    assert_eq!(
        before.final_val_loss.to_bits(),
        after.final_val_loss.to_bits()
    );
    assert_eq!(before.steps, after.steps);
    // Continued, not started again: the interrupted run's checkpoint is still there.
    assert!(run_dir.join("checkpoints/step-000007").exists());

    // Other settings for every run: nothing is reused.
    let mut changed = sweep.clone();
    changed.set.push("train.weight_decay=0.05".to_owned());
    let retrained = run_sweep(&changed, &SweepOptions::new(&out)).unwrap();
    assert_eq!((retrained.trained, retrained.skipped), (8, 0));
    assert_eq!(retrained.records[0].config.train.weight_decay, 0.05);
    let resumed = run_sweep(&sweep, &SweepOptions::new(&out)).unwrap();
    assert_eq!(
        resumed.trained, 8,
        "back to the first settings: trained again"
    );

    let analysis = analyse(&sweep, &resumed.records);
    assert_eq!(analysis.fits.len(), 2);
    assert_eq!(analysis.multipliers.len(), 1);
    let docs = dir.path().join("docs");
    let report = write_report(&sweep, &resumed.records, &analysis, &docs, "strata sweep").unwrap();
    let text = std::fs::read_to_string(report).unwrap();
    assert!(
        text.contains("## Fits") && text.contains("dwa-L2-d24-D1280"),
        "{text}"
    );
    for plot in [
        "tiny-sweep-baseline-loss-vs-flops.png",
        "tiny-sweep-loss-vs-params.svg",
    ] {
        assert!(docs.join(plot).exists(), "{plot}");
    }
}

#[test]
fn bad_sweep_files_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = tiny_sweep(dir.path());
    let text = std::fs::read_to_string(&file).unwrap();
    for (from, to, expected) in [
        ("tokens = [640, 1280]", "tokens = [0]", "tokens"),
        (
            "n_head = 2\n[[variants]]",
            "n_head = 5\n[[variants]]",
            "sizes[1]",
        ),
        ("name = \"dwa\"", "name = \"baseline\"", "`baseline` twice"),
        ("evals_per_run = 2", "evals_per_runs = 2", "evals_per_runs"),
    ] {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, text.replacen(from, to, 1)).unwrap();
        let err = SweepConfig::load(&bad).unwrap_err().to_string();
        assert!(
            err.contains("bad.toml") && err.contains(expected),
            "`{err}` lacks `{expected}`"
        );
    }
}

#[test]
fn the_shipped_sweeps_parse_and_plan_every_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    for (file, runs) in [("sweep-cpu.toml", 72), ("sweep-gpu.toml", 80)] {
        let sweep = SweepConfig::load(&root.join(file)).unwrap();
        let plan = strata_sweep::plan::plan(&sweep).unwrap();
        assert_eq!(plan.len(), runs, "{file}");
        for run in &plan {
            assert_eq!(run.config.model.n_layer, run.size.n_layer);
            let per_step = (run.config.train.batch_size * run.config.model.block_size) as u64;
            assert!(run.config.train.max_iters * per_step >= run.tokens);
        }
    }
}

#[test]
fn a_sweep_folder_in_use_is_refused_before_anything_is_trained() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = SweepConfig::load(&tiny_sweep(dir.path())).unwrap();
    let out = dir.path().join("out");
    let lock = strata_train::run_lock::RunLock::acquire(&out, "another sweep").unwrap();
    let err = run_sweep(&sweep, &SweepOptions::new(&out))
        .unwrap_err()
        .to_string();
    let pid = std::process::id().to_string();
    assert!(
        err.contains("in use") && err.contains(&pid) && err.contains("another sweep"),
        "{err}"
    );
    assert!(!out.join("runs").exists(), "nothing may be trained");
    drop(lock);
}

#[test]
fn a_seeded_wsd_sweep_branches_each_row_and_pairs_its_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let file = tiny_sweep(dir.path());
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "evals_per_run = 2\n",
        "evals_per_run = 2\nseeds = [1, 2]\nset = ['train.schedule=\"wsd\"']\n",
    );
    std::fs::write(&file, text).unwrap();
    let sweep = SweepConfig::load(&file).unwrap();
    let plan = strata_sweep::plan::plan(&sweep).unwrap();
    assert_eq!(plan.len(), 16);
    // Each row: the 1280-token run is the source, the 640-token run a branch of it.
    for run in &plan {
        let expected = (run.tokens == 640).then(|| run.id.replace("-D640", "-D1280"));
        assert_eq!(run.branch_of, expected, "{}", run.id);
        assert!(run.id.contains(&format!("-s{}-", run.seed)), "{}", run.id);
        assert_eq!(run.config.train.seed, run.seed);
    }
    let out = dir.path().join("out");
    let done = run_sweep(&sweep, &SweepOptions::new(&out)).unwrap();
    assert_eq!((done.trained, done.records.len()), (16, 16));
    let branch = done.records.iter().find(|r| r.token_budget == 640).unwrap();
    assert_eq!(branch.steps, 10);
    let analysis = analyse(&sweep, &done.records);
    assert_eq!(analysis.seeds, vec![1, 2]);
    assert_eq!(analysis.measured[0].sizes.len(), 2);
    let docs = dir.path().join("docs");
    let report = write_report(&sweep, &done.records, &analysis, &docs, "strata sweep").unwrap();
    let text = std::fs::read_to_string(report).unwrap();
    for expected in [
        "Measured multipliers",
        "cooldown branch",
        "Seeds 1, 2",
        "paired",
    ] {
        assert!(text.contains(expected), "the report lacks `{expected}`");
    }
}
