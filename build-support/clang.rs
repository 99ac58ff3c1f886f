//! Compiling C BPF programs with clang, shared by `router/build.rs` and
//! `bench/build.rs` (each includes this file with
//! `#[path = "../build-support/clang.rs"] mod clang;`).

use std::env;
use std::path::Path;
use std::process::Command;

/// Tells cargo what a build with this file depends on besides the sources:
/// this file itself and the `CLANG` variable.
pub fn rerun_if_changed() {
    println!(
        "cargo:rerun-if-changed={}",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../build-support/clang.rs")
            .display()
    );
    println!("cargo:rerun-if-env-changed=CLANG");
}

/// Compiles `source` into the BPF object `object`
/// (`clang -O2 -g -target bpf -Wall -Werror`), with the target's
/// multiarch headers and `includes` on the include path. `$CLANG` names
/// the compiler (default `clang`). Panics, naming the fix, if that fails.
pub fn compile_bpf(source: &Path, object: &Path, includes: &[&Path]) {
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "aarch64",
        _ => "x86_64",
    };
    let mut command = Command::new(&clang);
    command
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I/usr/include/{arch}-linux-gnu"));
    for include in includes {
        command.arg("-I").arg(include);
    }
    let result = command.arg("-c").arg(source).arg("-o").arg(object).status();
    match result {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("{clang} failed ({status}) compiling {}", source.display()),
        Err(e) => panic!(
            "cannot run `{clang}` ({e}): install the BPF toolchain with \
             `apt-get install clang llvm libbpf-dev` (or run `make deps`)"
        ),
    }
}
