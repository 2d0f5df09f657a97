//! The rayon pool a stage's training or tuning runs on: as many workers as the stage's thread
//! budget, whose idle workers keep yielding for a while before they sleep.
//!
//! Between two parallel regions of a training step (a matrix product, then a stretch of serial
//! work, then the next product) the second worker has nothing to do. With rayon-core's default it
//! sleeps after about 0.75 ms, its vCPU halts, and on a virtual machine with a busy host the halted
//! vCPU may be given to another guest: waking it then waits for the host, and the wait is steal
//! time. PyTorch's OpenMP threads spin through such gaps. `IDLE_YIELD_ROUNDS` keeps our workers
//! running through them too (docs/benchmarks.md, issue 13, "Session 10"; docs/decisions.md). Each
//! round is a `yield_now`, which gives the core to any other runnable thread first, and the pool
//! lives only as long as the stage's work.

/// How many times an idle worker of a stage's pool yields before it sleeps: about 15 ms on the
/// 2-core development VM, where one `yield_now` took 0.37 µs (rayon-core's default in this
/// workspace is 2000, upstream's 32; `third_party/rayon-core/PATCH.md`).
pub const IDLE_YIELD_ROUNDS: u32 = 40_000;

/// The builder of a stage's pool of `threads` workers (at least one).
pub fn stage_pool_builder(threads: usize) -> rayon::ThreadPoolBuilder {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .idle_yield_rounds(IDLE_YIELD_ROUNDS)
}

/// Starts a stage's pool of `threads` workers (at least one).
pub fn stage_pool(threads: usize) -> Result<rayon::ThreadPool, rayon::ThreadPoolBuildError> {
    stage_pool_builder(threads).build()
}

/// The idle spin: workers keep running for as many yield rounds as the builder says, then sleep.
/// A worker's state is read from /proc (`R` running or runnable, `S` asleep), so Linux only.
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    /// Builds a 2-worker pool from `builder`, runs one job on both workers, and returns the pool
    /// with the /proc stat path of each worker thread.
    fn started(builder: rayon::ThreadPoolBuilder) -> (rayon::ThreadPool, Vec<String>) {
        let paths = Arc::new(Mutex::new(Vec::new()));
        let recorded = paths.clone();
        let pool = builder
            .num_threads(2)
            .start_handler(move |_| {
                let task = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
                recorded
                    .lock()
                    .unwrap()
                    .push(format!("/proc/{}/stat", task.display()));
            })
            .build()
            .expect("a 2-worker pool");
        pool.broadcast(|_| ());
        let paths = paths.lock().unwrap().clone();
        assert_eq!(paths.len(), 2, "both workers ran their start handler");
        (pool, paths)
    }

    /// The scheduler state of a thread: the field after the command name in its stat file.
    fn state(stat_path: &str) -> char {
        let stat = std::fs::read_to_string(stat_path).expect("a worker's stat file");
        let (_, rest) = stat.rsplit_once(')').expect("stat has `(comm)`");
        rest.trim_start().chars().next().expect("a state field")
    }

    #[test]
    fn idle_workers_with_a_long_spin_keep_running() {
        // u32::MAX rounds of `yield_now` take far longer than this test: the workers cannot reach
        // their sleep, so they must be found running (or runnable) long after the job ended.
        let (pool, paths) = started(rayon::ThreadPoolBuilder::new().idle_yield_rounds(u32::MAX));
        std::thread::sleep(Duration::from_millis(300));
        for path in &paths {
            assert_eq!(state(path), 'R', "{path}: an idle worker still yielding");
        }
        drop(pool);
    }

    #[test]
    fn idle_workers_without_a_spin_sleep() {
        // The negative control: with no rounds the workers sleep as soon as they find no work.
        let (pool, paths) = started(rayon::ThreadPoolBuilder::new().idle_yield_rounds(0));
        let deadline = Instant::now() + Duration::from_secs(20);
        while paths.iter().any(|p| state(p) != 'S') {
            assert!(
                Instant::now() < deadline,
                "idle workers did not sleep within 20 s: {:?}",
                paths.iter().map(|p| state(p)).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(pool);
    }

    #[test]
    fn stage_pools_use_the_long_spin() {
        let builder = super::stage_pool_builder(3);
        let shown = format!("{builder:?}");
        assert!(
            shown.contains(&format!(
                "idle_yield_rounds: Some({})",
                super::IDLE_YIELD_ROUNDS
            )),
            "{shown}"
        );
        assert!(shown.contains("num_threads: 3"), "{shown}");
    }
}
