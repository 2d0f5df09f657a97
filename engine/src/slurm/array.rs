//! Job arrays: many ready instances of one stage go out as one `sbatch --array=0-(N-1)`, so that
//! 500 instances cost one submission instead of 500. Each task runs `umdflow worker
//! --instance-list FILE`, which picks line `$SLURM_ARRAY_TASK_ID` of the list. Tasks are jobs of
//! their own to Slurm (`123_4`): dependents wait with `afterok:123_4`, `scancel 123_4` cancels one,
//! and `squeue` lists each started task alone but a pending range as one line (`123_[5-499]`).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Tasks per array when `scontrol show config` cannot be read: Slurm's default `MaxArraySize` is
/// 1001 (indices 0-1000), so 1000 fit every cluster that kept the default.
pub const DEFAULT_MAX_ARRAY_SIZE: usize = 1000;

/// The task ids one `%i` of `squeue` stands for: `123_[0-4,6-9%4]` (a pending range, with a
/// throttle) is `123_0` ... `123_4`, `123_6` ... `123_9`; `123_4` and `123` are themselves. A range
/// that does not parse is kept as written (its jobs then look gone, never wrongly active).
pub fn expand_id(id: &str) -> Vec<String> {
    let Some((array, tasks)) = id.split_once('_') else {
        return vec![id.to_string()];
    };
    let Some(ranges) = tasks.strip_prefix('[').and_then(|t| t.strip_suffix(']')) else {
        return vec![id.to_string()];
    };
    // `%4` limits how many run at once; it names no task.
    let ranges = ranges.split('%').next().unwrap_or("");
    let mut ids = Vec::new();
    for range in ranges.split(',') {
        let (first, last) = range.split_once('-').unwrap_or((range, range));
        match (first.trim().parse::<u64>(), last.trim().parse::<u64>()) {
            (Ok(first), Ok(last)) if first <= last => {
                ids.extend((first..=last).map(|task| format!("{array}_{task}")));
            }
            _ => return vec![id.to_string()],
        }
    }
    ids
}

/// What to name in `squeue --jobs` to see a job: an array task is seen through its array (one
/// name lists every task of it).
pub fn queried_id(id: &str) -> &str {
    id.split_once('_').map_or(id, |(array, _)| array)
}

