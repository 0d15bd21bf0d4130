//! Bakes the libtorch lib folder found by torch-sys into the crate, so that CUDA support
//! (libtorch_cuda.so) can be loaded at run time by absolute path.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-env=STRATA_TORCH_LIB={dir}");
    }
}
