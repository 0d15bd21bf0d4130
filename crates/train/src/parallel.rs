//! CPU data parallelism inside one process: a batch is split by rows across threads, each
//! thread runs forward and backward on a replica whose parameters share the master's storage,
//! and the replicas' gradients are added into the master's in a fixed order.
//!
//! On a small model, libtorch's intra-op threading leaves cores idle between and inside
//! small kernels (dispatch, autograd bookkeeping, reductions below the parallel grain). One
//! single-threaded worker per core keeps every core in large, independent matrix products
//! instead. The result equals one full-batch step up to float summation order, and is
//! bitwise reproducible for a fixed worker count.

use crate::evaluation::{LossKind, batch_loss};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use strata_core::Gpt;
use strata_tensor::{Error, Result, seeded};
use tch::{Device, Tensor, nn};

/// A replica: its own variable store whose tensors alias the master's storage.
struct Replica {
    /// Keeps the replica's variables alive.
    _store: nn::VarStore,
    model: Gpt,
    /// The replica's parameters, in the order of [`Worker::masters`].
    params: Vec<Tensor>,
}

/// Work sent to a worker thread.
enum Job {
    /// Forward and backward of `weight · loss(x, y)`, dropout seeded by `seed` if given.
    Step {
        x: Tensor,
        y: Tensor,
        weight: f64,
        seed: Option<u64>,
    },
    /// Losses of numbered batches, without gradients.
    Eval(Vec<(usize, Tensor, Tensor)>, LossKind),
}

/// A worker's answer.
enum Reply {
    /// The weighted loss and the replica's gradients (undefined where a parameter got none).
    Step(Result<(Tensor, Vec<Tensor>)>),
    /// Numbered batch losses.
    Eval(Result<Vec<(usize, Tensor)>>),
}

/// A long-lived worker thread that owns one replica.
struct Worker {
    jobs: Option<Sender<Job>>,
    replies: Receiver<Reply>,
    handle: Option<JoinHandle<()>>,
    /// The master's parameters, matching the replica's `params`.
    masters: Vec<Tensor>,
}

/// The master model's helpers: zero or more worker threads that train alongside it.
pub struct DataParallel {
    workers: Vec<Worker>,
    threads_per_worker: i32,
}

/// Where a batch's rows sit in its step's global batch, when several processes each train
/// on a share of it ([`crate::distributed`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchShare {
    /// Rows of the global batch: each chunk's loss is weighted by its rows over these.
    pub global_rows: i64,
    /// Index of this share's first chunk among the global batch's chunks (dropout seeds).
    pub first_chunk: u64,
}

/// How many single-threaded workers to use for `threads` cores and `batch_size` rows.
pub fn worker_count(device: Device, threads: usize, batch_size: usize) -> usize {
    if device != Device::Cpu {
        return 1;
    }
    threads.max(1).min(batch_size.max(1))
}

/// `weight · loss(x, y)` of `model`, backpropagated; returns the detached weighted loss.
fn weighted_step(
    model: &Gpt,
    x: &Tensor,
    y: &Tensor,
    weight: f64,
    seed: Option<u64>,
) -> Result<Tensor> {
    let loss = match (seed, model.dropout_generator()) {
        // The model's own generator: no process-wide lock, so workers draw at the same time.
        (Some(seed), Some(generator)) => {
            generator.reseed(seed)?;
            model.loss(x, y, true)?
        }
        (Some(seed), None) => seeded(seed, || model.loss(x, y, true))?,
        (None, _) => model.loss(x, y, true)?,
    };
    let scaled = loss.f_mul_scalar(weight)?;
    scaled.f_backward()?;
    Ok(scaled.f_detach()?)
}

/// Losses of numbered batches without gradients.
fn batch_losses(
    model: &Gpt,
    batches: Vec<(usize, Tensor, Tensor)>,
    kind: LossKind,
) -> Result<Vec<(usize, Tensor)>> {
    batches
        .into_iter()
        .map(|(i, x, y)| Ok((i, batch_loss(model, &x, &y, kind)?)))
        .collect()
}