/// Reads `MaxArraySize` from `scontrol show config`: the most tasks one array may have (its
/// indices run 0 to MaxArraySize - 1). `Some(0)` means arrays are disabled.
pub fn parse_max_array_size(config: &str) -> Option<usize> {
    config.lines().find_map(|line| {
        let (name, value) = line.split_once('=')?;
        (name.trim() == "MaxArraySize")
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

/// Instances that can share an array, in first-seen order of their group: `group_of` gives each
/// its group (instances of one stage with the same command options ask for the same job), and
/// each group is cut into arrays of at most `max` tasks. A group of one stays a plain job
/// (returned with one member).
pub fn batches<K: Ord + Clone>(
    members: impl IntoIterator<Item = (usize, K)>,
    max: usize,
) -> Vec<Vec<usize>> {
    let mut order: Vec<K> = Vec::new();
    let mut groups: BTreeMap<K, Vec<usize>> = BTreeMap::new();
    for (member, key) in members {
        let group = groups.entry(key.clone()).or_insert_with(|| {
            order.push(key);
            Vec::new()
        });
        group.push(member);
    }
    let max = max.max(1);
    order
        .into_iter()
        .flat_map(|key| {
            let group = groups.remove(&key).unwrap_or_default();
            group.chunks(max).map(<[usize]>::to_vec).collect::<Vec<_>>()
        })
        .collect()
}

/// Writes an array's instance list, one instance id per line, task `i` on line `i`.
pub fn write_list(path: &Path, instances: &[&str]) -> Result<()> {
    let mut text = instances.join("\n");
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The instance an array task runs: line `task` (Slurm's `$SLURM_ARRAY_TASK_ID`) of its list.
pub fn instance_from_list(list: &Path, task: Option<&str>) -> Result<String> {
    let Some(task) = task else {
        bail!(
            "--instance-list {} needs $SLURM_ARRAY_TASK_ID (set by Slurm in an array job)",
            list.display()
        );
    };
    let Ok(task) = task.trim().parse::<usize>() else {
        bail!("$SLURM_ARRAY_TASK_ID is `{task}`; expected a task index such as 4");
    };
    let text = std::fs::read_to_string(list)
        .with_context(|| format!("reading the array's instance list {}", list.display()))?;
    match text.lines().nth(task) {
        Some(id) if !id.is_empty() => Ok(id.to_string()),
        _ => bail!(
            "{} has no instance for array task {task} ({} lines)",
            list.display(),
            text.lines().count()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slurm::queue::parse_squeue;

    /// `squeue --noheader --states=all --jobs=5934,5935,5936 --format='%i|%T|%r'` on Slurm
    /// 22.05.8 (scripts/slurm-ci.sh), an array of 12 tasks on 8 CPUs with one job `afterok` on
    /// task 3 and one on task 2: first while 8 tasks run and 4 pend, then after task 3 failed.
    #[test]
    fn squeue_output_of_a_real_array_becomes_one_state_per_task() {
        let running = "5934_[8-11]|PENDING|Resources\n5935|PENDING|Dependency\n\
                       5936|PENDING|Dependency\n5934_0|RUNNING|None\n5934_1|RUNNING|None\n\
                       5934_2|RUNNING|None\n5934_3|RUNNING|None\n5934_4|RUNNING|None\n\
                       5934_5|RUNNING|None\n5934_6|RUNNING|None\n5934_7|RUNNING|None\n";
        let jobs = parse_squeue(running);
        assert_eq!(jobs.len(), 14, "12 tasks and 2 jobs: {jobs:?}");
        for task in 8..=11 {
            let state = &jobs[&format!("5934_{task}")];
            assert!(state.is_pending() && state.reason == "Resources");
        }
        assert!(jobs["5934_3"].is_active() && !jobs["5934_3"].is_pending());
        assert!(!jobs.contains_key("5934_[8-11]"));

        let ended = "5935|CANCELLED|DependencyNeverSatisfied\n5934_0|COMPLETED|None\n\
                     5934_2|COMPLETED|None\n5936|COMPLETED|None\n5934_3|FAILED|NonZeroExitCode\n\
                     5934_8|RUNNING|None\n";
        let jobs = parse_squeue(ended);
        assert_eq!(jobs["5934_3"].state, "FAILED");
        assert_eq!(jobs["5934_3"].reason, "NonZeroExitCode");
        assert_eq!(jobs["5935"].state, "CANCELLED", "its dependent, on task 3");
        assert!(!jobs["5934_0"].is_active());
    }

    /// `sbatch --hold --array=0-9%4`, then `scancel 5948_5`, then `scancel 5948` (same cluster):
    /// a pending range with a hole and a throttle, pending and then cancelled. The task cancelled
    /// alone while pending is not listed at all afterwards.
    #[test]
    fn a_pending_range_with_a_hole_and_a_throttle_is_every_task_in_it() {
        let held = parse_squeue("5948_[0-4,6-9%4]|PENDING|JobHeldUser\n");
        let mut ids: Vec<&String> = held.keys().collect();
        ids.sort_by_key(|id| id[5..].parse::<u32>().unwrap());
        assert_eq!(
            ids,
            [
                "5948_0", "5948_1", "5948_2", "5948_3", "5948_4", "5948_6", "5948_7", "5948_8",
                "5948_9"
            ]
        );
        let cancelled = parse_squeue("5948_[0-4,6-9%4]|CANCELLED|JobHeldUser\n");
        assert_eq!(cancelled.len(), 9);
        assert!(cancelled.values().all(|s| !s.is_active()));
    }

    #[test]
    fn ids_that_are_not_ranges_stay_as_they_are() {
        assert_eq!(expand_id("5936"), ["5936"]);
        assert_eq!(expand_id("5934_3"), ["5934_3"]);
        assert_eq!(expand_id("5934_[7]"), ["5934_7"]);
        assert_eq!(expand_id("5934_[x-2]"), ["5934_[x-2]"]);
        assert_eq!(expand_id("5934_[5-2]"), ["5934_[5-2]"]);
        assert_eq!(queried_id("5934_3"), "5934");
        assert_eq!(queried_id("5936"), "5936");
    }

    #[test]
    fn max_array_size_is_read_from_scontrol_show_config() {
        // Lines of `scontrol show config` on the CI cluster (22.05.8).
        let config = "Configuration data as of 2026-12-02T08:20:01\nMailProg                = \
                      /bin/true\nMaxArraySize            = 1001\nMaxJobCount             = 10000\n";
        assert_eq!(parse_max_array_size(config), Some(1001));
        assert_eq!(parse_max_array_size("MaxArraySize = 0\n"), Some(0));
        assert_eq!(parse_max_array_size("MaxJobCount = 10000\n"), None);
    }

    #[test]
    fn instances_are_grouped_by_their_job_and_cut_to_the_array_size() {
        // (instance, (stage, forced)): stage 0 has 5 instances, stage 1 two, stage 2 one.
        let members = [
            (0, (0, false)),
            (1, (1, false)),
            (2, (0, false)),
            (3, (0, false)),
            (4, (2, false)),
            (5, (0, false)),
            (6, (1, false)),
            (7, (0, false)),
            (8, (0, true)),
        ];
        assert_eq!(
            batches(members, 3),
            [vec![0, 2, 3], vec![5, 7], vec![1, 6], vec![4], vec![8]]
        );
        assert_eq!(batches(members, 1000)[0], [0, 2, 3, 5, 7]);
        assert_eq!(
            batches(members, 0).len(),
            9,
            "arrays disabled: one job each"
        );
    }

    #[test]
    fn a_task_picks_its_line_of_the_list() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("a.instances");
        write_list(&list, &["work[seed=0]", "work[seed=1]"]).unwrap();
        assert_eq!(
            instance_from_list(&list, Some("1")).unwrap(),
            "work[seed=1]"
        );
        assert_eq!(
            instance_from_list(&list, Some("0")).unwrap(),
            "work[seed=0]"
        );
        let past = instance_from_list(&list, Some("2"))
            .unwrap_err()
            .to_string();
        assert!(
            past.contains("no instance for array task 2 (2 lines)"),
            "{past}"
        );
        let outside = instance_from_list(&list, None).unwrap_err().to_string();
        assert!(outside.contains("needs $SLURM_ARRAY_TASK_ID"), "{outside}");
        let odd = instance_from_list(&list, Some("x"))
            .unwrap_err()
            .to_string();
        assert!(odd.contains("`x`"), "{odd}");
    }
}
