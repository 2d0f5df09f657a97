//! `ablation.csv`: one line per row × metric at full precision, for analysis elsewhere.

use crate::stats::Estimate;
use crate::summary::Summary;

const HEADER: [&str; 15] = [
    "arm",
    "axes",
    "metric",
    "seeds",
    "n",
    "mean",
    "ci_low",
    "ci_high",
    "diff_n",
    "diff_mean",
    "diff_low",
    "diff_high",
    "diff_excludes_zero",
    "is_baseline",
    "missing",
];

/// RFC 4180 CSV (with `\n` line ends); empty fields where a value does not exist (n = 1 has no interval, the baseline
/// has no difference). Numbers use the shortest text that reads back to the same `f64`.
pub fn to_csv(summary: &Summary) -> String {
    let mut out = HEADER.join(",");
    out.push('\n');
    for row in &summary.rows {
        let axes = row
            .axes
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join(";");
        for cell in &row.cells {
            let (n, mean, low, high) = numbers(cell.estimate.as_ref());
            let difference = cell.difference.as_ref();
            let (diff_n, diff_mean, diff_low, diff_high) = match difference {
                Some(difference) => numbers(difference.estimate.as_ref()),
                None => Default::default(),
            };
            let fields = [
                row.label.clone(),
                axes.clone(),
                cell.metric.clone(),
                row.seeds.to_string(),
                n,
                mean,
                low,
                high,
                diff_n,
                diff_mean,
                diff_low,
                diff_high,
                difference
                    .map(|d| d.excludes_zero.to_string())
                    .unwrap_or_default(),
                row.is_baseline.to_string(),
                cell.missing.join("; "),
            ];
            let line: Vec<String> = fields.iter().map(|field| quote(field)).collect();
            out.push_str(&line.join(","));
            out.push('\n');
        }
    }
    out
}

fn numbers(estimate: Option<&Estimate>) -> (String, String, String, String) {
    let Some(estimate) = estimate else {
        return ("0".to_string(), String::new(), String::new(), String::new());
    };
    let (low, high) = estimate
        .interval
        .map(|i| (i.low.to_string(), i.high.to_string()))
        .unwrap_or_default();
    (estimate.n.to_string(), estimate.mean.to_string(), low, high)
}

/// Quotes a field that holds a separator, a quote or a line break.
fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}
