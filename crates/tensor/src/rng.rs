//! libtorch's default generator is global to the process; [`seeded`] reseeds it and runs a
//! closure while holding a lock, so concurrent strata work (tests, parallel runs in one
//! process) cannot interleave draws.

use std::sync::Mutex;

/// Serialises every seeded section.
static SEEDED: Mutex<()> = Mutex::new(());

/// Seeds libtorch's generators with `seed` and runs `f` while no other seeded section runs.
pub fn seeded<T>(seed: u64, f: impl FnOnce() -> T) -> T {
    let _guard = SEEDED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    tch::manual_seed(seed as i64);
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn the_same_seed_gives_the_same_draws_even_under_concurrency() {
        let draw = || seeded(42, || Tensor::randn([64], (Kind::Float, Device::Cpu)));
        let reference = draw();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..20).all(|_| {
                        let again = seeded(42, || Tensor::randn([64], (Kind::Float, Device::Cpu)));
                        let other = seeded(7, || Tensor::randn([64], (Kind::Float, Device::Cpu)));
                        again.sum(Kind::Double).double_value(&[])
                            != other.sum(Kind::Double).double_value(&[])
                    })
                })
            })
            .collect();
        for h in handles {
            assert!(h.join().unwrap());
        }
        assert!(draw().equal(&reference));
    }
}
