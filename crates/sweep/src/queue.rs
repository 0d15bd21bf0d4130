//! The order pending jobs train in: the given order, except that a cooldown branch waits
//! until its source has finished. A branch then starts as soon as it can (not after every
//! source of the study), and a study planned seed by seed finishes whole seeds first.

use crate::registry::Job;
use std::collections::HashSet;
use std::path::Path;
use strata_tensor::{Error, Result};

/// Jobs waiting to train, each ready once the source of its cooldown branch has finished.
pub(crate) struct Queue<'a> {
    /// Jobs not started yet, in the given order.
    waiting: Vec<&'a Job>,
    /// Run folders of the queued jobs that have not finished yet.
    unfinished: HashSet<&'a Path>,
}

impl<'a> Queue<'a> {
    /// A queue of `pending` (jobs not done), in their order.
    pub(crate) fn new(pending: &[&'a Job]) -> Self {
        Self {
            waiting: pending.to_vec(),
            unfinished: pending.iter().map(|j| j.dir.as_path()).collect(),
        }
    }

    /// The first waiting job that is not a branch of an unfinished source, taken off the
    /// queue; `None` when every waiting job waits on a source (or none is left).
    pub(crate) fn next_ready(&mut self) -> Option<&'a Job> {
        let ready = self.waiting.iter().position(|job| {
            job.branch_of
                .as_deref()
                .is_none_or(|source| !self.unfinished.contains(source))
        })?;
        Some(self.waiting.remove(ready))
    }

    /// Records that `job` finished, so branches of it become ready.
    pub(crate) fn finished(&mut self, job: &Job) {
        self.unfinished.remove(job.dir.as_path());
    }

    /// `Ok` when no job is left waiting; otherwise an error naming the first waiting branch
    /// and its source, which ended without finishing.
    pub(crate) fn all_started(&self) -> Result<()> {
        match self.waiting.first() {
            None => Ok(()),
            Some(job) => Err(Error::Invalid(format!(
                "run {} is a cooldown branch of {}, which ended without finishing",
                job.id,
                job.branch_of
                    .as_deref()
                    .map_or_else(String::new, |s| s.display().to_string())
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use strata_train::RunConfig;

    /// The smallest run config (the queue never reads it).
    const CONFIG: &str = "[model]\nn_layer = 1\nn_head = 2\nd_model = 16\nblock_size = 16\n\
        [data]\ntokenizer = \"char\"\n[train]\nbatch_size = 4\nmax_iters = 10\nlearning_rate = 1e-3\n\
        min_lr = 1e-4\nwarmup_iters = 1\neval_interval = 5\neval_iters = 1\ndevice = \"cpu\"\n";

    /// A job in folder `id`, a branch of folder `source` when given.
    fn job(id: &str, source: Option<&str>) -> Job {
        Job {
            id: id.to_owned(),
            dir: PathBuf::from(id),
            config: RunConfig::parse(CONFIG, "test", id, &[]).unwrap(),
            branch_of: source.map(PathBuf::from),
            init_from: None,
        }
    }

    #[test]
    fn a_branch_waits_for_its_queued_source_and_no_longer() {
        let jobs = [
            job("s1", None),
            job("s1-b", Some("s1")),
            job("s2", None),
            job("done-b", Some("done")),
        ];
        let refs: Vec<&Job> = jobs.iter().collect();
        let mut queue = Queue::new(&refs);
        let mut order = Vec::new();
        // s1 starts; its branch waits; s2 and the branch of a source finished earlier go.
        while let Some(j) = queue.next_ready() {
            order.push(j.id.clone());
        }
        assert_eq!(order, ["s1", "s2", "done-b"]);
        let err = queue.all_started().unwrap_err().to_string();
        assert!(err.contains("s1-b") && err.contains("s1,"), "{err}");
        queue.finished(&jobs[0]);
        assert_eq!(queue.next_ready().map(|j| j.id.as_str()), Some("s1-b"));
        assert!(queue.all_started().is_ok());
    }
}
