//! Errors as the command line prints them: the library's typed errors about run folders,
//! resuming, divergence and overrides, worded with the flags that change the outcome.

use strata_tensor::Error;

/// The message for `err`, naming the `strata train` flags where they are the way out.
pub fn describe(err: &Error) -> String {
    match err {
        Error::RunFolderTaken {
            dir,
            has_checkpoint: true,
        } => format!(
            "{} already holds a run; pass --resume to continue it, --overwrite to replace it, \
             or --out for a new folder",
            dir.display()
        ),
        Error::RunFolderTaken {
            dir,
            has_checkpoint: false,
        } => format!(
            "{} holds a run that left no checkpoint (it stopped before its first one), so \
             there is nothing to resume; pass --overwrite to start it afresh, or --out for a \
             new folder",
            dir.display()
        ),
        Error::ForeignEntry { dir, name } => format!(
            "{} holds `{name}`, which strata did not write; --overwrite replaces only a run's \
             own files, so nothing was deleted: move `{name}` elsewhere, or use --out for a \
             new folder",
            dir.display()
        ),
        Error::ExportFolderTaken {
            dir,
            foreign: Some(name),
        } => format!(
            "{}: holds `{name}`, which an export does not write; expected a new or empty folder \
             (even --overwrite replaces only earlier exports)",
            dir.display()
        ),
        Error::ExportFolderTaken { dir, foreign: None } => format!(
            "{}: holds an earlier export; pass --overwrite to replace it",
            dir.display()
        ),
        Error::NothingToResume { dir } => format!(
            "checkpoint {}: has no checkpoint yet: its run stopped before the first \
             checkpoint, so there is nothing to resume; run the same command with --overwrite \
             instead of --resume to start it afresh",
            dir.display()
        ),
        Error::ResumeAndInitFrom => "--resume continues a run and --init-from starts a new one \
                                     from a checkpoint's weights: pass one of them"
            .to_owned(),
        Error::Diverged {
            step,
            what,
            last_good,
        } => {
            let last_good = match last_good {
                Some(path) => format!(
                    "the last good checkpoint is {} (continue from it with `--resume {}` and, \
                     say, a lower train.learning_rate)",
                    path.display(),
                    path.display()
                ),
                None => "this run has no good checkpoint to go back to".to_owned(),
            };
            format!(
                "training diverged at step {step}: {what}; nothing was saved from the diverged \
                 state, and {last_good}"
            )
        }
        Error::Override {
            file,
            items,
            message,
            quoted,
        } => {
            let hint = quoted
                .as_ref()
                .map_or_else(String::new, |q| format!(" (a string: quote it, --set {q})"));
            format!("{file} with --set {items}: {message}{hint}")
        }
        other => other.to_string(),
    }
}
