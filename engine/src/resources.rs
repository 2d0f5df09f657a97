//! What each instance needs (`resources: {gpus, threads, memory, time}` in a stage, with the
//! kind's defaults), what the run has (`--threads`, `--gpus`), and the packing of ready instances
//! into it: no GPU id is given to two running instances and the threads never exceed the budget.
//!
//! Resources are not in any key: a run on GPU 1 and on GPU 3 is the same computation. The record
//! keeps the threads and device that produced a result (`record_device`).

use std::collections::VecDeque;

use serde::Deserialize;
use serde_json::Value;
use umdflow_stages::{Gpu, GpuDemand};

use crate::diagnostics::{Diagnostic, Invalid, Reporter};
use crate::expand::Expanded;
use crate::spec::Source;

/// The `resources:` block of a stage as written. Counts are whole numbers (serde refuses negative
/// or fractional ones, with the line); `memory` and `time` are checked by [`requests`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResources {
    #[serde(default)]
    pub gpus: Option<u32>,
    #[serde(default)]
    pub threads: Option<u32>,
    /// `16G`, `512M`, `2T` or a number of MiB.
    #[serde(default)]
    pub memory: Option<Value>,
    /// `D-HH:MM:SS`, `HH:MM:SS`, `MM:SS` or a number of minutes (Slurm's forms).
    #[serde(default)]
    pub time: Option<Value>,
}

/// What the run may use: `--threads` and, when it manages GPUs, `--gpus`.
#[derive(Debug, Clone)]
pub struct Budget {
    pub threads: usize,
    /// `None`: the run manages no GPUs (no `--gpus`); the kinds choose their device as they will.
    pub gpus: Option<Vec<Gpu>>,
}

/// What one instance needs while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub threads: usize,
    pub gpus: usize,
    /// A GPU it must have among them (`device: cuda:N`).
    pub pinned_gpu: Option<usize>,
    /// Recorded for executors that enforce them (Slurm); not enforced on one machine.
    pub memory_mib: Option<u64>,
    pub time_s: Option<u64>,
}

/// What a running instance holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub threads: usize,
    pub gpus: Vec<Gpu>,
}

/// `--gpus 4` (ids 0 to 3) or `--gpus 0,1,3`. Ids are CUDA device numbers as umdflow sees them:
/// when umdflow itself runs under `CUDA_VISIBLE_DEVICES` (`cuda_visible`), id N is that list's
/// N-th entry, and a command is shown the entry.
pub fn parse_gpus(text: &str, cuda_visible: Option<&str>) -> Result<Vec<Gpu>, String> {
    let text = text.trim();
    let number = |part: &str| {
        part.trim().parse::<usize>().map_err(|_| {
            format!(
                "--gpus {text}: expected a count such as `4` (ids 0 to 3) or ids such as `0,1,3`, \
                 got `{part}`"
            )
        })
    };
    let ids: Vec<usize> = if text.contains(',') {
        let ids = text.split(',').map(number).collect::<Result<Vec<_>, _>>()?;
        if let Some(twice) = ids
            .iter()
            .find(|id| ids.iter().filter(|x| x == id).count() > 1)
        {
            return Err(format!("--gpus {text}: GPU {twice} is listed twice"));
        }
        ids
    } else {
        (0..number(text)?).collect()
    };
    let entries: Option<Vec<&str>> = cuda_visible.map(|list| {
        list.split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect()
    });
    ids.into_iter()
        .map(|id| {
            let visible = match &entries {
                None => id.to_string(),
                Some(entries) => entries.get(id).map(|e| e.to_string()).ok_or_else(|| {
                    format!(
                        "--gpus {text}: umdflow runs with CUDA_VISIBLE_DEVICES={}, which shows {} \
                         GPU(s), so ids go from 0 to {}; GPU {id} does not exist",
                        cuda_visible.unwrap_or(""),
                        entries.len(),
                        entries.len() as isize - 1
                    )
                })?,
            };
            Ok(Gpu { id, visible })
        })
        .collect()
}