/// The body of a worker thread: serve jobs until the sender is dropped.
fn serve(replica: Replica, threads: i32, jobs: Receiver<Job>, replies: Sender<Reply>) {
    tch::set_num_threads(threads);
    let mut params = replica.params;
    for job in jobs {
        let reply = match job {
            Job::Step { x, y, weight, seed } => {
                for param in &mut params {
                    param.zero_grad();
                }
                Reply::Step(
                    weighted_step(&replica.model, &x, &y, weight, seed).and_then(|loss| {
                        let grads = params
                            .iter()
                            .map(Tensor::f_grad)
                            .collect::<std::result::Result<Vec<_>, _>>()?;
                        Ok((loss, grads))
                    }),
                )
            }
            Job::Eval(batches, kind) => Reply::Eval(batch_losses(&replica.model, batches, kind)),
        };
        if replies.send(reply).is_err() {
            return;
        }
    }
}

/// The error for a worker that stopped answering.
fn worker_gone() -> Error {
    Error::Invalid("a data-parallel worker thread stopped (it panicked)".to_owned())
}

impl DataParallel {
    /// Starts `workers - 1` worker threads, each with a replica of `master` (whose parameters
    /// live in `store`); every worker runs libtorch with `threads_per_worker` threads.
    pub fn new(
        store: &nn::VarStore,
        master: &Gpt,
        workers: usize,
        threads_per_worker: usize,
    ) -> Result<Self> {
        let threads = threads_per_worker.max(1) as i32;
        let master_vars = store.variables();
        let workers = (1..workers.max(1))
            .map(|_| {
                let replica_store = nn::VarStore::new(store.device());
                // The throwaway initial values are drawn inside a seeded section so that
                // building replicas never disturbs another thread's seeded random numbers.
                let model = seeded(0, || Gpt::new(&replica_store.root(), master.config()))?
                    .with_kernel(master.depth.kernel())
                    .with_generator(strata_kernels::Generator::new(0)?);
                let mut named: Vec<_> = replica_store.variables().into_iter().collect();
                named.sort_by(|a, b| a.0.cmp(&b.0));
                let (mut masters, mut params) = (Vec::new(), Vec::new());
                for (name, mut var) in named {
                    let source = master_vars.get(&name).ok_or_else(|| {
                        Error::Invalid(format!("replica parameter `{name}` has no master"))
                    })?;
                    tch::no_grad(|| var.f_set_data(&source.f_detach()?))?;
                    masters.push(source.shallow_clone());
                    params.push(var);
                }
                let replica = Replica {
                    _store: replica_store,
                    model,
                    params,
                };
                let (job_tx, job_rx) = channel();
                let (reply_tx, reply_rx) = channel();
                let handle = std::thread::Builder::new()
                    .name("strata-dp-worker".to_owned())
                    .spawn(move || serve(replica, threads, job_rx, reply_tx))
                    .map_err(Error::io("data-parallel worker thread"))?;
                Ok(Worker {
                    jobs: Some(job_tx),
                    replies: reply_rx,
                    handle: Some(handle),
                    masters,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            workers,
            threads_per_worker: threads,
        })
    }

    /// Number of workers, the master included.
    pub fn workers(&self) -> usize {
        self.workers.len() + 1
    }

    /// Sends `job` to worker `i`.
    fn send(&self, i: usize, job: Job) -> Result<()> {
        self.workers[i]
            .jobs
            .as_ref()
            .ok_or_else(worker_gone)?
            .send(job)
            .map_err(|_| worker_gone())
    }

    /// Forward and backward of the mean next-token loss of `(x, y)` across the workers,
    /// leaving the full-batch gradient in `master`'s parameters (which must hold zero or no
    /// gradients). `dropout_seed` seeds worker `i`'s dropout with `dropout_seed + i`; without
    /// it no random numbers are drawn. Returns the batch loss (a 0-d tensor).
    pub fn forward_backward(
        &mut self,
        master: &Gpt,
        x: &Tensor,
        y: &Tensor,
        dropout_seed: Option<u64>,
    ) -> Result<Tensor> {
        let share = BatchShare {
            global_rows: x.size()[0],
            first_chunk: 0,
        };
        self.forward_backward_share(master, x, y, dropout_seed, share)
    }

    /// [`Self::forward_backward`] of a share of a global batch: each chunk's loss is weighted
    /// by its rows over `share.global_rows`, and chunk `i` seeds its dropout with
    /// `dropout_seed + share.first_chunk + i`, so that the shares' gradients and losses add up
    /// to the global batch's.
    pub fn forward_backward_share(
        &mut self,
        master: &Gpt,
        x: &Tensor,
        y: &Tensor,
        dropout_seed: Option<u64>,
        share: BatchShare,
    ) -> Result<Tensor> {
        let chunks = split_rows(x, y, self.workers())?;
        let rows = share.global_rows as f64;
        let weight = |x: &Tensor| x.size()[0] as f64 / rows;
        let seed = |i: usize| dropout_seed.map(|s| s.wrapping_add(share.first_chunk + i as u64));
        let mut chunks = chunks.into_iter();
        let (x0, y0) = chunks
            .next()
            .ok_or_else(|| Error::Invalid("empty batch".to_owned()))?;
        let mut used = 0;
        for (i, (x, y)) in chunks.enumerate() {
            let w = weight(&x);
            self.send(
                i,
                Job::Step {
                    x,
                    y,
                    weight: w,
                    seed: seed(i + 1),
                },
            )?;
            used += 1;
        }
        tch::set_num_threads(self.threads_per_worker);
        let own = weighted_step(master, &x0, &y0, weight(&x0), seed(0));
        // Collect every reply before returning, so no worker is left mid-step.
        let mut replies = Vec::with_capacity(used);
        for worker in &self.workers[..used] {
            replies.push(match worker.replies.recv() {
                Ok(Reply::Step(result)) => result,
                _ => Err(worker_gone()),
            });
        }
        let mut total = own?;
        tch::no_grad(|| -> Result<()> {
            for (worker, reply) in self.workers.iter().zip(replies) {
                let (loss, grads) = reply?;
                total = total.f_add(&loss)?;
                for (master_param, extra) in worker.masters.iter().zip(grads) {
                    if !extra.defined() {
                        continue;
                    }
                    let mut grad = master_param.f_grad()?;
                    if !grad.defined() {
                        return Err(Error::Invalid(
                            "data-parallel step: a master parameter has no gradient".to_owned(),
                        ));
                    }
                    let _ = grad.f_add_(&extra)?;
                }
            }
            Ok(())
        })?;
        Ok(total)
    }

    /// Mean loss over `batches` without gradients, batches dealt round-robin to the workers
    /// and summed in batch order.
    pub fn evaluate(&mut self, master: &Gpt, batches: &[(Tensor, Tensor)]) -> Result<f64> {
        if batches.is_empty() {
            return Ok(0.0);
        }
        let losses = self.losses(master, batches, LossKind::BatchMean)?;
        let mut values = Vec::with_capacity(losses.len());
        for loss in &losses {
            values.push(loss.f_double_value(&[])?);
        }
        Ok(values.iter().sum::<f64>() / batches.len() as f64)
    }

    /// The losses of `kind` of each of `batches`, in order, without gradients; batches are
    /// dealt round-robin to the workers.
    pub fn losses(
        &mut self,
        master: &Gpt,
        batches: &[(Tensor, Tensor)],
        kind: LossKind,
    ) -> Result<Vec<Tensor>> {
        let n = self.workers();
        let share = |worker: usize| -> Vec<(usize, Tensor, Tensor)> {
            batches
                .iter()
                .enumerate()
                .skip(worker)
                .step_by(n)
                .map(|(i, (x, y))| (i, x.shallow_clone(), y.shallow_clone()))
                .collect()
        };
        for i in 0..self.workers.len() {
            self.send(i, Job::Eval(share(i + 1), kind))?;
        }
        tch::set_num_threads(self.threads_per_worker);
        let own = batch_losses(master, share(0), kind);
        let mut losses = Vec::with_capacity(batches.len());
        for worker in &self.workers {
            match worker.replies.recv() {
                Ok(Reply::Eval(result)) => losses.extend(result?),
                _ => return Err(worker_gone()),
            }
        }
        losses.extend(own?);
        losses.sort_by_key(|(i, _)| *i);
        Ok(losses.into_iter().map(|(_, l)| l).collect())
    }
}

impl Drop for DataParallel {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            worker.jobs = None;
        }
        for worker in &mut self.workers {
            if let Some(handle) = worker.handle.take() {
                let _ = handle.join();
            }
        }
    }
}

/// Splits the rows of `x` and `y` into `parts` contiguous chunks whose sizes differ by at
/// most one (fewer chunks when there are fewer rows).
fn split_rows(x: &Tensor, y: &Tensor, parts: usize) -> Result<Vec<(Tensor, Tensor)>> {
    let rows = x.size()[0];
    let parts = (parts as i64).clamp(1, rows.max(1));
    let (base, extra) = (rows / parts, rows % parts);
    let mut start = 0;
    (0..parts)
        .map(|i| {
            let len = base + i64::from(i < extra);
            let chunk = (x.f_narrow(0, start, len)?, y.f_narrow(0, start, len)?);
            start += len;
            Ok(chunk)
        })
        .collect()
}
