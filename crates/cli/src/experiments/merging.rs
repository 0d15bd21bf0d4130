//! The merging study: one base trained on the whole corpus for `steps`, fine-tuned for
//! `steps / 2` on each half of it, and the two fine-tunes merged by every method; every model
//! is evaluated on the validation split of each half.

use super::{Run, StudyArgs, command_line, pm, recipe, scheduled, write_doc};
use crate::inspect::{evaluate_on_corpus, load};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use strata_merge::{MergeConfig, MethodKind};
use strata_plots::comparison::{Series, plot_grouped_bars};
use strata_tensor::{DeviceChoice, Error, Result};
use strata_train::prepare::load_corpus;

/// Validation batches per half for every evaluation.
const EVAL_BATCHES: usize = 50;

/// The merges compared: (label, short label for the plot, method, weights (unused by SLERP),
/// extra TOML).
const MERGES: [(&str, &str, MethodKind, [f64; 2], &str); 6] = [
    (
        "soup (linear 0.5/0.5)",
        "soup",
        MethodKind::Linear,
        [0.5, 0.5],
        "",
    ),
    (
        "task arithmetic λ=1",
        "TA λ=1",
        MethodKind::TaskArithmetic,
        [1.0, 1.0],
        "",
    ),
    (
        "task arithmetic λ=0.5",
        "TA λ=.5",
        MethodKind::TaskArithmetic,
        [0.5, 0.5],
        "",
    ),
    (
        "TIES density 0.5",
        "TIES",
        MethodKind::Ties,
        [1.0, 1.0],
        "density = 0.5",
    ),
    (
        "DARE drop 0.5",
        "DARE",
        MethodKind::Dare,
        [0.5, 0.5],
        "drop = 0.5",
    ),
    (
        "SLERP t=0.5",
        "SLERP",
        MethodKind::Slerp,
        [0.5, 0.5],
        "t = 0.5",
    ),
];

