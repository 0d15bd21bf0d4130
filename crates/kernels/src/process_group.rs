//! [`ProcessGroup`]: one rank's membership of a c10d process group (libtorch's TCPStore for the
//! rendezvous, its Gloo backend for the collectives), the engine `torch.distributed` runs on,
//! reached through the C++ shim in `csrc/process_group.cpp`.
//!
//! Every wait on another rank (connecting to the store, the rendezvous, each collective) is
//! bounded by the group's timeout, so an unreachable master or a dead rank becomes an error,
//! never a hang. Collectives work on CPU tensors; CUDA tensors go through host copies (the
//! NCCL backend is not in the shim yet).

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
}
#[cfg(not(feature = "cpp"))]
use crate::without_cpp::{
    strata_process_group_all_reduce, strata_process_group_broadcast, strata_process_group_free,
    strata_process_group_last_error, strata_process_group_new,
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
