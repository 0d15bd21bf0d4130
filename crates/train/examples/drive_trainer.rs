//! Drives a `Trainer` one step at a time, as another program would: a tiny char-level model
//! on the start of Tiny Shakespeare, hooks that print each evaluation and checkpoint, and a
//! loop that could do anything between steps (here: stop once the training loss is low).
//!
//! `cargo run --release --example drive_trainer`

use strata_tensor::{Error, Result};
use strata_train::{RunConfig, RunOptions, Trainer};

/// Trains the tiny model, printing each evaluation and checkpoint, then removes its folder.
pub fn main() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("strata-drive-trainer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    let corpus = dir.join("corpus.txt");
    let text = &strata_train::prepare::TINY_SHAKESPEARE[..20_000];
    std::fs::write(&corpus, text).map_err(Error::io(&corpus))?;
    let config = RunConfig::parse(
        &format!(
            "[model]\nn_layer = 2\nn_head = 2\nd_model = 32\nblock_size = 16\n\
             [data]\npath = {:?}\ntokenizer = \"char\"\n\
             [train]\nbatch_size = 8\nmax_iters = 40\nlearning_rate = 3e-3\nmin_lr = 3e-4\n\
             warmup_iters = 5\neval_interval = 20\neval_iters = 2\ndevice = \"cpu\"\n",
            corpus.display().to_string()
        ),
        "drive.toml",
        "drive",
        &[],
    )?;
    let mut trainer = Trainer::new(config, &RunOptions::new("drive.toml", dir.join("run")))?;
    trainer.on_evaluation(|e| println!("step {:>3}: val loss {:.3}", e.step, e.val_loss));
    trainer.on_checkpoint(|path| println!("saved {}", path.display()));
    while !trainer.is_finished() {
        let report = trainer.step()?;
        if report.loss.is_some_and(|loss| loss < 1.0) {
            break;
        }
    }
    let summary = trainer.finish()?;
    println!(
        "{} steps, final val loss {:?}",
        summary.steps, summary.final_val_loss
    );
    std::fs::remove_dir_all(&dir).map_err(Error::io(&dir))
}
