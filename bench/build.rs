//! Compiles every `bench/ebpf/*.bpf.c` (the baselines' and the traffic
//! programs) with clang into `$OUT_DIR/<name>.bpf.o`, with the clang code
//! `router/build.rs` uses (`build-support/clang.rs`). `ebpf/` (the router's
//! canonical wire headers) is on the include path.

use std::env;
use std::path::PathBuf;

#[path = "../build-support/clang.rs"]
mod clang;

fn main() {
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dir = manifest.join("ebpf");
    println!("cargo:rerun-if-changed={}", dir.display());
    clang::rerun_if_changed();
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
        clang::compile_bpf(&source, &out.join(format!("{stem}.o")), &[&wire]);
    }
}
