//! CPU data parallelism inside one process: a batch is split by rows across threads, each
//! thread runs forward and backward on a replica whose parameters share the master's storage,
//! and the replicas' gradients are added into the master's in a fixed order.
//!
//! On a small model, libtorch's intra-op threading leaves cores idle between and inside
//! small kernels (dispatch, autograd bookkeeping, reductions below the parallel grain). One
//! single-threaded worker per core keeps every core in large, independent matrix products
//! instead. The result equals one full-batch step up to float summation order, and is
//! bitwise reproducible for a fixed worker count.

use strata_core::Gpt;
use strata_tensor::{Error, Result, seeded};
use tch::{Device, Tensor, nn};

/// One extra worker: its own variable store whose tensors alias the master's storage.
struct Replica {
    /// Keeps the replica's variables alive.
    _store: nn::VarStore,
    model: Gpt,
    /// (master parameter, replica parameter) pairs, in the master store's name order.
    pairs: Vec<(Tensor, Tensor)>,
}

/// The master model's helpers: zero or more replicas that train alongside it.
pub struct DataParallel {
    replicas: Vec<Replica>,
    threads_per_worker: i32,
}

/// How many single-threaded workers to use for `threads` cores and `batch_size` rows.
pub fn worker_count(device: Device, threads: usize, batch_size: usize) -> usize {
    if device != Device::Cpu {
        return 1;
    }
    threads.max(1).min(batch_size.max(1))
}

impl DataParallel {
    /// Builds `workers - 1` replicas of `master` (whose parameters live in `store`), each
    /// worker running libtorch with `threads_per_worker` intra-op threads.
    pub fn new(
        store: &nn::VarStore,
        master: &Gpt,
        workers: usize,
        threads_per_worker: usize,
    ) -> Result<Self> {
        let master_vars = store.variables();
        let replicas = (1..workers.max(1))
            .map(|_| {
                let replica_store = nn::VarStore::new(store.device());
                // The throwaway initial values are drawn inside a seeded section so that building
                // replicas never disturbs another thread's seeded random numbers.
                let model = seeded(0, || Gpt::new(&replica_store.root(), master.config()))?;
                let mut pairs = Vec::with_capacity(master_vars.len());
                let mut names: Vec<_> = replica_store.variables().into_iter().collect();
                names.sort_by(|a, b| a.0.cmp(&b.0));
                for (name, mut var) in names {
                    let source = master_vars.get(&name).ok_or_else(|| {
                        Error::Invalid(format!("replica parameter `{name}` has no master"))
                    })?;
                    tch::no_grad(|| var.set_data(&source.detach()));
                    pairs.push((source.shallow_clone(), var));
                }
                Ok(Replica {
                    _store: replica_store,
                    model,
                    pairs,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            replicas,
            threads_per_worker: threads_per_worker.max(1) as i32,
        })
    }

    /// Number of workers, the master included.
    pub fn workers(&self) -> usize {
        self.replicas.len() + 1
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
        let chunks = split_rows(x, y, self.workers())?;
        let used_replicas = chunks.len() - 1;
        let rows = x.size()[0] as f64;
        let threads = self.threads_per_worker;
        let run = |model: &Gpt, (x, y): (Tensor, Tensor), index: usize| -> Result<Tensor> {
            tch::set_num_threads(threads);
            let weight = x.size()[0] as f64 / rows;
            let loss = match dropout_seed {
                Some(seed) => seeded(seed.wrapping_add(index as u64), || model.loss(&x, &y, true))?,
                None => model.loss(&x, &y, true)?,
            };
            let scaled = loss.f_mul_scalar(weight)?;
            scaled.f_backward()?;
            Ok(scaled.detach())
        };
        let mut chunks = chunks.into_iter();
        let first = chunks
            .next()
            .ok_or_else(|| Error::Invalid("empty batch".to_owned()))?;
        let losses = std::thread::scope(|scope| -> Result<Vec<Tensor>> {
            let handles: Vec<_> = self
                .replicas
                .iter_mut()
                .zip(chunks)
                .enumerate()
                .map(|(i, (replica, chunk))| {
                    let run = &run;
                    scope.spawn(move || {
                        for (_, param) in &mut replica.pairs {
                            param.zero_grad();
                        }
                        run(&replica.model, chunk, i + 1)
                    })
                })
                .collect();
            let mut losses = vec![run(master, first, 0)?];
            for handle in handles {
                losses.push(handle.join().map_err(|_| {
                    Error::Invalid("a data-parallel worker thread panicked".to_owned())
                })??);
            }
            Ok(losses)
        })?;
        tch::no_grad(|| -> Result<()> {
            // Only the replicas that received a chunk hold fresh gradients.
            for replica in self.replicas.iter().take(used_replicas) {
                for (master_param, replica_param) in &replica.pairs {
                    let extra = replica_param.grad();
                    if !extra.defined() {
                        continue;
                    }
                    let mut grad = master_param.grad();
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
        let mut total = losses[0].shallow_clone();
        for loss in &losses[1..] {
            total = total.f_add(loss)?;
        }
        Ok(total)
    }

    /// Mean loss over `batches` without gradients, batches dealt round-robin to the workers
    /// and summed in batch order.
    pub fn evaluate(&mut self, master: &Gpt, batches: &[(Tensor, Tensor)]) -> Result<f64> {
        if batches.is_empty() {
            return Ok(0.0);
        }
        let n = self.workers();
        let threads = self.threads_per_worker;
        let eval = |model: &Gpt, mine: Vec<(usize, Tensor, Tensor)>| -> Result<Vec<(usize, f64)>> {
            tch::set_num_threads(threads);
            let _guard = tch::no_grad_guard();
            mine.into_iter()
                .map(|(i, x, y)| Ok((i, model.loss(&x, &y, false)?.double_value(&[]))))
                .collect()
        };
        let share = |worker: usize| -> Vec<(usize, Tensor, Tensor)> {
            batches
                .iter()
                .enumerate()
                .skip(worker)
                .step_by(n)
                .map(|(i, (x, y))| (i, x.shallow_clone(), y.shallow_clone()))
                .collect()
        };
        let mut losses = std::thread::scope(|scope| -> Result<Vec<(usize, f64)>> {
            let handles: Vec<_> = self
                .replicas
                .iter_mut()
                .enumerate()
                .map(|(i, replica)| {
                    let (eval, mine) = (&eval, share(i + 1));
                    scope.spawn(move || eval(&replica.model, mine))
                })
                .collect();
            let mut all = eval(master, share(0))?;
            for handle in handles {
                all.extend(handle.join().map_err(|_| {
                    Error::Invalid("a data-parallel worker thread panicked".to_owned())
                })??);
            }
            Ok(all)
        })?;
        losses.sort_by_key(|(i, _)| *i);
        Ok(losses.iter().map(|(_, l)| l).sum::<f64>() / batches.len() as f64)
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
