//! Multi-process data-parallel training on libtorch's c10d engine (Gloo over TCP), launched as
//! torchrun and Slurm launch PyTorch jobs.
//!
//! Every rank draws the same global batch of a step ([`crate::trainer::training_batch`]) and
//! trains on its own contiguous share of the rows; the ranks' gradients, each already weighted
//! by its rows' share of the global batch, are summed in buckets, so every rank takes the same
//! optimizer step. With one in-process worker per rank this is the same arithmetic, in the same
//! order, as one process splitting the batch across as many workers: the weights are bitwise
//! equal (tested). Only rank 0 evaluates and writes (checkpoints, metrics, plots, summary); the
//! others train and wait for it at the next step's gradient sum.
//!
//! The ranks agree on stopping: each step's sum carries every rank's stop request, so a signal
//! to any rank stops all of them after the same step, and rank 0 saves. A rank that dies makes
//! the others' next collective fail at once (a hung one, after the timeout), with a message;
//! the last good checkpoint stays. Resuming with another world size continues the same global
//! batches: equal up to float summation order, not bitwise.

use crate::config::RunConfig;
use std::hash::{Hash, Hasher};
use std::time::Duration;
use strata_kernels::process_group::{GradientReducer, ProcessGroup, Reduce};
use strata_tensor::{Error, Result};
use tch::{Kind, Tensor};

/// Environment variable: seconds any rank waits for the others (connecting, each collective)
/// before giving up with an error (default [`DEFAULT_TIMEOUT_S`]).
pub const TIMEOUT_ENV: &str = "STRATA_DIST_TIMEOUT_S";
/// Default of [`TIMEOUT_ENV`]: long enough for rank 0's evaluations and checkpoints.
pub const DEFAULT_TIMEOUT_S: u64 = 300;
/// Gradient bytes per all-reduce bucket (as PyTorch's DDP).
const BUCKET_BYTES: i64 = 25 << 20;

/// Where this process sits among the ranks of a run, as torchrun (or Slurm) describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct World {
    /// This process's rank, 0 to `size - 1`.
    pub rank: usize,
    /// The number of ranks.
    pub size: usize,
    /// Rank among the processes of this machine.
    pub local_rank: usize,
    /// Processes on this machine.
    pub local_size: usize,
    /// Address of rank 0's rendezvous store.
    pub master_addr: String,
    /// Port of rank 0's rendezvous store.
    pub master_port: u16,
    /// How long to wait for the other ranks.
    pub timeout: Duration,
}

/// Reads variable `name` through `get`, parsed, or `None` when unset.
fn parsed<T: std::str::FromStr>(
    get: &dyn Fn(&str) -> Option<String>,
    name: &str,
    expected: &str,
) -> Result<Option<T>> {
    let Some(text) = get(name) else {
        return Ok(None);
    };
    text.trim().parse().map(Some).map_err(|_| Error::Config {
        file: "environment".to_owned(),
        field: name.to_owned(),
        expected: expected.to_owned(),
        found: format!("`{text}`"),
    })
}

