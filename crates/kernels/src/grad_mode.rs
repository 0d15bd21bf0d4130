//! Whether libtorch's autograd records on this thread, read through torch-sys (no C++ of ours).

/// True when libtorch's autograd records operations on this thread (not inside `no_grad`).
pub fn grad_mode_enabled() -> bool {
    // SAFETY: sets libtorch's thread-local grad mode and at once restores the value it had;
    // nothing runs in between.
    unsafe {
        let previous = torch_sys::at_grad_set_enabled(1);
        torch_sys::at_grad_set_enabled(previous);
        previous != 0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn it_reads_no_grad_and_leaves_the_mode_as_it_was() {
        assert!(super::grad_mode_enabled());
        tch::no_grad(|| {
            assert!(!super::grad_mode_enabled());
            assert!(!super::grad_mode_enabled());
        });
        assert!(super::grad_mode_enabled());
    }
}
