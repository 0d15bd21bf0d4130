//! The arguments `strata sweep` and `strata compare` share: a study config, its folders, the
//! number of parallel runs and whether to train or only report.

use std::path::PathBuf;

/// Arguments of a multi-run study (`strata sweep`, `strata compare`).
#[derive(Clone, Debug, clap::Args)]
pub struct StudyArgs {
    /// The study config (see configs/sweep-cpu.toml or configs/compare-dwa-cpu.toml).
    #[arg(long)]
    pub config: PathBuf,
    /// Study folder: run folders and results.jsonl (default: runs/<kind>/<name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Folder for the report and plots (default: the study folder).
    #[arg(long)]
    pub docs: Option<PathBuf>,
    /// Runs at once, each in its own process with its share of the cores (1 to 1024).
    #[arg(long, default_value_t = 1, value_parser = crate::bounds::count(crate::bounds::MAX_JOBS))]
    pub jobs: usize,
    /// Analyse the finished runs (read from the study's run folders) without training.
    #[arg(long)]
    pub report_only: bool,
    /// Write the study's runs as a job list instead of training them: one `strata job` line
    /// per run (runs from their first step, then cooldown branches), for a Slurm array or
    /// any job runner sharing the study folder; then `--report-only`.
    #[arg(long, value_name = "FILE", conflicts_with = "report_only")]
    pub write_jobs: Option<PathBuf>,
    /// Hide progress bars.
    #[arg(long)]
    pub quiet: bool,
}

impl StudyArgs {
    /// The study folder: `--out`, else `runs/<kind>/<name>`.
    pub fn out(&self, kind: &str, name: &str) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs").join(kind).join(name))
    }

    /// The report folder: `--docs`, else the study folder `out`.
    pub fn docs(&self, out: &std::path::Path) -> PathBuf {
        self.docs.clone().unwrap_or_else(|| out.to_path_buf())
    }

    /// The command line that reproduces the study, as the report quotes it.
    pub fn command(&self, verb: &str) -> String {
        let mut command = format!("strata {verb} --config {}", self.config.display());
        if self.jobs > 1 {
            command += &format!(" --jobs {}", self.jobs);
        }
        command
    }
}
