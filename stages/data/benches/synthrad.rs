//! SynthRad throughput: studies per second (image + paired text + questions) at each preset
//! size, on 1 and 2 threads. Run with `cargo bench -p umdflow-data --bench synthrad`.
//!
//! Besides wall-clock rates it prints the CPU time per study (from /proc/self/stat on Linux),
//! which stays meaningful on a loaded machine: `2 / cpu_seconds_per_study` is the rate two
//! otherwise idle cores reach, since studies are generated independently.

use std::time::Instant;

use umdflow_data::synthrad::{Domain, SynthConfig, TextKind, generate_range};

/// User + system CPU seconds of this process so far (Linux), or `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit(')').next()?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn measure(size: usize, threads: usize, count: usize, text: TextKind) -> (f64, Option<f64>) {
    let mut config = SynthConfig::new(7, Domain::Source, size);
    config.text = text;
    let mut images = Vec::with_capacity(count * size * size);
    generate_range(&config, 0, count.min(500), threads, &mut images);
    let (mut best, mut cpu_per_study) = (f64::INFINITY, None);
    for pass in 0..3 {
        images.clear();
        let cpu_start = cpu_seconds();
        let start = Instant::now();
        let studies = generate_range(&config, (pass * count) as u64, count, threads, &mut images);
        let seconds = start.elapsed().as_secs_f64();
        assert_eq!(studies.len(), count);
        if seconds < best {
            best = seconds;
            cpu_per_study = cpu_start
                .zip(cpu_seconds())
                .map(|(a, b)| (b - a) / count as f64);
        }
    }
    (count as f64 / best, cpu_per_study)
}

fn main() {
    println!(
        "{:>6} {:>8} {:>8} {:>12} {:>16} {:>20}",
        "size", "threads", "text", "studies/s", "cpu us/study", "2 idle cores /s"
    );
    // `cargo bench -p umdflow-data --bench synthrad -- 64` measures one size only.
    let only: Option<usize> = std::env::args().skip(1).find_map(|a| a.parse().ok());
    for (size, count) in [(32, 20_000), (64, 10_000), (128, 3_000)] {
        if only.is_some_and(|o| o != size) {
            continue;
        }
        for threads in [1, 2] {
            for (text, name) in [(TextKind::Report, "report"), (TextKind::Caption, "caption")] {
                let (rate, cpu) = measure(size, threads, count, text);
                let (cpu_us, two_cores) = match cpu {
                    Some(c) if c > 0.0 => (format!("{:.0}", c * 1e6), format!("{:.0}", 2.0 / c)),
                    _ => ("n/a".into(), "n/a".into()),
                };
                println!(
                    "{size:>6} {threads:>8} {name:>8} {rate:>12.0} {cpu_us:>16} {two_cores:>20}"
                );
            }
        }
    }
}