/// `16G` -> 16384 (MiB); a bare number is MiB.
fn parse_memory_mib(value: &Value) -> Option<u64> {
    if let Some(n) = value.as_u64() {
        return Some(n);
    }
    let text = value.as_str()?.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor = match unit.trim().to_ascii_uppercase().as_str() {
        "K" | "KB" => return Some(number.div_ceil(1024)),
        "" | "M" | "MB" => 1,
        "G" | "GB" => 1024,
        "T" | "TB" => 1024 * 1024,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// Slurm's time forms -> seconds: `90` (minutes), `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`,
/// `D-HH:MM:SS`.
fn parse_time_s(value: &Value) -> Option<u64> {
    if let Some(minutes) = value.as_u64() {
        return minutes.checked_mul(60);
    }
    let text = value.as_str()?.trim();
    let (days, rest) = match text.split_once('-') {
        Some((days, rest)) => (Some(days.parse::<u64>().ok()?), rest),
        None => (None, text),
    };
    let parts = rest
        .split(':')
        .map(|p| p.parse::<u64>().ok())
        .collect::<Option<Vec<u64>>>()?;
    let (h, m, s) = match (days.is_some(), parts.as_slice()) {
        (false, [m]) => (0, *m, 0),
        (false, [m, s]) => (0, *m, *s),
        (_, [h, m, s]) => (*h, *m, *s),
        (true, [h]) => (*h, 0, 0),
        (true, [h, m]) => (*h, *m, 0),
        _ => return None,
    };
    Some(((days.unwrap_or(0) * 24 + h) * 60 + m) * 60 + s)
}

fn gpu_list(gpus: &[Gpu]) -> String {
    let ids: Vec<String> = gpus.iter().map(|g| g.id.to_string()).collect();
    if ids.is_empty() {
        "none".into()
    } else {
        ids.join(",")
    }
}

/// Every instance's request, checked against the budget before anything runs: a stage asking
/// for more GPUs or threads than the run has, or for a GPU the run does not manage, is an error
/// naming the stage and the field (with its line), never a hang.
pub fn requests(
    source: &Source,
    expanded: &Expanded,
    budget: &Budget,
    default_threads: usize,
) -> Result<Vec<Request>, Invalid> {
    let mut reporter = source.reporter();
    if default_threads > budget.threads {
        reporter.found.push(Diagnostic {
            file: source.file.clone(),
            position: None,
            origin: Some(format!("--threads-per-stage {default_threads}")),
            message: format!(
                "each stage would take {default_threads} threads, but the run has {} (--threads)",
                budget.threads
            ),
        });
    }
    let mut requests = Vec::with_capacity(expanded.instances.len());
    for instance in &expanded.instances {
        let stage = &expanded.stages[instance.stage];
        let name = &stage.name;
        let raw = source.raw.stages.0[instance.stage]
            .1
            .resources
            .clone()
            .unwrap_or_default();
        let field = |key: &str| format!("stages.{name}.resources.{key}");

        let threads = raw.threads.map_or(default_threads, |t| t as usize);
        if raw.threads == Some(0) {
            reporter.at_value(
                &field("threads"),
                format!("stage `{name}`: `resources.threads` must be at least 1"),
            );
        } else if raw.threads.is_some() && threads > budget.threads {
            reporter.at_value(
                &field("threads"),
                format!(
                    "stage `{name}` asks for {threads} threads (`resources.threads`), but the run \
                     has {} (--threads)",
                    budget.threads
                ),
            );
        }

        let (gpus, pinned_gpu) = gpu_request(
            &mut reporter,
            name,
            &instance.id,
            stage.kind.gpu_demand(&instance.params),
            raw.gpus,
            budget.gpus.as_deref(),
        );

        let (memory_mib, time_s) = memory_and_time(&mut reporter, name, &raw);
        requests.push(Request {
            threads,
            gpus,
            pinned_gpu,
            memory_mib,
            time_s,
        });
    }
    reporter.finish()?;
    Ok(requests)
}

/// A stage's `resources.memory` in MiB and `resources.time` in seconds; a value that is neither a
/// size nor a duration is reported at its line. One place for both executors' reading of them.
pub(crate) fn memory_and_time(
    reporter: &mut Reporter<'_>,
    name: &str,
    raw: &RawResources,
) -> (Option<u64>, Option<u64>) {
    let field = |key: &str| format!("stages.{name}.resources.{key}");
    let memory_mib = raw.memory.as_ref().and_then(|value| {
        let parsed = parse_memory_mib(value);
        if parsed.is_none() {
            reporter.at_value(
                &field("memory"),
                format!(
                    "stage `{name}`: `resources.memory` must be a size such as `16G`, `512M` \
                     or a number of MiB, got {value}"
                ),
            );
        }
        parsed
    });
    let time_s = raw.time.as_ref().and_then(|value| {
        let parsed = parse_time_s(value);
        if parsed.is_none() {
            reporter.at_value(
                &field("time"),
                format!(
                    "stage `{name}`: `resources.time` must be minutes (`90`) or `HH:MM:SS` \
                     (also `D-HH:MM:SS`, `MM:SS`), got {value}"
                ),
            );
        }
        parsed
    });
    (memory_mib, time_s)
}

/// How many GPUs an instance gets and which one it is pinned to: `resources.gpus` if given, else
/// what its kind asks for ([`GpuDemand`]), checked against `--gpus` (`available`; `None` when the
/// run manages no GPUs).
fn gpu_request(
    reporter: &mut Reporter<'_>,
    name: &str,
    instance: &str,
    demand: GpuDemand,
    asked: Option<u32>,
    available: Option<&[Gpu]>,
) -> (usize, Option<usize>) {
    let field = format!("stages.{name}.resources.gpus");
    let Some(available) = available else {
        if let Some(n) = asked.filter(|&n| n > 0) {
            reporter.at_value(
                &field,
                format!(
                    "stage `{name}` asks for {n} GPU(s) (`resources.gpus`), but this run manages \
                     no GPUs: pass `--gpus N` or `--gpus 0,1`"
                ),
            );
        }
        return (0, None);
    };
    let wants = match demand {
        GpuDemand::None => 0,
        GpuDemand::Any => usize::from(!available.is_empty()),
        GpuDemand::Device(_) => 1,
    };
    let count = asked.map_or(wants, |n| n as usize);
    if asked.is_some() && count > available.len() {
        reporter.at_value(
            &field,
            format!(
                "stage `{name}` asks for {count} GPUs (`resources.gpus`), but the run has {} \
                 (--gpus: {})",
                available.len(),
                gpu_list(available)
            ),
        );
    }
    let GpuDemand::Device(id) = demand else {
        return (count, None);
    };
    if count == 0 {
        reporter.at_value(
            &field,
            format!(
                "stage `{name}` ({instance}) runs on `cuda:{id}` but asks for no GPU: give it \
                 `gpus: 1` or `device: cpu`"
            ),
        );
        return (0, None);
    }
    if !available.iter().any(|g| g.id == id) {
        reporter.at_value(
            &format!("stages.{name}.params.device"),
            format!(
                "stage `{name}` ({instance}) runs on `cuda:{id}`, which is not one of the run's \
                 GPUs (--gpus: {}); use `device: auto` to run on whichever is free",
                gpu_list(available)
            ),
        );
    }
    (count, Some(id))
}

/// The free part of the budget.
#[derive(Debug)]
struct Pool {
    threads_free: usize,
    /// `(gpu, busy)`; `None` when the run manages no GPUs.
    gpus: Option<Vec<(Gpu, bool)>>,
}

impl Pool {
    fn take(&mut self, request: &Request) -> Option<Allocation> {
        if request.threads > self.threads_free {
            return None;
        }
        let mut chosen: Vec<usize> = Vec::new();
        if let Some(gpus) = &self.gpus {
            if let Some(pin) = request.pinned_gpu {
                chosen.push(gpus.iter().position(|(g, busy)| g.id == pin && !busy)?);
            }
            // The lowest free ids, so that a run's assignment is easy to predict.
            for (slot, (_, busy)) in gpus.iter().enumerate() {
                if chosen.len() >= request.gpus {
                    break;
                }
                if !busy && !chosen.contains(&slot) {
                    chosen.push(slot);
                }
            }
            if chosen.len() < request.gpus {
                return None;
            }
        }
        self.threads_free -= request.threads;
        let gpus = match &mut self.gpus {
            Some(gpus) => chosen
                .into_iter()
                .map(|slot| {
                    gpus[slot].1 = true;
                    gpus[slot].0.clone()
                })
                .collect(),
            None => Vec::new(),
        };
        Some(Allocation {
            threads: request.threads,
            gpus,
        })
    }

    fn give_back(&mut self, allocation: Allocation) {
        self.threads_free += allocation.threads;
        if let Some(gpus) = &mut self.gpus {
            for gpu in allocation.gpus {
                if let Some(slot) = gpus.iter_mut().find(|(g, _)| *g == gpu) {
                    slot.1 = false;
                }
            }
        }
    }
}

/// Chooses which ready instance starts next. Policy: the oldest ready instance (the head of the
/// queue) starts as soon as it fits; while it does not, younger ones that fit may start in its
/// place, but at most `overtake_limit` times. After that nothing else starts until the head fits,
/// which it does once enough running instances finish, since every request fits the whole budget
/// ([`requests`]). So small instances fill idle GPUs and threads, and a big one waits a bounded time.
#[derive(Debug)]
pub struct Packer {
    pool: Pool,
    overtake_limit: usize,
    /// The instance at the head of the queue and how often younger ones started before it.
    head: Option<(usize, usize)>,
}

impl Packer {
    pub fn new(budget: &Budget, overtake_limit: usize) -> Packer {
        Packer {
            pool: Pool {
                threads_free: budget.threads,
                gpus: budget
                    .gpus
                    .as_ref()
                    .map(|gpus| gpus.iter().map(|g| (g.clone(), false)).collect()),
            },
            overtake_limit,
            head: None,
        }
    }

    /// Whether this run hands out GPUs (`StageContext::gpus` is `Some`).
    pub fn manages_gpus(&self) -> bool {
        self.pool.gpus.is_some()
    }

    /// Removes the next instance to start from `ready`, with what it holds; None when nothing
    /// may start now.
    pub fn next(
        &mut self,
        ready: &mut VecDeque<usize>,
        requests: &[Request],
    ) -> Option<(usize, Allocation)> {
        let &head = ready.front()?;
        if self.head.map(|(index, _)| index) != Some(head) {
            self.head = Some((head, 0));
        }
        if let Some(allocation) = self.pool.take(&requests[head]) {
            ready.pop_front();
            self.head = None;
            return Some((head, allocation));
        }
        let (_, overtaken) = self.head.as_mut()?;
        if *overtaken >= self.overtake_limit {
            return None;
        }
        for position in 1..ready.len() {
            let index = ready[position];
            if let Some(allocation) = self.pool.take(&requests[index]) {
                *overtaken += 1;
                ready.remove(position);
                return Some((index, allocation));
            }
        }
        None
    }

    /// A running instance finished: what it held is free again.
    pub fn release(&mut self, allocation: Allocation) {
        self.pool.give_back(allocation);
    }
}

/// The device a record keeps: the GPUs the instance was given (`cuda:1`, `cuda:0,1`), unless the
/// stage reported running elsewhere (an ML kind's `device` metric, e.g. `cpu`); else what the
/// stage reported, if anything.
pub fn record_device(reported: Option<String>, gpus: &[Gpu]) -> Option<String> {
    match reported {
        Some(device) if device != "cuda" => Some(device),
        _ if !gpus.is_empty() => Some(format!("cuda:{}", gpu_list(gpus))),
        reported => reported,
    }
}

/// A running instance's label in the progress display: `train[seed=1] on GPU 1`.
pub fn progress_label(id: &str, gpus: &[Gpu]) -> String {
    match gpus {
        [] => id.to_string(),
        [one] => format!("{id} on GPU {}", one.id),
        many => format!("{id} on GPUs {}", gpu_list(many)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpus(ids: &[usize]) -> Option<Vec<Gpu>> {
        Some(
            ids.iter()
                .map(|&id| Gpu {
                    id,
                    visible: id.to_string(),
                })
                .collect(),
        )
    }

    fn request(threads: usize, gpus: usize) -> Request {
        Request {
            threads,
            gpus,
            pinned_gpu: None,
            memory_mib: None,
            time_s: None,
        }
    }

    #[test]
    fn gpus_parse_as_a_count_or_ids_and_map_through_cuda_visible_devices() {
        let ids = |g: Vec<Gpu>| g.iter().map(|g| g.id).collect::<Vec<_>>();
        assert_eq!(ids(parse_gpus("4", None).unwrap()), [0, 1, 2, 3]);
        assert_eq!(ids(parse_gpus("0,1,3", None).unwrap()), [0, 1, 3]);
        assert!(parse_gpus("0", None).unwrap().is_empty());
        let mapped = parse_gpus("2", Some("5,7")).unwrap();
        assert_eq!(
            mapped
                .iter()
                .map(|g| g.visible.as_str())
                .collect::<Vec<_>>(),
            ["5", "7"]
        );
        let err = parse_gpus("0,2", Some("5,7")).unwrap_err();
        assert!(err.contains("GPU 2 does not exist"), "{err}");
        assert!(parse_gpus("1,1", None).unwrap_err().contains("twice"));
        assert!(
            parse_gpus("two", None)
                .unwrap_err()
                .contains("expected a count")
        );
        assert!(parse_gpus("0,", None).is_err());
    }

    #[test]
    fn memory_and_time_take_slurms_forms() {
        assert_eq!(parse_memory_mib(&Value::from("16G")), Some(16 * 1024));
        assert_eq!(parse_memory_mib(&Value::from("512M")), Some(512));
        assert_eq!(parse_memory_mib(&Value::from(2048)), Some(2048));
        assert_eq!(parse_memory_mib(&Value::from("2048")), Some(2048));
        assert_eq!(parse_memory_mib(&Value::from("16GB")), Some(16 * 1024));
        assert_eq!(parse_memory_mib(&Value::from("lots")), None);
        assert_eq!(parse_memory_mib(&Value::from("16X")), None);
        assert_eq!(parse_time_s(&Value::from(90)), Some(5400));
        assert_eq!(parse_time_s(&Value::from("1:30:00")), Some(5400));
        assert_eq!(
            parse_time_s(&Value::from("2-00:00:01")),
            Some(2 * 86400 + 1)
        );
        assert_eq!(parse_time_s(&Value::from("10:00")), Some(600));
        assert_eq!(parse_time_s(&Value::from("soon")), None);
    }

    #[test]
    fn no_gpu_goes_to_two_running_instances_and_threads_stay_in_budget() {
        let budget = Budget {
            threads: 3,
            gpus: gpus(&[0, 1]),
        };
        let mut packer = Packer::new(&budget, 0);
        let requests = vec![request(1, 1); 4];
        let mut ready: VecDeque<usize> = (0..4).collect();
        let (a, first) = packer.next(&mut ready, &requests).unwrap();
        let (b, second) = packer.next(&mut ready, &requests).unwrap();
        assert_eq!((a, b), (0, 1));
        assert_eq!(first.gpus[0].id, 0);
        assert_eq!(second.gpus[0].id, 1);
        // Both GPUs busy (a thread is still free): nothing else starts.
        assert_eq!(packer.next(&mut ready, &requests), None);
        packer.release(first);
        let (c, third) = packer.next(&mut ready, &requests).unwrap();
        assert_eq!((c, third.gpus[0].id), (2, 0));

        // Threads alone: two 2-thread instances never run together in 3 threads.
        let mut packer = Packer::new(
            &Budget {
                threads: 3,
                gpus: None,
            },
            0,
        );
        let requests = vec![request(2, 0); 2];
        let mut ready: VecDeque<usize> = (0..2).collect();
        let (_, held) = packer.next(&mut ready, &requests).unwrap();
        assert!(held.gpus.is_empty());
        assert_eq!(packer.next(&mut ready, &requests), None);
        packer.release(held);
        assert!(packer.next(&mut ready, &requests).is_some());
    }

    #[test]
    fn a_pinned_instance_gets_its_gpu_or_waits() {
        let budget = Budget {
            threads: 8,
            gpus: gpus(&[0, 1]),
        };
        let mut packer = Packer::new(&budget, 8);
        let pinned = Request {
            pinned_gpu: Some(1),
            ..request(1, 1)
        };
        let requests = vec![pinned.clone(), pinned];
        let mut ready: VecDeque<usize> = (0..2).collect();
        let (_, held) = packer.next(&mut ready, &requests).unwrap();
        assert_eq!(held.gpus[0].id, 1);
        // GPU 0 is free, but the second wants GPU 1.
        assert_eq!(packer.next(&mut ready, &requests), None);
        packer.release(held);
        assert_eq!(packer.next(&mut ready, &requests).unwrap().1.gpus[0].id, 1);
    }

    #[test]
    fn a_big_instance_is_overtaken_a_bounded_number_of_times() {
        // 2 threads; the head needs both, a stream of 1-thread instances follows it.
        let budget = Budget {
            threads: 2,
            gpus: None,
        };
        let limit = 2;
        let mut packer = Packer::new(&budget, limit);
        let mut requests = vec![request(1, 0), request(2, 0)];
        requests.extend(vec![request(1, 0); 10]);
        let mut ready: VecDeque<usize> = (0..12).collect();
        // Instance 0 runs; the big one (1) is now the head and cannot fit.
        let (first, mut running) = packer.next(&mut ready, &requests).unwrap();
        assert_eq!(first, 0);
        let mut overtakers = 0;
        loop {
            match packer.next(&mut ready, &requests) {
                Some((1, _)) => break,
                Some((_, held)) => {
                    overtakers += 1;
                    // Finishing releases one thread at a time, so there is always room for a
                    // small one while the big one never fits unless the packer holds back.
                    packer.release(std::mem::replace(&mut running, held));
                }
                None => {
                    packer.release(running.clone());
                    running.threads = 0;
                    running.gpus.clear();
                }
            }
            assert!(overtakers <= limit, "the big instance starved");
        }
        assert_eq!(overtakers, limit);
    }

    /// A kind with a `device` param, as the ML kinds have.
    struct Trains;

    impl umdflow_stages::StageKind for Trains {
        fn name(&self) -> &'static str {
            "trains"
        }
        fn version(&self) -> u32 {
            1
        }
        fn summary(&self) -> &'static str {
            "test kind"
        }
        fn resolve_params(
            &self,
            _decl: &umdflow_stages::StageDecl<'_>,
            params: umdflow_stages::Params,
        ) -> Result<umdflow_stages::Params, Vec<umdflow_stages::Problem>> {
            Ok(params)
        }
        fn default_params(&self) -> Result<umdflow_stages::Params, Vec<umdflow_stages::Problem>> {
            Ok(Default::default())
        }
        fn run(
            &self,
            _ctx: &umdflow_stages::StageContext<'_>,
        ) -> Result<(), umdflow_stages::StageError> {
            Ok(())
        }
    }

    fn plan(yaml: &str, budget: &Budget) -> Result<Vec<Request>, String> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.yaml");
        std::fs::write(&file, yaml).unwrap();
        let registry = crate::registry::Registry::new(vec![
            std::sync::Arc::new(Trains),
            std::sync::Arc::new(umdflow_stages::CmdKind),
        ]);
        let source = crate::spec::load(&file, &[]).map_err(|e| e.to_string())?;
        let expanded = crate::expand::expand(&source, &registry, 100).map_err(|e| e.to_string())?;
        requests(&source, &expanded, budget, 1).map_err(|e| e.to_string())
    }

    #[test]
    fn a_kinds_device_param_decides_its_default_gpus() {
        let yaml = "name: p
stages:
  auto: {kind: trains, params: {device: auto}}
  cpu: {kind: trains, params: {device: cpu}}
  pinned: {kind: trains, params: {device: 'cuda:1'}}
  command: {kind: cmd, run: 'true', params: {device: auto}}
  asked: {kind: cmd, run: 'true', resources: {gpus: 2, threads: 3, memory: 4G, time: '1:00:00'}}
";
        let budget = Budget {
            threads: 4,
            gpus: gpus(&[0, 1]),
        };
        let found = plan(yaml, &budget).unwrap();
        let gpus_of: Vec<usize> = found.iter().map(|r| r.gpus).collect();
        assert_eq!(gpus_of, [1, 0, 1, 0, 2]);
        assert_eq!(found[2].pinned_gpu, Some(1));
        assert_eq!(found[4].threads, 3);
        assert_eq!(found[4].memory_mib, Some(4096));
        assert_eq!(found[4].time_s, Some(3600));
        // A run that manages no GPUs gives none by default; `auto` then is the kind's own choice.
        let unmanaged = Budget {
            threads: 4,
            gpus: None,
        };
        let yaml_without_asked = yaml.lines().take(6).collect::<Vec<_>>().join("\n");
        let found = plan(&yaml_without_asked, &unmanaged).unwrap();
        assert!(found.iter().all(|r| r.gpus == 0 && r.pinned_gpu.is_none()));
        // `--gpus 0`: every GPU hidden; `auto` runs on the CPU, `cuda:1` cannot.
        let none = Budget {
            threads: 4,
            gpus: gpus(&[]),
        };
        let err = plan(&yaml_without_asked, &none).unwrap_err();
        assert!(
            err.contains("p.yaml:5:") && err.contains("`cuda:1`"),
            "{err}"
        );
        assert!(err.lines().count() == 1, "{err}");
    }

    #[test]
    fn requests_beyond_the_budget_name_the_stage_field_and_line() {
        let budget = Budget {
            threads: 2,
            gpus: gpus(&[0, 1]),
        };
        let err = plan(
            "name: p\nstages:\n  big:\n    kind: cmd\n    run: 'true'\n    resources: {gpus: 3, threads: 4}\n",
            &budget,
        )
        .unwrap_err();
        assert!(
            err.contains("p.yaml:6:")
                && err.contains("`big` asks for 3 GPUs")
                && err.contains("has 2"),
            "{err}"
        );
        assert!(err.contains("`big` asks for 4 threads"), "{err}");
        let err = plan(
            "name: p\nstages:\n  a: {kind: cmd, run: 'true', resources: {threads: 0}}\n",
            &budget,
        )
        .unwrap_err();
        assert!(
            err.contains("p.yaml:3:") && err.contains("at least 1"),
            "{err}"
        );
    }

    #[test]
    fn the_record_names_the_gpu_unless_the_stage_ran_elsewhere() {
        let one = gpus(&[1]).unwrap();
        assert_eq!(record_device(None, &one).as_deref(), Some("cuda:1"));
        assert_eq!(
            record_device(Some("cuda".into()), &one).as_deref(),
            Some("cuda:1")
        );
        assert_eq!(
            record_device(Some("cpu".into()), &one).as_deref(),
            Some("cpu")
        );
        assert_eq!(record_device(None, &[]), None);
        assert_eq!(
            record_device(Some("cuda".into()), &[]).as_deref(),
            Some("cuda")
        );
        assert_eq!(progress_label("t[seed=1]", &one), "t[seed=1] on GPU 1");
        assert_eq!(progress_label("t", &[]), "t");
    }
}
