//! [`train`]: a [`Trainer`] driven from its first step to its last, with a progress bar and
//! stopping on request (a signal's flag, or a step count; in a multi-process run, the stop all
//! ranks agreed on).

use crate::config::RunConfig;
use crate::trainer::{RunOptions, RunSummary, StepReport, Trainer};
use indicatif::{ProgressBar, ProgressStyle};
use strata_tensor::Result;

/// Trains `config` as described by `options`; returns the summary also written to
/// `summary.json` in the run folder.
pub fn train(config: RunConfig, options: &RunOptions) -> Result<RunSummary> {
    let mut trainer = Trainer::new(config, options)?;
    let max_iters = trainer.config().train.max_iters;
    let bar = progress_bar(
        options,
        trainer.steps_done(),
        max_iters,
        &trainer.config().name,
    );
    let stop_requested = |trainer: &Trainer| {
        trainer.stop_requested() || options.stop_after == Some(trainer.steps_done())
    };
    while !trainer.is_finished() && !stop_requested(&trainer) {
        let report = if trainer.events_due() {
            bar.suspend(|| trainer.step())?
        } else {
            trainer.step()?
        };
        show(&bar, &report);
    }
    bar.finish_and_clear();
    trainer.finish()
}

/// Moves the progress bar to the step `report` describes, with its loss at log steps.
fn show(bar: &ProgressBar, report: &StepReport) {
    if let (Some(loss), Some(tok_s)) = (report.loss, report.tokens_per_sec) {
        bar.set_message(format!(
            "loss {loss:.4} lr {:.2e} {:.1}k tok/s",
            report.lr,
            tok_s / 1e3
        ));
    }
    bar.set_position(report.step);
}

/// The progress bar (hidden when not wanted or not on a terminal).
fn progress_bar(options: &RunOptions, start: u64, total: u64, name: &str) -> ProgressBar {
    if !options.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total).with_position(start);
    let style = ProgressStyle::with_template(
        "{prefix} {bar:30.cyan/blue} {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(name.to_owned());
    bar
}
