//! Every input kept under fuzz/regressions/<target>/ (crashes the fuzzers found, see
//! docs/fuzzing.md) and fuzz/seeds/<target>/ goes through the same entry point the fuzz target
//! runs, on the stable toolchain, in every test run.

#![cfg(feature = "fuzzing")]

use std::path::Path;

#[test]
fn fuzz_inputs_replay_without_panicking() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut total = 0;
    for (name, run) in storegw::fuzzing::TARGETS {
        for dir in ["regressions", "seeds"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let data = std::fs::read(&path).expect("readable fuzz input");
                let r = std::panic::catch_unwind(|| run(&data));
                assert!(r.is_ok(), "{name} panicked on {}", path.display());
                total += 1;
            }
        }
    }
    println!("replayed {total} kept fuzz inputs");
    assert!(total > 0, "fuzz/seeds holds inputs");
}
