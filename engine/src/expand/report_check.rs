//! The `report:` section names stages and axes that exist.

use super::Axis;
use crate::diagnostics::Reporter;
use crate::spec::Source;

/// The `report:` section names stages and axes that exist.
pub(super) fn validate_report(
    source: &Source,
    names: &[String],
    axes: &[Axis],
    reporter: &mut Reporter<'_>,
) {
    let Some(report) = &source.raw.report else {
        return;
    };
    let known_stage = |name: &str| names.iter().any(|n| n == name);
    match (&report.stage, report.stages.is_empty()) {
        (None, true) => reporter.at_key(
            "report",
            "`report:` needs `stage:` (or `stages:`), the stage whose metrics fill the table",
        ),
        (Some(_), false) => {
            reporter.at_key("report.stages", "give `stage:` or `stages:`, not both")
        }
        _ => {}
    }
    let listed = report.stage.iter().map(|s| ("report.stage".to_string(), s));
    let many = report
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("report.stages[{i}]"), s));
    for (path, stage) in listed.chain(many) {
        if !known_stage(stage) {
            reporter.at_value(
                &path,
                format!(
                    "unknown stage `{stage}`; stages in this file: {}",
                    names.join(", ")
                ),
            );
        }
    }
    for (i, curve) in report.curves.iter().enumerate() {
        if !known_stage(&curve.stage) {
            reporter.at_value(
                &format!("report.curves[{i}].stage"),
                format!("unknown stage `{}`", curve.stage),
            );
        }
    }
    let axis_names: Vec<&str> = axes.iter().map(|a| a.name.as_str()).collect();
    if let Some(x) = &report.x_axis
        && !axis_names.contains(&x.as_str())
    {
        reporter.at_value(
            "report.x_axis",
            format!("`{x}` is not an axis; axes are: {}", axis_names.join(", ")),
        );
    }
    for key in report.baseline.iter().flat_map(|b| b.keys()) {
        if !axis_names.contains(&key.as_str()) {
            reporter.at_key(
                &format!("report.baseline.{key}"),
                format!("`{key}` is not an axis"),
            );
        }
    }
}
