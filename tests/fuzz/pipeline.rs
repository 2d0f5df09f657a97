//! A mutation fuzzer for the pipeline parser and sweep expansion, run by `cargo test` with a
//! fixed seed and a bounded number of cases. Starting from the corpus in `tests/fuzz/corpus/`
//! and the shipped pipelines, each case applies a few random mutations (byte flips, YAML tokens,
//! hostile snippets, deleted, duplicated and spliced lines) and checks that loading and expanding
//! the file never panics, never takes long, and that every error names a line and column (or the
//! `--set`/`--force` it came from).
//!
//! `UMDFLOW_FUZZ_CASES=100000 cargo test -p umdflow --test fuzz` runs a longer campaign;
//! `UMDFLOW_FUZZ_SEED` picks another sequence. A failing case is written to
//! `target/fuzz-failures/` and printed; add it to the corpus once fixed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use umdflow::registry;
use umdflow_engine::expand::expand;
use umdflow_engine::registry::Registry;
use umdflow_engine::spec::load;
// SplitMix64: small, seedable, and the same on every machine.
use umdflow_model::rng::SplitMix64 as Rng;

/// Fragments that reach the interesting paths: structure, anchors, references, designs, and the
/// hostile values of issue 11.
const TOKENS: &[&str] = &[
    "[",
    "]",
    "{",
    "}",
    ":",
    ": ",
    "- ",
    ",",
    "\n",
    "  ",
    "    ",
    "'",
    "\"",
    "#",
    "&a ",
    "*a",
    "${seed}",
    "${ratio}",
    "${arm.name}",
    "${",
    "---\n",
    "...\n",
    "? ",
    "!!str ",
    "|\n",
    ">\n",
    "\t",
    "\u{feff}",
    "\u{0}",
    "seeds: 1000000000\n",
    "seeds: [0, 0]\n",
    "seeds: 0\n",
    "design: zip\n",
    "design: one-at-a-time\n",
    "baseline: {ratio: 0.6}\n",
    "presets: [x]\n",
    "presets:\n  ci: 3\n",
    "sweep:\n  ratio: []\n",
    "inputs: [nope]\n",
    "kind: nope\n",
    "kind: cmd\n",
    "run: ''\n",
    "params: 5\n",
    "report: {stage: nope}\n",
    "stages: {}\n",
    "name: [1]\n",
    "a: &b [*b]\n",
    "1e999",
    "-0",
    ".nan",
    "~",
    "null",
    "true",
    "0x1F",
    "99999999999999999999999",
];

fn mutate(rng: &mut Rng, text: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = text.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(7) {
            0 if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                bytes[i] = rng.next_u64() as u8;
            }
            1 => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                bytes.splice(at..at, token.iter().copied());
            }
            2 => {
                let end = (at + rng.below(40)).min(bytes.len());
                bytes.drain(at..end);
            }
            3 | 4 => {
                let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
                let source = if rng.below(2) == 0 {
                    lines.clone()
                } else {
                    corpus[rng.below(corpus.len())]
                        .split(|&b| b == b'\n')
                        .collect()
                };
                let line = source[rng.below(source.len())].to_vec();
                let mut lines: Vec<Vec<u8>> = lines.into_iter().map(<[u8]>::to_vec).collect();
                let position = rng.below(lines.len() + 1);
                lines.insert(position, line);
                bytes = lines.join(&b'\n');
            }
            5 => {
                let mut lines: Vec<Vec<u8>> =
                    bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
                let (a, b) = (rng.below(lines.len()), rng.below(lines.len()));
                lines.swap(a, b);
                bytes = lines.join(&b'\n');
            }
            _ => {
                // Re-indent a line: the most common hand-editing slip.
                let mut lines: Vec<Vec<u8>> =
                    bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
                let i = rng.below(lines.len());
                if rng.below(2) == 0 {
                    lines[i].splice(0..0, *b"  ");
                } else if lines[i].starts_with(b" ") {
                    lines[i].remove(0);
                }
                bytes = lines.join(&b'\n');
            }
        }
    }
    bytes
}

fn corpus() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in [
        "tests/fuzz/corpus",
        "pipelines",
        "pipelines/effects",
        "pipelines/example",
    ] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 8, "the corpus is missing: {files:?}");
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What is wrong with how one file was handled, if anything.
fn check(file: &Path, registry: &Registry) -> Option<String> {
    let started = Instant::now();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        load(file, &[]).and_then(|source| expand(&source, registry, 10_000).map(|_| ()))
    }));
    let took = started.elapsed();
    if took > Duration::from_secs(1) {
        return Some(format!("took {took:?}"));
    }
    match outcome {
        Err(_) => Some("panicked".into()),
        Ok(Ok(())) => None,
        Ok(Err(invalid)) => invalid
            .0
            .iter()
            .find(|d| d.position.is_none() && d.origin.is_none())
            .map(|d| format!("an error without a location: {}", d.message)),
    }
}

#[test]
fn mutated_pipelines_never_panic_and_every_error_has_a_location() {
    let cases = env_number("UMDFLOW_FUZZ_CASES", 3_000);
    let mut rng = Rng::new(env_number("UMDFLOW_FUZZ_SEED", 11));
    let budget = Duration::from_secs(env_number("UMDFLOW_FUZZ_SECONDS", 30));
    let corpus = corpus();
    let registry = registry::builtin();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    let started = Instant::now();
    let (mut valid, mut invalid, mut run) = (0, 0, 0);
    for case in 0..cases {
        if started.elapsed() > budget {
            break;
        }
        let seed = &corpus[rng.below(corpus.len())];
        let text = mutate(&mut rng, seed, &corpus);
        std::fs::write(&file, &text).unwrap();
        run += 1;
        if let Some(problem) = check(&file, &registry) {
            let failures = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
            std::fs::create_dir_all(&failures).unwrap();
            let saved = failures.join(format!("case-{case}.yaml"));
            std::fs::write(&saved, &text).unwrap();
            panic!(
                "case {case} ({}): {problem}\n---\n{}",
                saved.display(),
                String::from_utf8_lossy(&text)
            );
        }
        match load(&file, &[]) {
            Ok(_) => valid += 1,
            Err(_) => invalid += 1,
        }
    }
    eprintln!(
        "{run} cases in {:?}: {valid} parsed, {invalid} refused",
        started.elapsed()
    );
    assert!(run >= 200.min(cases), "only {run} cases ran");
    assert!(
        valid > 0 && invalid > 0,
        "{valid} parsed, {invalid} refused"
    );
}

/// The corpus itself expands (mutations start from files that reach expansion).
#[test]
fn the_corpus_expands() {
    let registry = registry::builtin();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz/corpus");
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let source = load(&path, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        expand(&source, &registry, 10_000).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}