impl World {
    /// The world the environment describes: torchrun's `RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
    /// `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT` (Slurm's `SLURM_PROCID`,
    /// `SLURM_NTASKS`, `SLURM_LOCALID`, `SLURM_NTASKS_PER_NODE` stand in for the first four);
    /// `None` for a single process (no `WORLD_SIZE`, or 1).
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(&|name| std::env::var(name).ok())
    }

    /// [`Self::from_env`] over the variables `get` returns.
    pub fn from_vars(get: &dyn Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let either = |torch: &str, slurm: &str, expected: &str| -> Result<Option<usize>> {
            match parsed(get, torch, expected)? {
                Some(value) => Ok(Some(value)),
                None => parsed(get, slurm, expected),
            }
        };
        let size = match parsed::<usize>(get, "WORLD_SIZE", "a count of processes, at least 1")? {
            Some(size) => size,
            // Slurm's task count only counts when a master is named, so that a plain
            // `srun strata train` stays a single process.
            None if get("MASTER_ADDR").is_some() => {
                match parsed(get, "SLURM_NTASKS", "a count of tasks")? {
                    Some(size) => size,
                    None => return Ok(None),
                }
            }
            None => return Ok(None),
        };
        if size <= 1 {
            return Ok(None);
        }
        let missing = |name: &str, expected: &str| Error::Config {
            file: "environment".to_owned(),
            field: name.to_owned(),
            expected: expected.to_owned(),
            found: "nothing (unset)".to_owned(),
        };
        let rank = either("RANK", "SLURM_PROCID", "this process's rank, from 0")?
            .ok_or_else(|| missing("RANK", "this process's rank, 0 to WORLD_SIZE - 1"))?;
        if rank >= size {
            return Err(Error::Config {
                file: "environment".to_owned(),
                field: "RANK".to_owned(),
                expected: format!("0 to {} (WORLD_SIZE is {size})", size - 1),
                found: rank.to_string(),
            });
        }
        let local_rank =
            either("LOCAL_RANK", "SLURM_LOCALID", "a rank on this machine")?.unwrap_or(rank);
        let local_size = either(
            "LOCAL_WORLD_SIZE",
            "SLURM_NTASKS_PER_NODE",
            "a count of processes on this machine",
        )?
        .unwrap_or(size)
        .max(1);
        let master_addr = get("MASTER_ADDR")
            .filter(|a| !a.trim().is_empty())
            .ok_or_else(|| missing("MASTER_ADDR", "the host name or address of rank 0"))?;
        let master_port = parsed(get, "MASTER_PORT", "a TCP port, 1 to 65535")?
            .ok_or_else(|| missing("MASTER_PORT", "a free TCP port on rank 0's host"))?;
        let timeout_s =
            parsed(get, TIMEOUT_ENV, "whole seconds, at least 1")?.unwrap_or(DEFAULT_TIMEOUT_S);
        Ok(Some(Self {
            rank,
            size,
            local_rank,
            local_size,
            master_addr,
            master_port,
            timeout: Duration::from_secs(timeout_s.max(1)),
        }))
    }

    /// Whether this rank writes the run folder (rank 0).
    pub fn writes(&self) -> bool {
        self.rank == 0
    }
}

/// `err` from a forward and backward pass whose gradients a [`GradientReducer`] summed: a
/// collective's failure inside backward (libtorch reports Gloo's errors as its own) becomes
/// the distributed error a failed sum after backward gives; other errors pass unchanged.
pub(crate) fn overlapped_sum_failed(err: Error, world: &World) -> Error {
    match err {
        Error::Torch(torch) => {
            let text = torch.to_string();
            let lower = text.to_lowercase();
            if ["gloo", "connection", "timed out", "timeout"]
                .iter()
                .any(|w| lower.contains(w))
            {
                Error::Distributed {
                    rank: world.rank,
                    message: format!(
                        "the gradient all-reduce during backward across {} ranks failed \
                         (another rank stopped, was killed or timed out; its own log says \
                         why): {}",
                        world.size,
                        text.lines().next().unwrap_or_default()
                    ),
                }
            } else {
                Error::Torch(torch)
            }
        }
        other => other,
    }
}

/// What the ranks summed with a step's gradients.
#[derive(Debug)]
pub(crate) struct StepSum {
    /// The global batch's loss (a 0-d tensor).
    pub loss: Tensor,
    /// Whether any rank asked to stop.
    pub stop: bool,
}

/// This rank's membership of a run's process group.
pub(crate) struct Ranks {
    group: ProcessGroup,
    world: World,
}

impl Ranks {
    /// Joins the group `world` describes and checks that every rank was given the same run:
    /// `config` (from `file`) and `key` (how it starts).
    pub fn join(world: &World, config: &RunConfig, file: &str, key: &str) -> Result<Self> {
        let batch = config.train.batch_size;
        if !batch.is_multiple_of(world.size) {
            return Err(Error::Config {
                file: file.to_owned(),
                field: "train.batch_size".to_owned(),
                expected: format!(
                    "a multiple of the world size {} (each rank trains on an equal share of \
                     every batch)",
                    world.size
                ),
                found: batch.to_string(),
            });
        }
        tracing::info!(
            rank = world.rank,
            world = world.size,
            master = %format!("{}:{}", world.master_addr, world.master_port),
            "joining the process group"
        );
        let group = ProcessGroup::join(
            &world.master_addr,
            world.master_port,
            world.rank,
            world.size,
            world.timeout,
        )?;
        let ranks = Self {
            group,
            world: world.clone(),
        };
        ranks.check_same_run(config, key)?;
        Ok(ranks)
    }

