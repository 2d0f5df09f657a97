//! Ablation reports for umdflow: from per-seed metrics of each arm to the tables and figures a
//! paper needs.
//!
//! The engine reads its cache, fills a [`ReportInput`] (plain data, never trained here) and calls
//! [`render`], which writes into one folder:
//!
//! | file | content |
//! |---|---|
//! | `ablation.md` | means table and paired-difference table, GitHub Markdown with footnotes |
//! | `ablation.csv` | one line per row × metric, full precision |
//! | `ablation.json` | the [`Summary`] |
//! | `ablation.tex` | booktabs tables (`\usepackage{booktabs}`) |
//! | `metric-<metric>-vs-<axis>.svg/.png` | each metric against `x_axis`, 95% bands |
//! | `curve-<title>.svg/.png` | each [`CurveSet`] |
//! | `report.html` | everything in one self-contained page |
//!
//! Each cell is the mean over seeds ± the half-width of its 95% Student-t interval
//! (n − 1 degrees of freedom); with one seed the mean alone and `n=1`. Differences to the
//! baseline are paired by seed; where replicates carry per-item outcomes, a paired bootstrap over
//! test items within each seed stands beside them (`ablation.md`, `ablation.json`). A zero-width
//! interval is never marked significant. Output is deterministic: the same input gives
//! byte-identical files (the bootstrap is seeded).
//!
//! For the tracking tools, [`write_tensorboard`] and [`write_mlflow`] write finished runs
//! ([`TrackedRun`]: params, final metrics, per-step curves, artifacts) as TensorBoard event files
//! and as an MLflow file store.
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use umdflow_report::{render, Replicate, ReportInput, Row};
//!
//! let seed = |name: &str, acc: f64| Replicate {
//!     seed: name.to_string(),
//!     metrics: Some(BTreeMap::from([("vqa_acc".to_string(), acc)])),
//!     missing: None,
//!     items: BTreeMap::new(),
//! };
//! let input = ReportInput {
//!     title: "ablation".to_string(),
//!     metrics: vec!["vqa_acc".to_string()],
//!     rows: vec![
//!         Row {
//!             label: "data-mr".to_string(),
//!             axes: vec![("arm".to_string(), "data-mr".to_string())],
//!             replicates: vec![seed("0", 0.61), seed("1", 0.63)],
//!         },
//!         Row {
//!             label: "full".to_string(),
//!             axes: vec![("arm".to_string(), "full".to_string())],
//!             replicates: vec![
//!                 seed("0", 0.70),
//!                 Replicate {
//!                     seed: "1".to_string(),
//!                     metrics: None,
//!                     missing: Some("evaluate[arm=full,seed=1] has not run".to_string()),
//!                     items: BTreeMap::new(),
//!                 },
//!             ],
//!         },
//!     ],
//!     baseline: Some(0),
//!     x_axis: None,
//!     curves: vec![],
//! };
//! let written = render(&input, std::path::Path::new("report"))?;
//! for path in written.files() {
//!     println!("{}", path.display());
//! }
//! # Ok::<(), umdflow_report::ReportError>(())
//! ```

mod bootstrap;
mod cell_text;
mod chart;
mod csv;
mod error;
mod figures;
mod html;
mod input;
mod latex;
mod markdown;
mod mlflow;
mod slug;
mod stats;
pub mod student_t;
mod summary;
mod tensorboard;
mod tracked;

use std::path::{Path, PathBuf};

pub use bootstrap::PairedBootstrap;
pub use csv::to_csv;
pub use error::ReportError;
pub use input::{CurveSet, Replicate, ReportInput, Row, Series};
pub use latex::{escape as escape_latex, to_latex};
pub use markdown::to_markdown;
pub use mlflow::write_mlflow;
pub use stats::{CONFIDENCE, Estimate, Interval};
pub use summary::{Cell, Difference, RowSummary, Summary, summarize};
pub use tensorboard::write_tensorboard;
pub use tracked::{Artifact, Curve, TrackedRun};

/// The files [`render`] wrote, all inside its `out_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// `ablation.md`, `ablation.csv`, `ablation.json`, `ablation.tex`, in this order.
    pub tables: Vec<PathBuf>,
    /// Each chart's SVG then PNG: metric charts first (in `metrics` order), then curve sets.
    pub plots: Vec<PathBuf>,
    /// `report.html`.
    pub html: PathBuf,
}

impl Written {
    /// Every file, tables first and the page last.
    pub fn files(&self) -> Vec<&Path> {
        self.tables
            .iter()
            .chain(&self.plots)
            .map(PathBuf::as_path)
            .chain(std::iter::once(self.html.as_path()))
            .collect()
    }
}

/// The ablation table as pretty-printed JSON (the [`Summary`] with a trailing newline).
pub fn to_json(summary: &Summary) -> Result<String, ReportError> {
    let mut text = serde_json::to_string_pretty(summary).map_err(ReportError::Json)?;
    text.push('\n');
    Ok(text)
}

/// Writes every table, chart and the HTML page into `out_dir` (created if absent; files of the
/// same names are replaced, other files are left as they are). Fails on invalid input before
/// writing anything.
pub fn render(input: &ReportInput, out_dir: &Path) -> Result<Written, ReportError> {
    let summary = summarize(input)?;
    let mut figures = figures::metric_figures(input, &summary)?;
    let metric_count = figures.len();
    figures.extend(figures::curve_figures(&input.curves)?);

    std::fs::create_dir_all(out_dir).map_err(|e| ReportError::io(out_dir, e))?;
    let mut tables = Vec::new();
    for (name, text) in [
        ("ablation.md", to_markdown(&summary)),
        ("ablation.csv", to_csv(&summary)),
        ("ablation.json", to_json(&summary)?),
        ("ablation.tex", to_latex(&summary)),
    ] {
        tables.push(write(out_dir, name, text.as_bytes())?);
    }

    let mut names = slug::UniqueNames::default();
    let mut plots = Vec::new();
    let mut svgs = Vec::with_capacity(figures.len());
    for (index, figure) in figures.iter().enumerate() {
        let prefix = if index < metric_count {
            "metric"
        } else {
            "curve"
        };
        let stem = format!("{prefix}-{}", names.take(&figure.stem_hint));
        let svg_path = out_dir.join(format!("{stem}.svg"));
        let svg = chart::to_svg(&figure.chart, &svg_path)?;
        plots.push(write(out_dir, &format!("{stem}.svg"), svg.as_bytes())?);
        let png_path = out_dir.join(format!("{stem}.png"));
        let png = chart::to_png(&figure.chart, &png_path)?;
        plots.push(write(out_dir, &format!("{stem}.png"), &png)?);
        svgs.push(svg);
    }

    let inline: Vec<html::InlineFigure> = figures
        .iter()
        .zip(&svgs)
        .map(|(figure, svg)| html::InlineFigure {
            caption: &figure.caption,
            svg,
        })
        .collect();
    let html = write(
        out_dir,
        "report.html",
        html::to_html(&summary, &inline).as_bytes(),
    )?;
    Ok(Written {
        tables,
        plots,
        html,
    })
}

fn write(out_dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, ReportError> {
    let path = out_dir.join(name);
    std::fs::write(&path, bytes).map_err(|e| ReportError::io(&path, e))?;
    Ok(path)
}
