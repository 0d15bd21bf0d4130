//! [`ProcessGroup`]: one rank's membership of a c10d process group (libtorch's TCPStore for the
//! rendezvous, its Gloo backend for the collectives), the engine `torch.distributed` runs on,
//! reached through the C++ shim in `csrc/process_group.cpp`.
//!
//! Every wait on another rank (connecting to the store, the rendezvous, each collective) is
//! bounded by the group's timeout, so an unreachable master or a dead rank becomes an error,
//! never a hang. Collectives work on CPU tensors; CUDA tensors go through host copies (the
//! NCCL backend is not in the shim yet).
//!
//! [`GradientReducer`] overlaps the gradient sum with backward: libtorch's `c10d::Reducer`
//! (the engine of PyTorch's DistributedDataParallel) hooks every parameter's gradient
//! accumulator, and each bucket's all-reduce starts as soon as its gradients are ready; the
//! end of backward waits for the last one.

use std::ffi::{CStr, CString, c_int, c_void};
use std::ptr::NonNull;
use std::time::Duration;
use strata_tensor::{Error, Result};
use tch::{Device, Tensor};
use torch_sys::C_tensor;

#[cfg(feature = "cpp")]
unsafe extern "C" {
    fn strata_process_group_last_error() -> *const std::ffi::c_char;
    fn strata_process_group_new(
        host: *const std::ffi::c_char,
        port: c_int,
        rank: c_int,
        world: c_int,
        timeout_ms: i64,
    ) -> *mut c_void;
    fn strata_process_group_free(group: *mut c_void);
    fn strata_process_group_all_reduce(
        group: *mut c_void,
        tensors: *const *const C_tensor,
        count: i64,
        op: c_int,
    ) -> c_int;
    fn strata_process_group_broadcast(
        group: *mut c_void,
        tensors: *const *const C_tensor,
        count: i64,
        root: c_int,
    ) -> c_int;
    fn strata_reducer_new(
        group: *mut c_void,
        params: *const *const C_tensor,
        count: i64,
        bucket_bytes: i64,
    ) -> *mut c_void;
    fn strata_reducer_prepare(reducer: *mut c_void) -> c_int;
    fn strata_reducer_check_finished(reducer: *mut c_void) -> c_int;
    fn strata_reducer_buckets(reducer: *mut c_void) -> i64;
    fn strata_reducer_launched(reducer: *mut c_void) -> i64;
    fn strata_reducer_free(reducer: *mut c_void) -> c_int;
}
#[cfg(not(feature = "cpp"))]
use crate::without_cpp::{
    strata_process_group_all_reduce, strata_process_group_broadcast, strata_process_group_free,
    strata_process_group_last_error, strata_process_group_new, strata_reducer_buckets,
    strata_reducer_check_finished, strata_reducer_free, strata_reducer_launched,
    strata_reducer_new, strata_reducer_prepare,
};

/// How a collective combines the ranks' values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    /// The sum over ranks.
    Sum,
    /// The largest value over ranks.
    Max,
}

/// One rank's membership of a process group of `world` ranks.
pub struct ProcessGroup {
    handle: NonNull<c_void>,
    rank: usize,
    world: usize,
}

// SAFETY: the group is used from one thread at a time (`&mut`-free methods only wait on
// collectives); libtorch's backend is thread-safe for launching and waiting.
unsafe impl Send for ProcessGroup {}

/// The shim's message for the call that just failed on this thread.
fn shim_error() -> String {
    // SAFETY: the shim returns a pointer to its thread-local, NUL-terminated message.
    let message = unsafe { CStr::from_ptr(strata_process_group_last_error()) };
    message.to_string_lossy().trim().to_owned()
}

