//! Compiles every `bench/ebpf/*.bpf.c` (the baselines' and the traffic
//! programs) with clang into `$OUT_DIR/<name>.bpf.o`, as `router/build.rs`
//! does for the router's program. `ebpf/` (the router's canonical wire
//! headers) is on the include path.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dir = manifest.join("ebpf");
    println!("cargo:rerun-if-changed={}", dir.display());
    println!("cargo:rerun-if-env-changed=CLANG");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "aarch64",
        _ => "x86_64",
    };
    let wire = manifest.join("..").join("ebpf");
    println!("cargo:rerun-if-changed={}", wire.display());
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("bench/ebpf exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_str().is_some_and(|s| s.ends_with(".bpf.c")))
        .collect();
    sources.sort();
    for source in sources {
        println!("cargo:rerun-if-changed={}", source.display());
        let stem = source
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".c"))
            .expect("a .bpf.c file name");
        compile(&clang, arch, &wire, &source, &out.join(format!("{stem}.o")));
    }
}

fn compile(
    clang: &str,
    arch: &str,
    wire: &std::path::Path,
    source: &std::path::Path,
    object: &std::path::Path,
) {
    let result = Command::new(clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I/usr/include/{arch}-linux-gnu"))
        .arg("-I")
        .arg(wire)
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(object)
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
