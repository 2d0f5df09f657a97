//! End-to-end `ingest` time on SynthRad (generation, tokenizer training, encoding, writing the
//! artifact and the preview) for the `ci` and `demo` presets, 2 threads.
//! Run with `cargo bench -p umdflow-data --bench ingest`.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use umdflow_data::IngestKind;
use umdflow_stages::{NoProgress, Params, StageContext, StageDecl, StageKind};

fn main() {
    let dir = std::env::temp_dir().join(format!("umdflow-ingest-bench-{}", std::process::id()));
    println!("{:>6} {:>8} {:>10}", "preset", "studies", "seconds");
    for preset in ["ci", "demo"] {
        let params: Params = serde_json::json!({"preset": preset, "seed": 7})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let decl = StageDecl {
            name: "bench",
            run: None,
            inputs: &[],
        };
        let Ok(resolved) = IngestKind.resolve_params(&decl, params) else {
            eprintln!("params did not resolve");
            return;
        };
        let out = dir.join(preset);
        let _ = std::fs::remove_dir_all(&out);
        if let Err(err) = std::fs::create_dir_all(&out) {
            eprintln!("{}: {err}", out.display());
            return;
        }
        let (log, cancel) = (dir.join(format!("{preset}.log")), AtomicBool::new(false));
        let ctx = StageContext {
            id: "bench",
            name: "bench",
            params: &resolved,
            run: None,
            inputs: &[],
            out_dir: &out,
            work_dir: &dir,
            log_path: &log,
            threads: 2,
            gpus: None,
            progress: &NoProgress,
            cancel: &cancel,
            resume: None,
        };
        let start = Instant::now();
        if let Err(err) = IngestKind.run(&ctx) {
            eprintln!("ingest failed: {err}");
            return;
        }
        println!(
            "{preset:>6} {:>8} {:>10.2}",
            resolved["count"],
            start.elapsed().as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