impl ProcessGroup {
    /// Joins the group of `world` ranks as `rank`; rank 0 serves the rendezvous store on
    /// `port` of `host`, which every other rank connects to. Waits at most `timeout` for the
    /// others, here and in every later collective.
    pub fn join(
        host: &str,
        port: u16,
        rank: usize,
        world: usize,
        timeout: Duration,
    ) -> Result<Self> {
        let fail = |message: String| Error::Distributed { rank, message };
        if !crate::CPP {
            return Err(fail(
                "a process group needs strata-kernels' `cpp` feature, which this build lacks"
                    .to_owned(),
            ));
        }
        if world == 0 || rank >= world {
            return Err(fail(format!(
                "rank {rank} is not in a world of {world} ranks (RANK must be below WORLD_SIZE)"
            )));
        }
        let c_host = CString::new(host)
            .map_err(|_| fail(format!("the master address `{host}` holds a NUL byte")))?;
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let (c_rank, c_world) = (
            c_int::try_from(rank).map_err(|_| fail("rank too large".to_owned()))?,
            c_int::try_from(world).map_err(|_| fail("world size too large".to_owned()))?,
        );
        // SAFETY: plain values and a NUL-terminated string that outlives the call.
        let raw = unsafe {
            strata_process_group_new(
                c_host.as_ptr(),
                c_int::from(port),
                c_rank,
                c_world,
                timeout_ms,
            )
        };
        let handle = NonNull::new(raw).ok_or_else(|| {
            fail(format!(
                "could not join the group of {world} ranks through {host}:{port} within {} s \
                 (is rank 0 running, is MASTER_ADDR:MASTER_PORT reachable and free?): {}",
                timeout.as_secs(),
                shim_error()
            ))
        })?;
        Ok(Self {
            handle,
            rank,
            world,
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks.
    pub fn world(&self) -> usize {
        self.world
    }

    /// Combines each of `tensors` across the ranks, in place (every rank ends with the
    /// result); the collectives are launched together, then all waited for.
    pub fn all_reduce(&self, tensors: &[Tensor], op: Reduce) -> Result<()> {
        let code = match op {
            Reduce::Sum => 0,
            Reduce::Max => 1,
        };
        self.on_host(tensors, "all-reduce", |ptrs, n| {
            // SAFETY: `ptrs` holds `n` live tensors for the duration of the call.
            unsafe { strata_process_group_all_reduce(self.handle.as_ptr(), ptrs, n, code) }
        })
    }

    /// Copies `root`'s `tensors` into every other rank's, in place.
    pub fn broadcast(&self, tensors: &[Tensor], root: usize) -> Result<()> {
        let root = c_int::try_from(root).unwrap_or(c_int::MAX);
        self.on_host(tensors, "broadcast", |ptrs, n| {
            // SAFETY: `ptrs` holds `n` live tensors for the duration of the call.
            unsafe { strata_process_group_broadcast(self.handle.as_ptr(), ptrs, n, root) }
        })
    }

    /// A reducer that sums the gradients of `params` (name, tensor) across the ranks while
    /// backward runs, in buckets of about `bucket_bytes`. The tensors are trainable CPU
    /// tensors, listed in the same order on every rank, and each must get a gradient in every
    /// backward pass (errors name the ones that did not).
    pub fn gradient_reducer(
        &self,
        params: &[(String, Tensor)],
        bucket_bytes: usize,
    ) -> Result<GradientReducer> {
        let fail = |message: String| Error::Distributed {
            rank: self.rank,
            message,
        };
        if let Some((name, t)) = params
            .iter()
            .find(|(_, t)| t.device() != Device::Cpu || !t.requires_grad())
        {
            return Err(fail(format!(
                "the overlapped gradient all-reduce takes trainable CPU parameters, but `{name}` \
                 is on {:?} (requires_grad = {})",
                t.device(),
                t.requires_grad()
            )));
        }
        let ptrs: Vec<*const C_tensor> = params.iter().map(|(_, t)| t.as_ptr()).collect();
        let bucket_bytes = i64::try_from(bucket_bytes.max(1)).unwrap_or(i64::MAX);
        // SAFETY: `ptrs` holds live tensors for the duration of the call; the reducer keeps
        // its own references to them and to the group.
        let raw = unsafe {
            strata_reducer_new(
                self.handle.as_ptr(),
                ptrs.as_ptr(),
                ptrs.len() as i64,
                bucket_bytes,
            )
        };
        let handle = NonNull::new(raw).ok_or_else(|| {
            fail(format!(
                "could not set up the overlapped gradient all-reduce: {}",
                shim_error()
            ))
        })?;
        Ok(GradientReducer {
            handle,
            rank: self.rank,
            names: params.iter().map(|(name, _)| name.clone()).collect(),
        })
    }

    /// Runs the collective `call` over CPU views of `tensors` (host copies of CUDA tensors,
    /// copied back after), turning a failure into an error that names what to look at.
    fn on_host(
        &self,
        tensors: &[Tensor],
        what: &str,
        call: impl FnOnce(*const *const C_tensor, i64) -> c_int,
    ) -> Result<()> {
        let host: Vec<Tensor> = tensors
            .iter()
            .map(|t| {
                if t.device() == Device::Cpu {
                    Ok(t.shallow_clone())
                } else {
                    t.f_to_device(Device::Cpu)
                }
            })
            .collect::<std::result::Result<_, _>>()?;
        let ptrs: Vec<*const C_tensor> = host.iter().map(Tensor::as_ptr).collect();
        if call(ptrs.as_ptr(), ptrs.len() as i64) != 0 {
            return Err(Error::Distributed {
                rank: self.rank,
                message: format!(
                    "{what} across {} ranks failed (another rank stopped, was killed or timed \
                     out; its own log says why): {}",
                    self.world,
                    shim_error()
                ),
            });
        }
        for (target, source) in tensors.iter().zip(&host) {
            if target.device() != Device::Cpu {
                let mut target = target.shallow_clone();
                tch::no_grad(|| target.f_copy_(source))?;
            }
        }
        Ok(())
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: the handle came from `strata_process_group_new` and is freed once.
        unsafe { strata_process_group_free(self.handle.as_ptr()) };
    }
}

/// Sums gradients across the ranks while backward runs ([`ProcessGroup::gradient_reducer`]):
/// arm it with [`GradientReducer::prepare`] before each backward pass that should be summed;
/// when that backward returns, every parameter's gradient is the sum over the ranks.
pub struct GradientReducer {
    handle: NonNull<c_void>,
    rank: usize,
    /// The parameters' names, by index.
    names: Vec<String>,
}

// SAFETY: the reducer is armed from one thread at a time; its hooks run on the thread that
// runs backward, and its all-reduces on the backend's own threads.
unsafe impl Send for GradientReducer {}

impl GradientReducer {
    /// Arms the reducer for the next backward pass. Fails when the last armed pass left a
    /// parameter without a gradient (its bucket never all-reduced).
    pub fn prepare(&self) -> Result<()> {
        // SAFETY: the handle came from `strata_reducer_new` and is live.
        self.unfinished_error(unsafe { strata_reducer_prepare(self.handle.as_ptr()) })
    }

    /// Fails unless the last armed backward pass summed every gradient: a parameter that got
    /// no gradient leaves its bucket un-reduced (and the others' sums not copied back).
    pub fn check_finished(&self) -> Result<()> {
        // SAFETY: the handle came from `strata_reducer_new` and is live.
        self.unfinished_error(unsafe { strata_reducer_check_finished(self.handle.as_ptr()) })
    }

    /// The error for a failed shim call (`code` nonzero), naming the parameters libtorch
    /// reports without a gradient.
    fn unfinished_error(&self, code: c_int) -> Result<()> {
        if code == 0 {
            return Ok(());
        }
        let text = shim_error();
        let missing = missing_parameters(&text)
            .map(|indices| {
                indices
                    .iter()
                    .map(|&i| match self.names.get(i) {
                        Some(name) => format!("`{name}`"),
                        None => format!("#{i}"),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or(text);
        Err(Error::Distributed {
            rank: self.rank,
            message: format!(
                "the overlapped gradient all-reduce of the last backward pass did not finish: \
                 every trainable parameter must get a gradient in every step, but these got \
                 none: {missing}"
            ),
        })
    }

    /// The number of buckets the parameters are summed in.
    pub fn buckets(&self) -> usize {
        // SAFETY: the handle is live.
        usize::try_from(unsafe { strata_reducer_buckets(self.handle.as_ptr()) }).unwrap_or(0)
    }

    /// The bucket all-reduces launched so far, over every backward pass.
    pub fn launched(&self) -> u64 {
        // SAFETY: the handle is live.
        u64::try_from(unsafe { strata_reducer_launched(self.handle.as_ptr()) }).unwrap_or(0)
    }
}

/// The parameter indices in c10d's "did not receive grad" report, if it has them.
fn missing_parameters(text: &str) -> Option<Vec<usize>> {
    let (_, rest) = text.split_once("did not receive grad for rank ")?;
    let (_, list) = rest.split_once(':')?;
    let indices: Vec<usize> = list
        .lines()
        .next()?
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()
        .ok()?;
    (!indices.is_empty()).then_some(indices)
}

impl Drop for GradientReducer {
    fn drop(&mut self) {
        // SAFETY: the handle came from `strata_reducer_new` and is freed once.
        if unsafe { strata_reducer_free(self.handle.as_ptr()) } != 0 {
            tracing::warn!(
                "freeing the gradient reducer reported an error: {}",
                shim_error()
            );
        }
    }
}
