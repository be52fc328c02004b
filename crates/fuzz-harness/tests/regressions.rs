//! Every input a fuzz target ever crashed on, replayed through the same target body on stable:
//! `fuzz/regressions/<target>/<name>` (the raw input, as libFuzzer saved it). Add a crash by
//! copying its artifact there; this test fails until the bug is fixed.

use std::path::PathBuf;

fn regressions_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions")
}

#[test]
fn every_saved_crash_input_runs_clean() {
    let mut replayed = 0;
    for (target, run) in chronicle_fuzz_harness::TARGETS {
        let dir = regressions_dir().join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        paths.sort();
        for path in paths {
            let input = std::fs::read(&path).expect("regression input");
            eprintln!("replaying {}", path.display());
            run(&input);
            replayed += 1;
        }
    }
    assert!(
        replayed > 0,
        "no regression inputs found under {}",
        regressions_dir().display()
    );
}

#[test]
fn every_target_runs_its_seed_corpus() {
    // The committed seed corpora (fuzz/corpus/<target>) are the fuzzer's starting points; each
    // must run clean too, or a short CI run would stop at once on a known input.
    for (target, run) in chronicle_fuzz_harness::TARGETS {
        let dir = regressions_dir().join("../corpus").join(target);
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            eprintln!("running {}", entry.path().display());
            run(&std::fs::read(entry.path()).expect("corpus input"));
        }
    }
}
