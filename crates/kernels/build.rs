//! Compiles the C++ autograd functions of the layer stack (`csrc/stack_autograd.cpp`), autocast
//! regions (`csrc/autocast.cpp`), strata's own random-number generators
//! (`csrc/generator.cpp`), the accelerator memory statistics (`csrc/device_memory.cpp`) and the
//! c10d process group (`csrc/process_group.cpp`, with the declarations in `csrc/gloo_decl`;
//! `csrc/shim_error.h` is the exception capture the shims share) against the libtorch that
//! torch-sys found, when the `cpp` feature is on (the default).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc/stack_autograd.cpp");
    println!("cargo:rerun-if-changed=csrc/device_memory.cpp");
    println!("cargo:rerun-if-changed=csrc/process_group.cpp");
    println!("cargo:rerun-if-changed=csrc/autocast.cpp");
    println!("cargo:rerun-if-changed=csrc/generator.cpp");
    println!("cargo:rerun-if-changed=csrc/shim_error.h");
    println!("cargo:rerun-if-changed=csrc/gloo_decl");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    if std::env::var_os("CARGO_FEATURE_CPP").is_none() {
        // Built without the `cpp` feature: the Rust stand-ins replace the shims.
        return;
    }
    let lib = PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB")
            .expect("torch-sys reports the libtorch lib folder (DEP_TCH_LIBTORCH_LIB)"),
    );
    let include = lib
        .parent()
        .expect("the libtorch lib folder has a parent")
        .join("include");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    cc::Build::new()
        .cpp(true)
        .file("csrc/stack_autograd.cpp")
        .file("csrc/device_memory.cpp")
        .file("csrc/process_group.cpp")
        .file("csrc/autocast.cpp")
        .file("csrc/generator.cpp")
        .include("csrc/gloo_decl")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .flag("-DUSE_C10D_GLOO")
        .flag_if_supported("-Wno-unused-parameter")
        .warnings(false)
        .compile("strata_stack_autograd");
}
