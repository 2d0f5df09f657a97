//! What `run` and `plan` print: a summary table for people, one JSON document with `--json`.

use serde::Serialize;

use crate::expand::Expanded;
use crate::scheduler::{Outcome, Status};

#[derive(Serialize)]
pub struct StageLine<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub kind: &'a str,
    pub key: Option<&'a str>,
    pub status: &'a str,
    pub reason: &'a str,
    pub seconds: f64,
}

#[derive(Serialize)]
pub struct RunDocument<'a> {
    pub pipeline: &'a str,
    pub stages: Vec<StageLine<'a>>,
    pub executed: usize,
    pub cached: usize,
    pub failed: usize,
    pub skipped: usize,
    pub interrupted: bool,
}

pub fn count(outcomes: &[Outcome], status: Status) -> usize {
    outcomes.iter().filter(|o| o.status == status).count()
}

pub fn run_document<'a>(
    expanded: &'a Expanded,
    outcomes: &'a [Outcome],
    interrupted: bool,
) -> RunDocument<'a> {
    let stages = expanded
        .instances
        .iter()
        .zip(outcomes)
        .map(|(instance, outcome)| {
            let stage = expanded.stage_of(instance);
            StageLine {
                id: &instance.id,
                name: &stage.name,
                kind: stage.kind.name(),
                key: outcome.key.as_deref(),
                status: outcome.status.as_str(),
                reason: &outcome.reason,
                seconds: (outcome.seconds * 1e6).round() / 1e6,
            }
        })
        .collect();
    RunDocument {
        pipeline: &expanded.name,
        stages,
        executed: count(outcomes, Status::Executed),
        cached: count(outcomes, Status::Cached),
        failed: count(outcomes, Status::Failed),
        skipped: count(outcomes, Status::Skipped),
        interrupted,
    }
}

pub fn short_key(key: Option<&str>) -> &str {
    key.map(|k| &k[..12.min(k.len())]).unwrap_or("-")
}

/// Left-aligned columns.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The end-of-run table. Large sweeps list only what did not come from the cache.
pub fn run_table(expanded: &Expanded, outcomes: &[Outcome]) -> String {
    let all = outcomes.len() <= 40;
    let mut rows = vec![vec![
        "status".to_string(),
        "stage".to_string(),
        "key".to_string(),
        "seconds".to_string(),
        "reason".to_string(),
    ]];
    for (instance, outcome) in expanded.instances.iter().zip(outcomes) {
        if !all && outcome.status == Status::Cached {
            continue;
        }
        rows.push(vec![
            outcome.status.as_str().to_string(),
            instance.id.clone(),
            short_key(outcome.key.as_deref()).to_string(),
            if outcome.status == Status::Executed {
                format!("{:.2}", outcome.seconds)
            } else {
                "-".into()
            },
            if outcome.status == Status::Cached {
                String::new()
            } else {
                outcome.reason.clone()
            },
        ]);
    }
    let mut text = table(&rows);
    text.push_str(&format!(
        "{} executed, {} cached, {} failed, {} skipped\n",
        count(outcomes, Status::Executed),
        count(outcomes, Status::Cached),
        count(outcomes, Status::Failed),
        count(outcomes, Status::Skipped)
    ));
    text
}