    /// This rank's place.
    pub fn world(&self) -> &World {
        &self.world
    }

    /// Refuses a group whose ranks were given different runs: a hash of the config, `key`
    /// and the world size is compared across ranks.
    fn check_same_run(&self, config: &RunConfig, key: &str) -> Result<()> {
        let mut hasher = std::hash::DefaultHasher::new();
        (config.to_toml(), key, self.world.size).hash(&mut hasher);
        // 62 bits, so that the hash and its negation both fit an i64.
        let hash = (hasher.finish() >> 2) as i64;
        let both = Tensor::f_from_slice(&[hash, -hash])?;
        self.group
            .all_reduce(std::slice::from_ref(&both), Reduce::Max)?;
        let (high, low) = (both.f_int64_value(&[0])?, -both.f_int64_value(&[1])?);
        if high != hash || low != hash {
            return Err(Error::Distributed {
                rank: self.world.rank,
                message: "the ranks were given different runs (their configs with overrides, \
                          the checkpoints they resume or start from, or world sizes differ): start \
                          every rank with the same command"
                    .to_owned(),
            });
        }
        Ok(())
    }

    /// Tells every rank whether this one is ready (`ok`); fails on every rank when one is not,
    /// so that no rank waits for a rank that gave up.
    pub fn agree(&self, ok: bool, what: &str) -> Result<()> {
        let failed = Tensor::f_from_slice(&[i64::from(!ok)])?;
        self.group
            .all_reduce(std::slice::from_ref(&failed), Reduce::Max)?;
        if ok && failed.f_int64_value(&[0])? != 0 {
            return Err(Error::Distributed {
                rank: self.world.rank,
                message: format!("another rank failed {what}; its log says why"),
            });
        }
        Ok(())
    }

    /// Copies rank 0's `tensors` (the weights) to every rank.
    pub fn broadcast_from_writer(&self, tensors: &[Tensor]) -> Result<()> {
        tch::no_grad(|| self.group.broadcast(tensors, 0))
    }

    /// This rank's rows of a global batch `(x, y)`.
    pub fn shard(&self, x: &Tensor, y: &Tensor) -> Result<(Tensor, Tensor)> {
        let rows = x.size()[0] / self.world.size as i64;
        let start = rows * self.world.rank as i64;
        Ok((x.f_narrow(0, start, rows)?, y.f_narrow(0, start, rows)?))
    }

    /// A reducer that sums the gradients of `params` (name, tensor; the trainable ones, in
    /// name order) across the ranks while backward runs, in buckets of about
    /// [`BUCKET_BYTES`] (see [`GradientReducer`]).
    pub fn gradient_reducer(&self, params: &[(String, Tensor)]) -> Result<GradientReducer> {
        self.group
            .gradient_reducer(params, usize::try_from(BUCKET_BYTES).unwrap_or(usize::MAX))
    }

