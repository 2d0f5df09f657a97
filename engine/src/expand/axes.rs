//! Sweep axes (and the `seed` axis from `seeds:`), checked.

use std::collections::BTreeSet;

use serde_json::Value;

use super::template::display_value;
use super::{Axis, SEED_AXIS};
use crate::diagnostics::Reporter;
use crate::spec::{Seeds, Source};

pub(super) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub(super) fn build_axes(
    source: &Source,
    reporter: &mut Reporter<'_>,
    max_points: usize,
) -> Vec<Axis> {
    let raw = &source.raw;
    let mut axes = Vec::new();
    for (name, values) in &raw.sweep.0 {
        let path = format!("sweep.{name}");
        if !is_identifier(name) {
            reporter.at_key(&path, format!("axis name `{name}` must start with a letter and use letters, digits, `_` or `-`"));
        } else if name == SEED_AXIS && raw.seeds.is_some() {
            reporter.at_key(
                &path,
                "`seed` is the replicate axis given by `seeds:`; rename this axis",
            );
        } else if values.is_empty() {
            reporter.at_value(
                &path,
                format!("axis `{name}` is empty: give at least one value"),
            );
        } else {
            let mut seen = BTreeSet::new();
            let mappings = values.iter().filter(|v| v.is_object()).count();
            if mappings > 0 {
                for (i, value) in values.iter().enumerate() {
                    if !value.get("name").is_some_and(Value::is_string) {
                        reporter.at_value(
                            &format!("{path}[{i}]"),
                            format!("values of axis `{name}` are mappings, so each needs a `name:` (used in instance ids)"),
                        );
                    }
                }
            }
            for (i, value) in values.iter().enumerate() {
                if !seen.insert(display_value(value)) {
                    reporter.at_value(
                        &format!("{path}[{i}]"),
                        format!("axis `{name}` lists {value} twice"),
                    );
                }
            }
        }
        axes.push(Axis {
            name: name.clone(),
            values: values.clone(),
        });
    }
    match &raw.seeds {
        None => {}
        Some(Seeds::Count(0)) => reporter.at_value(
            "seeds",
            "`seeds:` is 0: give a count of at least 1 or a list",
        ),
        Some(Seeds::List(list)) if list.is_empty() => {
            reporter.at_value("seeds", "`seeds:` is an empty list")
        }
        // Checked before the values are made: `seeds: 1000000000` must not allocate them.
        Some(Seeds::Count(n)) if *n > max_points as u64 => reporter.at_value(
            "seeds",
            format!("`seeds: {n}` alone gives more than --max-points {max_points} points; raise --max-points or use fewer seeds"),
        ),
        Some(Seeds::Count(n)) => axes.push(Axis {
            name: SEED_AXIS.into(),
            values: (0..*n).map(Value::from).collect(),
        }),
        Some(Seeds::List(list)) => {
            let mut seen = BTreeSet::new();
            for (i, seed) in list.iter().enumerate() {
                if !seen.insert(crate::keys::canonical_json(seed)) {
                    reporter.at_value(
                        &format!("seeds[{i}]"),
                        format!("seed {seed} is listed twice; replicates need distinct seeds"),
                    );
                }
            }
            axes.push(Axis {
                name: SEED_AXIS.into(),
                values: list.clone(),
            })
        }
    }
    axes
}
