//! Link options of the 64-bit Raspberry Pi binary (aarch64 Linux, glibc).
//!
//! The store binary has to stay under 6 MiB (BENCHMARKS.md, "Store binary size"). A PIE keeps
//! one 24-byte RELA entry per pointer in its read-only data, 232 KB of the aarch64 build;
//! `-z pack-relative-relocs` stores them as DT_RELR bitmaps instead, a few KB, and the binary
//! keeps its address randomization. Debian 12's binutils (2.40) cannot do that on aarch64
//! (DT_RELR there came with 2.41), so the binary is linked by the LLVM linker every Rust
//! toolchain ships (`rust-lld`, through its `gcc-ld/ld.lld` wrapper), still driven by the cross
//! gcc. lld also leaves out the zero padding bfd puts before the data segment.
//!
//! Run-time requirement: glibc 2.36 (the binary asks for `GLIBC_ABI_DT_RELR`), which the
//! supported systems have: Raspberry Pi OS Bookworm or newer (docs/operations.md §1). Other
//! targets link as before. A toolchain without `rust-lld` links the classic way, with a
//! warning: the same program, a larger file. STOREGW_CLASSIC_LINK=1 asks for that too.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=STOREGW_CLASSIC_LINK");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let pi64 = var("CARGO_CFG_TARGET_ARCH") == "aarch64"
        && var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu";
    if !pi64 || var("STOREGW_CLASSIC_LINK") == "1" {
        return;
    }
    match toolchain_lld(&var("RUSTC"), &var("HOST")) {
        Some(dir) => {
            println!("cargo:rustc-link-arg-bins=-B{}", dir.display());
            println!("cargo:rustc-link-arg-bins=-fuse-ld=lld");
            println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
        }
        None => println!(
            "cargo:warning=no rust-lld in this toolchain: the aarch64 binary is linked without \
             DT_RELR (about 230 KB larger)"
        ),
    }
}

/// The toolchain's `gcc-ld` directory (its `ld.lld` runs `rust-lld`), when it has one.
fn toolchain_lld(rustc: &str, host: &str) -> Option<PathBuf> {
    let rustc = if rustc.is_empty() { "rustc" } else { rustc };
    let out = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    let sysroot = String::from_utf8(out.stdout).ok()?;
    let dir = PathBuf::from(sysroot.trim())
        .join("lib/rustlib")
        .join(host)
        .join("bin/gcc-ld");
    dir.join("ld.lld").is_file().then_some(dir)
}