    /// Sums the ranks' weighted `loss` across the ranks, along with this rank's `stop`
    /// request, and `params`' gradients (already weighted by each rank's share of the batch)
    /// in buckets of about [`BUCKET_BYTES`], unless a [`GradientReducer`] summed them during
    /// backward (`grads_summed`).
    pub fn sum_step(
        &self,
        params: &[Tensor],
        loss: &Tensor,
        stop: bool,
        grads_summed: bool,
    ) -> Result<StepSum> {
        tch::no_grad(|| {
            let grads: Vec<Tensor> = if grads_summed {
                Vec::new()
            } else {
                params
                    .iter()
                    .map(Tensor::f_grad)
                    .collect::<std::result::Result<Vec<_>, _>>()?
                    .into_iter()
                    .filter(Tensor::defined)
                    .collect()
            };
            let buckets = buckets(&grads);
            let flats = buckets
                .iter()
                .map(|bucket| {
                    let views = bucket
                        .iter()
                        .map(|g| g.f_view(-1))
                        .collect::<std::result::Result<Vec<_>, _>>()?;
                    Tensor::f_cat(&views, 0)
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let device = loss.device();
            let extra = Tensor::f_stack(
                &[
                    loss.f_to_kind(Kind::Double)?,
                    Tensor::from(f64::from(u8::from(stop))).f_to_device(device)?,
                ],
                0,
            )?;
            let mut all = flats;
            all.push(extra.shallow_clone());
            self.group.all_reduce(&all, Reduce::Sum)?;
            for (bucket, flat) in buckets.iter().zip(&all) {
                let mut offset = 0;
                for grad in bucket {
                    let n = grad.numel() as i64;
                    let summed = flat.f_narrow(0, offset, n)?.f_view_as(grad)?;
                    grad.shallow_clone().f_copy_(&summed)?;
                    offset += n;
                }
            }
            Ok(StepSum {
                loss: extra.f_get(0)?.f_to_kind(loss.kind())?,
                stop: extra.f_double_value(&[1])? > 0.0,
            })
        })
    }
}

/// `grads` grouped, in order, into buckets of one dtype and device and at most
/// [`BUCKET_BYTES`] each (a single larger tensor gets its own).
fn buckets(grads: &[Tensor]) -> Vec<Vec<Tensor>> {
    let mut out: Vec<Vec<Tensor>> = Vec::new();
    let mut bytes = 0;
    for grad in grads {
        let size = grad.numel() as i64 * grad.kind().elt_size_in_bytes() as i64;
        let fits = out.last().is_some_and(|bucket| {
            let first = &bucket[0];
            first.kind() == grad.kind()
                && first.device() == grad.device()
                && bytes + size <= BUCKET_BYTES
        });
        if fits {
            bytes += size;
            if let Some(bucket) = out.last_mut() {
                bucket.push(grad.shallow_clone());
            }
        } else {
            bytes = size;
            out.push(vec![grad.shallow_clone()]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn world_of(vars: &[(&str, &str)]) -> Result<Option<World>> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        World::from_vars(&|name| map.get(name).cloned())
    }

    #[test]
    fn torchrun_variables_describe_the_world() {
        let world = world_of(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (world.rank, world.size, world.local_rank, world.local_size),
            (3, 4, 1, 2)
        );
        assert_eq!(
            (world.master_addr.as_str(), world.master_port),
            ("node0", 29500)
        );
        assert_eq!(world.timeout, Duration::from_secs(DEFAULT_TIMEOUT_S));
        assert!(!world.writes());
    }

    #[test]
    fn slurm_variables_stand_in_for_torchrun_ones() {
        let world = world_of(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_LOCALID", "0"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((world.rank, world.size), (0, 2));
        assert!(world.writes());
    }

    #[test]
    fn one_process_is_no_world() {
        assert_eq!(world_of(&[]).unwrap(), None);
        assert_eq!(
            world_of(&[("WORLD_SIZE", "1"), ("RANK", "0")]).unwrap(),
            None
        );
        // A lone Slurm task without a master is a plain run.
        assert_eq!(
            world_of(&[("SLURM_NTASKS", "4"), ("SLURM_PROCID", "1")]).unwrap(),
            None
        );
    }

    #[test]
    fn bad_variables_are_named() {
        let err = world_of(&[
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "1"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("RANK"), "{err}");
        let err = world_of(&[("WORLD_SIZE", "2"), ("RANK", "2"), ("MASTER_ADDR", "h")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`RANK`") && err.contains("0 to 1"), "{err}");
        let err = world_of(&[("WORLD_SIZE", "two")]).unwrap_err().to_string();
        assert!(err.contains("WORLD_SIZE") && err.contains("`two`"), "{err}");
        let err = world_of(&[("WORLD_SIZE", "2"), ("RANK", "1"), ("MASTER_ADDR", "h")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("MASTER_PORT"), "{err}");
    }

    #[test]
    fn buckets_keep_order_and_respect_the_cap() {
        let small = Tensor::zeros([10], (Kind::Float, tch::Device::Cpu));
        let big = Tensor::zeros([BUCKET_BYTES / 4 + 1], (Kind::Float, tch::Device::Cpu));
        let grads = vec![small.shallow_clone(), small.shallow_clone(), big, small];
        let sizes: Vec<usize> = buckets(&grads).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![2, 1, 1]);
    }
}
