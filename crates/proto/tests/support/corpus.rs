//! The committed seed corpora of the fuzz targets (`fuzz/corpus/TARGET`), and proptest
//! mutations of them, for the tests that run the fuzz targets' checks under `cargo test`.
//! Shared by the test crates of the protocol and the server (included with `#[path]`).

use std::path::PathBuf;

use proptest::prelude::*;
use proptest::sample::Index;

fn corpus_dir(target: &str) -> PathBuf {
    // Both crates that include this file live two levels below the repository root.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// Every file of `target`'s committed corpus, with its name, sorted by name.
pub fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let name = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            let data = seed(target, &name);
            (name, data)
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

/// The file `name` of `target`'s committed corpus.
pub fn seed(target: &str, name: &str) -> Vec<u8> {
    let path = corpus_dir(target).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `check` on every seed of `target`, naming the seed that fails.
pub fn check_every_seed(target: &str, check: impl Fn(&[u8])) {
    for (name, data) in seeds(target) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&data)));
        assert!(
            outcome.is_ok(),
            "fuzz/corpus/{target}/{name} fails the check"
        );
    }
}

/// One seed of `target` with up to 16 single-byte edits (overwrite, insert, delete) and
/// possibly cut short: what a fuzzer's first mutations look like, so that the checks run
/// near valid inputs and not only on noise.
pub fn mutated(target: &str) -> impl Strategy<Value = Vec<u8>> {
    let seeds: Vec<Vec<u8>> = seeds(target).into_iter().map(|(_, data)| data).collect();
    (
        proptest::sample::select(seeds),
        proptest::collection::vec((any::<Index>(), 0u8..3, any::<u8>()), 0..16),
        proptest::option::of(any::<Index>()),
    )
        .prop_map(|(mut data, edits, cut)| {
            for (at, kind, byte) in edits {
                let at = at.index(data.len() + 1);
                match kind {
                    0 if at < data.len() => data[at] = byte,
                    1 => data.insert(at, byte),
                    _ if at < data.len() => {
                        data.remove(at);
                    }
                    _ => data.push(byte),
                }
            }
            if let Some(cut) = cut {
                data.truncate(cut.index(data.len() + 1));
            }
            data
        })
}
