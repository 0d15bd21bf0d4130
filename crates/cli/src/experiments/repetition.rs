//! The layer-repetition study: a 2-layer model trained for `steps`, grown to 4 layers by a
//! layer plan and trained for `steps` more, against a 4-layer model trained from scratch
//! for the same total training FLOPs.

use super::{
    Outcome, Run, StudyArgs, command_line, outcome_row, paired_section, plot_outcomes, recipe,
    record, scheduled, trained_model, val_curve, write_doc,
};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use strata_core::flops::train_flops_per_step;
use strata_merge::MergeConfig;
use strata_tensor::Result;

/// The growth plans compared: (label, folder, plan).
const PLANS: [(&str, &str, &str); 3] = [
    ("repeat 1-1-2-2", "repeat", "1-1-2-2"),
    ("interleave 1-2-1-2", "interleave", "1-2-1-2"),
    ("identity 1-I-2-I", "identity", "1-I-2-I"),
];

/// The baseline's label.
const SCRATCH: &str = "from scratch, 4 layers";

/// Runs the study and writes `repetition.md` and `repetition.png`/`.svg`.
pub fn run(args: &StudyArgs, stop: &Arc<AtomicBool>) -> Result<()> {
    let root = args.out.join("repetition");
    let steps = args.steps;
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut scratch_steps = 0;
    let recipe = recipe(args)?;
    let t = &recipe.train;
    for seed in 1..=args.seeds {
        let dir = root.join(format!("seed-{seed}"));
        let mut source_config = scheduled(args, &recipe, steps, seed);
        source_config.model.n_layer = 2;
        let source_dir = dir.join("source");
        let source = Run::new(args, source_dir.clone(), source_config).train(stop)?;
        let small = trained_model(&source_dir)?;
        let mut large = small.clone();
        large.n_layer = 4;
        let (f_small, f_large) = (
            train_flops_per_step(&small, t.batch_size, small.block_size),
            train_flops_per_step(&large, t.batch_size, large.block_size),
        );
        let source_curve = val_curve(&source_dir)?;
        let source_flops = f_small * steps as f64;
        for (label, folder, plan) in PLANS.iter() {
            let init = dir.join(format!("{folder}-init"));
            grow(&source_dir, &init, plan)?;
            let run_dir = dir.join(folder);
            let summary = Run::new(args, run_dir.clone(), scheduled(args, &recipe, steps, seed))
                .init_from(&init)
                .train(stop)?;
            // From the growth point on; step 0 shows what growing did to the loss.
            let curve: Vec<(f64, f64)> = val_curve(&run_dir)?
                .into_iter()
                .map(|(s, v)| (source_flops + s as f64 * f_large, v))
                .collect();
            record(
                &mut outcomes,
                label,
                summary.final_val_loss,
                source_flops + f_large * steps as f64,
                source.wall_s + summary.wall_s,
                curve,
            );
        }
        let source_points = source_curve
            .iter()
            .map(|&(s, v)| (s as f64 * f_small, v))
            .collect();
        record(
            &mut outcomes,
            "2-layer source (before growing)",
            source.final_val_loss,
            source_flops,
            source.wall_s,
            source_points,
        );
        // The same total compute spent on a 4-layer model from the start.
        scratch_steps = ((source_flops + f_large * steps as f64) / f_large).round() as u64;
        let mut scratch_config = scheduled(args, &recipe, scratch_steps, seed);
        scratch_config.model.n_layer = 4;
        let scratch_dir = dir.join("scratch");
        let scratch = Run::new(args, scratch_dir.clone(), scratch_config).train(stop)?;
        let curve = val_curve(&scratch_dir)?
            .into_iter()
            .map(|(s, v)| (s as f64 * f_large, v))
            .collect();
        record(
            &mut outcomes,
            SCRATCH,
            scratch.final_val_loss,
            f_large * scratch_steps as f64,
            scratch.wall_s,
            curve,
        );
    }
    plot_outcomes(
        args,
        "repetition",
        "Growing 2 layers to 4 vs training 4 from scratch (mean over seeds)",
        &outcomes,
    )?;
    let doc = report(args, &outcomes, scratch_steps);
    let path = write_doc(args, "repetition.md", &doc)?;
    tracing::info!(doc = %path.display(), "wrote the repetition study");
    Ok(())
}

/// Expands the source run's checkpoint by `plan` into `out` (reused when already there).
fn grow(source: &Path, out: &Path, plan: &str) -> Result<()> {
    if out.join("merge.toml").exists() {
        return Ok(());
    }
    let text = format!(
        "[layers]\nsource = '{}'\nplan = '{plan}'\n",
        source.display()
    );
    let config = MergeConfig::parse(&text, "repetition study")?;
    crate::merge_run::merge(&config, Path::new("repetition study"), Some(out), true)?;
    Ok(())
}

/// The markdown report.
fn report(args: &StudyArgs, outcomes: &[Outcome], scratch_steps: u64) -> String {
    let mut s = format!(
        "# Layer repetition: growing a trained 2-layer model to 4 layers\n\n\
         Command: `{}` (about {} minutes on 2 CPU cores).\n\n\
         A 2-layer model is trained for {steps} steps with `{config}` (`model.n_layer = 2`), \
         grown to 4 layers by `strata merge` with a layer plan, and trained for {steps} more \
         steps (`--init-from`: fresh AdamW, the recipe's warmup and cosine schedule). \
         `1-1-2-2` repeats each layer in place, `1-2-1-2` repeats the stack, and `1-I-2-I` \
         inserts identity blocks (copies with zeroed output projections, LLaMA Pro style; the \
         grown model starts with exactly the source's function). The baseline trains the \
         4-layer model from scratch for {scratch_steps} steps, the same total training FLOPs \
         (counted by `strata_core::flops`). Every run: the recipe's batch, context, learning \
         rate and schedule, `train.max_iters` and `train.lr_decay_iters` set to the phase's \
         steps, evaluation every {eval} steps on the same {eval_tokens} held-out tokens for every run \
         and seed; seeds 1 to {seeds}. Run folders: `{out}/repetition/seed-S/`.\n\n\
         | variant | final val loss (mean ± std) | training FLOPs | wall s (mean) |\n\
         |---|---|---|---|\n",
        command_line("repetition", args),
        (args.seeds * args.steps * 5 / 1200).max(1),
        steps = args.steps,
        config = args.config.display(),
        eval = args.eval_interval,
        eval_tokens = args.eval_tokens,
        seeds = args.seeds,
        out = args.out.display(),
    );
    for o in outcomes.iter().filter(|o| !o.label.starts_with("2-layer")) {
        s += &outcome_row(o);
    }
    s += &paired_section(outcomes, SCRATCH, |label| label.starts_with("2-layer"));
    s += "\nThe plot shows the 2-layer source's curve, then each grown model's from the moment \
          it was grown (its first point is the grown model before any further training).\n\n\
          ![validation loss against training FLOPs](repetition.png)\n";
    s
}