/// Runs the study and writes `merging.md` and `merging.png`/`.svg`.
pub fn run(args: &StudyArgs, stop: &Arc<AtomicBool>) -> Result<()> {
    let root = args.out.join("merging");
    let halves = split_corpus(args, &root)?;
    // (label, losses on half A over seeds, losses on half B over seeds)
    let mut rows: Vec<(String, Vec<f64>, Vec<f64>)> = Vec::new();
    let recipe = recipe(args)?;
    for seed in 1..=args.seeds {
        let dir = root.join(format!("seed-{seed}"));
        let base = dir.join("base");
        Run::new(
            args,
            base.clone(),
            scheduled(args, &recipe, args.steps, seed),
        )
        .train(stop)?;
        let mut models = vec![("base".to_owned(), base.clone())];
        for (name, half) in ["A", "B"].iter().zip(&halves) {
            let mut config = scheduled(args, &recipe, (args.steps / 2).max(1), seed);
            config.data.path = Some(half.clone());
            let out = dir.join(format!("finetune-{name}"));
            Run::new(args, out.clone(), config)
                .init_from(&base)
                .train(stop)?;
            models.push((format!("fine-tune {name}"), out));
        }
        for (label, _, method, weights, extra) in MERGES {
            let out = dir.join(format!("merge-{}", slug(label)));
            let mut text = format!(
                "base = '{}'\nmodels = ['{}', '{}']\nmethod = '{}'\n{extra}\n",
                base.display(),
                models[1].1.display(),
                models[2].1.display(),
                method.name(),
            );
            // A merge config refuses parameters its method does not use.
            if method != MethodKind::Slerp {
                text += &format!("weights = [{}, {}]\n", weights[0], weights[1]);
            }
            if method == MethodKind::Dare {
                text += &format!("seed = {seed}\n");
            }
            let config = MergeConfig::parse(&text, label)?;
            crate::merge_run::merge(&config, Path::new(label), Some(&out), true)?;
            models.push((label.to_owned(), out));
        }
        for (i, (label, run)) in models.iter().enumerate() {
            let loaded = load(run, DeviceChoice::Cpu)?;
            let a = evaluate_on_corpus(&loaded, &halves[0], EVAL_BATCHES)?;
            let b = evaluate_on_corpus(&loaded, &halves[1], EVAL_BATCHES)?;
            if rows.len() <= i {
                rows.push((label.clone(), Vec::new(), Vec::new()));
            }
            rows[i].1.push(a);
            rows[i].2.push(b);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let short = ["base", "fine-tune A", "fine-tune B"]
        .into_iter()
        .chain(MERGES.iter().map(|m| m.1));
    let categories: Vec<String> = short.map(str::to_owned).collect();
    let series = ["half A", "half B"]
        .iter()
        .enumerate()
        .map(|(k, label)| Series {
            label: (*label).to_owned(),
            points: rows
                .iter()
                .enumerate()
                .map(|(i, r)| (i as f64, mean(if k == 0 { &r.1 } else { &r.2 })))
                .collect(),
        })
        .collect::<Vec<_>>();
    plot_grouped_bars(
        &args.docs,
        "merging",
        "Validation loss on each half of the corpus (mean over seeds)",
        "validation loss",
        &categories,
        &series,
    )?;
    let path = write_doc(args, "merging.md", &report(args, &rows))?;
    tracing::info!(doc = %path.display(), "wrote the merging study");
    Ok(())
}

/// Writes the two halves of the study's corpus (split at the line break nearest the middle)
/// as `half-a.txt` and `half-b.txt`.
fn split_corpus(args: &StudyArgs, root: &Path) -> Result<[PathBuf; 2]> {
    let config = strata_train::RunConfig::load(&args.config, &[])?;
    let text = load_corpus(&config)?.text;
    let middle = text.len() / 2;
    let cut = text[middle..]
        .find('\n')
        .map(|i| middle + i + 1)
        .filter(|&c| c < text.len())
        .ok_or_else(|| {
            Error::data(
                &args.config,
                "the corpus has no line break after its middle",
            )
        })?;
    std::fs::create_dir_all(root).map_err(Error::io(root))?;
    let paths = [root.join("half-a.txt"), root.join("half-b.txt")];
    for (path, part) in paths.iter().zip([&text[..cut], &text[cut..]]) {
        std::fs::write(path, part).map_err(Error::io(path))?;
    }
    Ok(paths)
}

/// A folder name for a label.
fn slug(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// The markdown report.
fn report(args: &StudyArgs, rows: &[(String, Vec<f64>, Vec<f64>)]) -> String {
    let mut s = format!(
        "# Merging fine-tunes of one base model\n\n\
         Command: `{}` (about a minute per seed on 2 CPU cores).\n\n\
         The corpus of `{config}` is cut in two at the line break nearest its middle (half A \
         and half B: different plays of Tiny Shakespeare). A base model is trained on the whole \
         corpus for {steps} steps; two fine-tunes start from it (`--init-from`: fresh AdamW, the \
         recipe's warmup and cosine schedule) and train for {half} steps on half A and half B \
         (`data.path`); `strata merge` then merges the two fine-tunes with the base as the \
         common ancestor. Every model is evaluated on {batches} fixed batches of the \
         validation split (last 10%) of each half. Seeds 1 to {seeds} (seed of the base, the \
         fine-tunes and DARE's masks); mean ± std over seeds. Run folders and merge recipes \
         (`merge.toml`): `{out}/merging/seed-S/`.\n\n\
         | model | val loss, half A | val loss, half B | mean of both |\n|---|---|---|---|\n",
        command_line("merging", args),
        config = args.config.display(),
        steps = args.steps,
        half = (args.steps / 2).max(1),
        batches = EVAL_BATCHES,
        seeds = args.seeds,
        out = args.out.display(),
    );
    for (label, a, b) in rows {
        let both: Vec<f64> = a.iter().zip(b).map(|(x, y)| 0.5 * (x + y)).collect();
        s += &format!("| {label} | {} | {} | {} |\n", pm(a), pm(b), pm(&both));
    }
    s += "\n![validation loss on each half](merging.png)\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_become_folder_names() {
        assert_eq!(slug("task arithmetic λ=0.5"), "task-arithmetic-0-5");
        assert_eq!(slug("soup (linear 0.5/0.5)"), "soup-linear-0-5-0-5");
    }
}
