//! Records the versions of the dependencies that decide results (read from Cargo.lock) and of the
//! compiler, so that `umdflow run` can write them into the lock file a reviewer diffs.

use std::path::Path;

const TRACKED: [&str; 8] = [
    "blake3",
    "candle-core",
    "candle-nn",
    "redb",
    "safetensors",
    "tokenizers",
    "yaml_serde",
    "image",
];

fn main() {
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    let mut found = Vec::new();
    let mut name = None;
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("name = ") {
            name = Some(value.trim_matches('"').to_string());
        } else if let (Some(value), Some(current)) = (line.strip_prefix("version = "), name.take())
            && TRACKED.contains(&current.as_str())
        {
            found.push(format!("{current}={}", value.trim_matches('"')));
        }
    }
    found.sort();
    found.dedup();
    println!("cargo:rustc-env=UMDFLOW_DEP_VERSIONS={}", found.join(";"));
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!("cargo:rustc-env=UMDFLOW_RUSTC_VERSION={version}");
}
