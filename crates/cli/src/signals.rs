//! Stop requests: SIGINT (Ctrl-C), SIGTERM and SIGHUP (what schedulers and closing terminals
//! send) all ask a run to save a checkpoint and stop; the process then exits with 128 + the
//! signal's number (130, 143, 129).
//!
//! The signal handlers only wake a thread (signal-hook's self-pipe), and that thread only sets
//! the stop flag and logs: nothing exits the process from outside the main thread, so a second
//! signal while the checkpoint is being written is logged and ignored instead of tearing down
//! libtorch under the saving thread.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use signal_hook::low_level::signal_name;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The first stop signal received by this process (0 while none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// Installs the handlers and returns the stop flag they set: the first signal asks the run to
/// save a checkpoint and stop, later ones are ignored.
pub fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(signals) => signals,
        Err(err) => {
            tracing::warn!("could not install the signal handlers: {err}");
            return stop;
        }
    };
    let flag = stop.clone();
    let watcher = std::thread::Builder::new()
        .name("stop-signals".to_owned())
        .spawn(move || {
            for signal in signals.forever() {
                let first = RECEIVED
                    .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok();
                if first {
                    flag.store(true, Ordering::SeqCst);
                    tracing::warn!(
                        "{}: saving a checkpoint, then stopping (further signals are ignored; \
                         `kill -KILL {}` ends at once without saving)",
                        signal_name(signal).unwrap_or("signal"),
                        std::process::id()
                    );
                } else {
                    tracing::warn!(
                        "{}: already stopping; ignored",
                        signal_name(signal).unwrap_or("signal")
                    );
                }
            }
        });
    if let Err(err) = watcher {
        tracing::warn!("could not start the signal thread: {err}");
    }
    stop
}

/// The exit status for a process that received a stop signal: 128 + the first signal's
/// number, as a shell reports a process that signal ended.
pub fn exit_code() -> Option<u8> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        signal => u8::try_from(128 + signal).ok(),
    }
}
