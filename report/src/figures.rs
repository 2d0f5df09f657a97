//! Which charts a report has: each metric against the swept axis, and each curve set.

use crate::chart::{Chart, Line};
use crate::error::ReportError;
use crate::input::{CurveSet, ReportInput};
use crate::summary::Summary;

/// One chart and the file stem it is written under.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Figure {
    /// Shown above the chart in the HTML page.
    pub caption: String,
    /// Without extension; unique within the report.
    pub stem_hint: String,
    pub chart: Chart,
}

/// Rows that agree on every axis but the x axis: those other axes, and `(x, row index)` of each
/// member, groups in order of first appearance.
type Group = (Vec<(String, String)>, Vec<(f64, usize)>);

/// One chart per metric against `x_axis`, with one line per group of rows that agree on every
/// other axis; rows without the axis are left out.
pub(crate) fn metric_figures(
    input: &ReportInput,
    summary: &Summary,
) -> Result<Vec<Figure>, ReportError> {
    let Some(axis) = &input.x_axis else {
        return Ok(Vec::new());
    };
    let mut groups: Vec<Group> = Vec::new();
    for (index, row) in input.rows.iter().enumerate() {
        let Some((_, value)) = row.axes.iter().find(|(name, _)| name == axis) else {
            continue;
        };
        let x = value
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| ReportError::NonNumericAxis {
                row: row.label.clone(),
                axis: axis.clone(),
                value: value.clone(),
            })?;
        let key: Vec<(String, String)> = row
            .axes
            .iter()
            .filter(|(name, _)| name != axis)
            .cloned()
            .collect();
        match groups.iter_mut().find(|(existing, _)| *existing == key) {
            Some((_, members)) => members.push((x, index)),
            None => groups.push((key, vec![(x, index)])),
        }
    }
    if groups.is_empty() {
        return Err(ReportError::NoRowHasAxis { axis: axis.clone() });
    }
    for (_, members) in &mut groups {
        // Stable: rows with equal x keep their input order.
        members.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let mut figures = Vec::new();
    for (metric_index, metric) in input.metrics.iter().enumerate() {
        let lines = groups
            .iter()
            .map(|(key, members)| metric_line(key, members, summary, metric_index))
            .filter(|line| !line.points.is_empty())
            .collect();
        figures.push(Figure {
            caption: format!(
                "{metric} against {axis}: mean over seeds with its {}% confidence band",
                crate::markdown::percent(summary.confidence)
            ),
            stem_hint: format!("{metric} vs {axis}"),
            chart: Chart {
                title: format!("{metric} vs {axis}"),
                x_label: axis.clone(),
                y_label: metric.clone(),
                lines,
            },
        });
    }
    Ok(figures)
}

fn metric_line(
    key: &[(String, String)],
    members: &[(f64, usize)],
    summary: &Summary,
    metric_index: usize,
) -> Line {
    let mut points = Vec::new();
    let mut band = Vec::new();
    for &(x, row_index) in members {
        let cell = &summary.rows[row_index].cells[metric_index];
        if let Some(estimate) = &cell.estimate {
            points.push((x, estimate.mean));
            // n = 1 has no interval: the band pinches to the mean there.
            let (low, high) = estimate
                .interval
                .map_or((estimate.mean, estimate.mean), |i| (i.low, i.high));
            band.push((x, low, high));
        }
    }
    let label = if key.is_empty() {
        "mean".to_string()
    } else {
        key.iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Line {
        label,
        points,
        band: Some(band),
        markers: true,
    }
}

/// One chart per curve set, drawn as given.
pub(crate) fn curve_figures(curves: &[CurveSet]) -> Result<Vec<Figure>, ReportError> {
    let mut figures = Vec::with_capacity(curves.len());
    for set in curves {
        for series in &set.series {
            if let Some((index, &(x, y))) = series
                .points
                .iter()
                .enumerate()
                .find(|(_, (x, y))| !x.is_finite() || !y.is_finite())
            {
                return Err(ReportError::NonFinitePoint {
                    curve: set.title.clone(),
                    series: series.label.clone(),
                    index,
                    x,
                    y,
                });
            }
        }
        let lines = set
            .series
            .iter()
            .map(|series| Line {
                label: series.label.clone(),
                points: series.points.clone(),
                band: None,
                markers: series.points.len() == 1,
            })
            .collect();
        figures.push(Figure {
            caption: set.title.clone(),
            stem_hint: set.title.clone(),
            chart: Chart {
                title: set.title.clone(),
                x_label: set.x_label.clone(),
                y_label: set.y_label.clone(),
                lines,
            },
        });
    }
    Ok(figures)
}
