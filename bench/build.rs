//! Compiles the baseline XDP program in `bench/ebpf/` with clang, as
//! `router/build.rs` does for the router's program.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let source = manifest.join("ebpf").join("redirect.bpf.c");
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-env-changed=CLANG");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "aarch64",
        _ => "x86_64",
    };
    let object = out.join("redirect.bpf.o");
    let result = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I/usr/include/{arch}-linux-gnu"))
        .arg("-c")
        .arg(&source)
        .arg("-o")
        .arg(&object)
        .status();
    match result {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("{clang} failed ({status}) compiling {}", source.display()),
        Err(e) => panic!(
            "cannot run `{clang}` ({e}): install the BPF toolchain with \
             `apt-get install clang llvm libbpf-dev` (or run `make deps`)"
        ),
    }
}
