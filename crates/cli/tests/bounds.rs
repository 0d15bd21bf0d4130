//! Every numeric argument of `strata` is bounded where it is parsed (issue 18, items 7 and
//! 8): an out-of-range value fails with the argument's name, and sizes that would exhaust
//! memory are refused with the memory they need, never with a panic or libtorch's text.

mod common;

use common::{Fixture, Output, strata_run};

/// Asserts that clap refused the command line (status 2) naming `argument` and `value`.
#[track_caller]
fn refused_by_name(out: Output, argument: &str, value: &str) {
    assert_eq!(
        out.status.code(),
        Some(2),
        "{} should be a usage error\nstderr:\n{}",
        out.what,
        out.stderr
    );
    assert!(
        out.stderr.contains(argument) && out.stderr.contains(value),
        "{}: stderr should name {argument} and {value:?}:\n{}",
        out.what,
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

#[test]
fn numeric_arguments_out_of_range_are_refused_by_name() {
    let fx = Fixture::new(10);
    let cwd = fx.path();
    let cases: [(&[&str], &str, &str); 12] = [
        (&["eval", "run", "--batches", "0"], "--batches", "0"),
        (&["eval", "run", "--batches=-5"], "--batches", "-5"),
        (&["sample", "run", "--tokens", "0"], "--tokens", "0"),
        (
            &["sample", "run", "--tokens", "1000001"],
            "--tokens",
            "1000001",
        ),
        (
            &["sample", "run", "--temperature=-0.5"],
            "--temperature",
            "-0.5",
        ),
        (
            &["sample", "run", "--temperature", "nan"],
            "--temperature",
            "nan",
        ),
        (
            &["sample", "run", "--temperature", "inf"],
            "--temperature",
            "inf",
        ),
        (&["sample", "run", "--top-k", "0"], "--top-k", "0"),
        (
            &["sweep", "--config", "s.toml", "--jobs", "0"],
            "--jobs",
            "0",
        ),
        (
            &["sweep", "--config", "s.toml", "--jobs", "5000"],
            "--jobs",
            "5000",
        ),
        (
            &["experiment", "repetition", "--seeds", "0"],
            "--seeds",
            "0",
        ),
        (&["demo", "--iters", "0"], "--iters", "0"),
    ];
    for (args, argument, value) in cases {
        refused_by_name(strata_run(cwd, args), argument, value);
    }
}

#[test]
fn a_negative_eps_is_refused_before_training() {
    let fx = Fixture::new(10);
    let out = fx.path().join("run");
    fx.train(&out, &["--set", "train.eps=-1e-3"]).fails_with(&[
        "tiny.toml",
        "train.eps",
        "positive",
    ]);
    assert!(!out.exists(), "a refused run writes nothing");
}

#[test]
fn an_oversized_batch_is_refused_with_the_memory_it_needs() {
    let fx = Fixture::new(10);
    let out = fx.path().join("run");
    let refused = fx
        .train(&out, &["--set", "train.batch_size=100000000"])
        .fails_with(&["train.batch_size", "model.block_size", "needs at least"]);
    assert!(!refused.stderr.contains("panicked"), "{}", refused.stderr);
    assert!(!refused.stderr.contains("alloc"), "{}", refused.stderr);
    assert!(!out.exists(), "a refused run writes nothing");
}

#[test]
fn eval_batches_beyond_what_the_corpus_fills_are_refused() {
    let fx = Fixture::new(2);
    let run = fx.path().join("run");
    fx.train(&run, &[]).ok();
    let run = run.to_str().unwrap();
    strata_run(
        fx.path(),
        &["eval", run, "--batches", "100000000000", "--device", "cpu"],
    )
    .fails_with(&["--batches 100000000000", "val split"]);
    // 20,000 characters, 10% validation: 2,000 tokens, 1,984 windows of 17, 4 per batch.
    strata_run(
        fx.path(),
        &["eval", run, "--batches", "497", "--device", "cpu"],
    )
    .fails_with(&["--batches 497", "1 to 496"]);
    let at_most = strata_run(
        fx.path(),
        &["eval", run, "--batches", "496", "--device", "cpu"],
    )
    .ok();
    assert!(
        at_most.stdout.contains("(496 batches per split)"),
        "{}",
        at_most.stdout
    );
}
