//! Sweep points: the axes combined by the design (grid, zip, one-at-a-time), seeds crossed.

use std::collections::BTreeSet;

use super::template::display_value;
use super::{Axis, SEED_AXIS};
use crate::diagnostics::Reporter;
use crate::spec::{Design, Source};

/// Sweep points as value indices per axis (the seed axis, if any, is last and always crossed).
pub(super) fn design_points(
    source: &Source,
    axes: &[Axis],
    reporter: &mut Reporter<'_>,
    max_points: usize,
) -> Vec<Vec<usize>> {
    let has_seed = axes.last().is_some_and(|a| a.name == SEED_AXIS) && source.raw.seeds.is_some();
    let sweep_axes = if has_seed {
        &axes[..axes.len() - 1]
    } else {
        axes
    };
    let seed_count = if has_seed {
        axes[axes.len() - 1].values.len()
    } else {
        1
    };
    let design = source.raw.design;
    if design != Design::OneAtATime && source.raw.baseline.is_some() {
        reporter.at_key(
            "baseline",
            "`baseline:` is only used by `design: one-at-a-time`",
        );
    }
    let count: u128 = match design {
        Design::Grid => sweep_axes.iter().map(|a| a.values.len() as u128).product(),
        Design::Zip => {
            let lengths: BTreeSet<usize> = sweep_axes.iter().map(|a| a.values.len()).collect();
            if lengths.len() > 1 {
                let described: Vec<String> = sweep_axes
                    .iter()
                    .map(|a| format!("{} has {}", a.name, a.values.len()))
                    .collect();
                reporter.at_value(
                    "design",
                    format!(
                        "`design: zip` needs axes of equal length; {}",
                        described.join(", ")
                    ),
                );
                return Vec::new();
            }
            lengths.into_iter().next().unwrap_or(1) as u128
        }
        Design::OneAtATime => {
            1 + sweep_axes
                .iter()
                .map(|a| a.values.len().saturating_sub(1) as u128)
                .sum::<u128>()
        }
    } * seed_count as u128;
    if count > max_points as u128 {
        reporter.at_key(
            "sweep",
            format!("the sweep expands to {count} points, more than --max-points {max_points}; raise --max-points or shrink the sweep"),
        );
        return Vec::new();
    }

    let mut points: Vec<Vec<usize>> = match design {
        Design::Grid => {
            let mut points = vec![Vec::new()];
            for axis in sweep_axes {
                points = points
                    .into_iter()
                    .flat_map(|p| {
                        (0..axis.values.len()).map(move |i| {
                            let mut next = p.clone();
                            next.push(i);
                            next
                        })
                    })
                    .collect();
            }
            points
        }
        Design::Zip => {
            let n = sweep_axes.first().map(|a| a.values.len()).unwrap_or(1);
            (0..n).map(|i| vec![i; sweep_axes.len()]).collect()
        }
        Design::OneAtATime => {
            let Some(baseline) = &source.raw.baseline else {
                reporter.at_value(
                    "design",
                    "`design: one-at-a-time` needs `baseline:` giving a value for every axis",
                );
                return Vec::new();
            };
            for key in baseline.keys() {
                if !sweep_axes.iter().any(|a| &a.name == key) {
                    reporter.at_key(
                        &format!("baseline.{key}"),
                        format!("`{key}` is not a sweep axis"),
                    );
                }
            }
            let mut base = Vec::new();
            for axis in sweep_axes {
                match baseline.get(&axis.name) {
                    None => reporter.at_value(
                        "baseline",
                        format!("`baseline:` gives no value for axis `{}`", axis.name),
                    ),
                    Some(value) => match axis.values.iter().position(|v| {
                        v == value
                            || (v.is_object()
                                && value.is_string()
                                && display_value(v) == value.as_str().unwrap_or_default())
                    }) {
                        Some(i) => base.push(i),
                        None => reporter.at_value(
                            &format!("baseline.{}", axis.name),
                            format!(
                                "baseline value {value} is not one of the values of axis `{}`",
                                axis.name
                            ),
                        ),
                    },
                }
            }
            if base.len() != sweep_axes.len() {
                return Vec::new();
            }
            let mut points = vec![base.clone()];
            for (a, axis) in sweep_axes.iter().enumerate() {
                for i in 0..axis.values.len() {
                    if i != base[a] {
                        let mut point = base.clone();
                        point[a] = i;
                        points.push(point);
                    }
                }
            }
            points
        }
    };
    if has_seed {
        points = points
            .into_iter()
            .flat_map(|p| {
                (0..seed_count).map(move |s| {
                    let mut next = p.clone();
                    next.push(s);
                    next
                })
            })
            .collect();
    }
    points
}
