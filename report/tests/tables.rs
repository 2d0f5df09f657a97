//! Every table format on the hand-worked fixture in `common`.
//!
//! By hand, with t(0.975, 1) = 12.7062 and t(0.975, 2) = 4.3027:
//! - base acc 0.70/0.72/0.74: mean 0.72, s = 0.02, half-width 4.3027 · 0.02/√3 = 0.0497.
//! - plus acc 0.75/0.76 (seed 3 not run): mean 0.755, half-width 12.7062 · 0.005 = 0.0635;
//!   paired differences 0.05/0.04: mean 0.045 ± 0.0635, interval includes 0.
//! - full acc 0.80/0.81/0.82: mean 0.81 ± 0.0248; differences 0.10/0.09/0.08: 0.09 ± 0.0248,
//!   excludes 0. full auc 0.90/0.91 (seed 3 lacks it): differences 0.10/0.09: 0.095 ± 0.0635,
//!   excludes 0.
//! - single: one seed, mean only; difference 0.65 − 0.70 = −0.05 and 0.68 − 0.80 = −0.12.

mod common;

use umdflow_report::{escape_latex, summarize, to_csv, to_json, to_latex, to_markdown};

const MARKDOWN: &str = r#"# demo: ablation

Mean ± half-width of the 95% confidence interval over seeds (Student t, n − 1 degrees of freedom). `n` is shown where only some of the row's seeds have a value, and for a single seed.

| Arm | Seeds | acc | auc |
|---|---:|---:|---:|
| base | 3 | 0.720 ± 0.050 | 0.820 ± 0.050 |
| plus | 3 | 0.755 ± 0.064 (n=2)[^1] | 0.855 ± 0.064 (n=2)[^1] |
| full | 3 | 0.810 ± 0.025 | 0.905 ± 0.064 (n=2)[^2] |
| single | 1 | 0.6500 (n=1) | 0.6800 (n=1) |

## Difference to the baseline (base)

Paired by seed: mean ± half-width of the 95% confidence interval of (row − baseline). \* marks an interval that has width and excludes 0.

| Arm | acc | auc |
|---|---:|---:|
| plus | +0.045 ± 0.064 (n=2)[^1] | +0.045 ± 0.064 (n=2)[^1] |
| full | +0.090 ± 0.025 \* | +0.095 ± 0.064 (n=2) \*[^2] |
| single | -0.05000 (n=1) | -0.1200 (n=1) |

[^1]: Not available: plus, seed 3: evaluate\[arm=plus,seed=3\] has not run.
[^2]: Not available: full, seed 3: no metric "auc" in its results.
"#;

const LATEX: &str = r#"% umdflow report for demo. Needs \usepackage{booktabs}.
\begin{table}[htbp]
\centering
\caption{demo: mean $\pm$ half-width of the 95\% confidence interval over seeds (Student $t$).}
\label{tab:demo-ablation}
\begin{tabular}{lrrr}
\toprule
Arm & Seeds & acc & auc \\
\midrule
base & 3 & $0.720 \pm 0.050$ & $0.820 \pm 0.050$ \\
plus & 3 & $0.755 \pm 0.064$\,(n=2)\textsuperscript{1} & $0.855 \pm 0.064$\,(n=2)\textsuperscript{1} \\
full & 3 & $0.810 \pm 0.025$ & $0.905 \pm 0.064$\,(n=2)\textsuperscript{2} \\
single & 1 & $0.6500$\,(n=1) & $0.6800$\,(n=1) \\
\bottomrule
\end{tabular}
\par\smallskip
{\footnotesize
\textsuperscript{1}Not available: plus, seed 3: evaluate[arm=plus,seed=3] has not run.\par
\textsuperscript{2}Not available: full, seed 3: no metric "auc" in its results.\par
}
\end{table}

\begin{table}[htbp]
\centering
\caption{demo: difference to the baseline (base), paired by seed; mean $\pm$ half-width of the 95\% confidence interval. $^{*}$ marks an interval that has width and excludes 0.}
\label{tab:demo-difference}
\begin{tabular}{lrr}
\toprule
Arm & acc & auc \\
\midrule
plus & $+0.045 \pm 0.064$\,(n=2)\textsuperscript{1} & $+0.045 \pm 0.064$\,(n=2)\textsuperscript{1} \\
full & $+0.090 \pm 0.025^{*}$ & $+0.095 \pm 0.064^{*}$\,(n=2)\textsuperscript{2} \\
single & $-0.05000$\,(n=1) & $-0.1200$\,(n=1) \\
\bottomrule
\end{tabular}
\par\smallskip
{\footnotesize
\textsuperscript{1}Not available: plus, seed 3: evaluate[arm=plus,seed=3] has not run.\par
\textsuperscript{2}Not available: full, seed 3: no metric "auc" in its results.\par
}
\end{table}
"#;

#[test]
fn markdown_matches_the_hand_worked_table() {
    let summary = summarize(&common::ablation()).unwrap();
    assert_eq!(to_markdown(&summary), MARKDOWN);
}

#[test]
fn latex_matches_the_hand_worked_table() {
    let summary = summarize(&common::ablation()).unwrap();
    assert_eq!(to_latex(&summary), LATEX);
}

#[test]
fn latex_escapes_every_special_character() {
    assert_eq!(
        escape_latex(r"50% of $x_1 & {y} #2 ~a^b \c <d> |e|"),
        r"50\% of \$x\_1 \& \{y\} \#2 \textasciitilde{}a\textasciicircum{}b \textbackslash{}c \textless{}d\textgreater{} \textbar{}e\textbar{}"
    );
    let mut input = common::ablation();
    input.title = "R&D: 100%".to_string();
    input.rows[1].label = "plus_feat".to_string();
    input.metrics[0] = "acc_{top}".to_string();
    for replicate in input.rows.iter_mut().flat_map(|r| r.replicates.iter_mut()) {
        if let Some(metrics) = replicate.metrics.as_mut()
            && let Some(value) = metrics.remove("acc")
        {
            metrics.insert("acc_{top}".to_string(), value);
        }
    }
    let latex = to_latex(&summarize(&input).unwrap());
    assert!(latex.contains(r"\caption{R\&D: 100\%: mean"));
    assert!(latex.contains(r"Arm & Seeds & acc\_\{top\} & auc \\"));
    assert!(latex.contains(r"plus\_feat & 3 &"));
    // Only the leading comment line may hold the raw title.
    assert!(latex.lines().skip(1).all(|line| !line.contains("R&D")));
}

#[test]
fn csv_has_one_line_per_row_and_metric_at_full_precision() {
    let summary = summarize(&common::ablation()).unwrap();
    let csv = to_csv(&summary);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "arm,axes,metric,seeds,n,mean,ci_low,ci_high,diff_n,diff_mean,diff_low,diff_high,\
         diff_excludes_zero,is_baseline,missing"
    );
    assert_eq!(lines.len(), 1 + 4 * 2);
    let field = |line: &str, index: usize| line.split(',').nth(index).unwrap().to_string();
    // base acc: no difference columns.
    assert!(lines[1].starts_with("base,arm=base,acc,3,3,"));
    assert_eq!(field(lines[1], 8), "");
    assert_eq!(field(lines[1], 13), "true");
    let mean: f64 = field(lines[1], 5).parse().unwrap();
    let low: f64 = field(lines[1], 6).parse().unwrap();
    let high: f64 = field(lines[1], 7).parse().unwrap();
    assert!((mean - 0.72).abs() < 1e-12);
    assert!((high - mean - 0.049683).abs() < 1e-6 && (mean - low - 0.049683).abs() < 1e-6);
    // full acc: a difference whose interval excludes 0.
    assert!(lines[5].starts_with("full,arm=full,acc,3,3,"));
    assert_eq!(field(lines[5], 8), "3");
    let diff: f64 = field(lines[5], 9).parse().unwrap();
    assert!((diff - 0.09).abs() < 1e-12);
    assert_eq!(field(lines[5], 12), "true");
    // plus acc: n = 2, the reason quoted because it holds commas.
    assert!(lines[3].starts_with("plus,arm=plus,acc,3,2,"));
    assert!(lines[3].ends_with(",false,\"plus, seed 3: evaluate[arm=plus,seed=3] has not run\""));
    // single acc: n = 1 leaves the interval empty.
    assert!(lines[7].starts_with("single,arm=single,acc,1,1,0.65,,,1,"));
}

#[test]
fn json_holds_the_summary() {
    let summary = summarize(&common::ablation()).unwrap();
    let value: serde_json::Value = serde_json::from_str(&to_json(&summary).unwrap()).unwrap();
    assert_eq!(value["title"], "demo");
    assert_eq!(value["baseline"], "base");
    assert_eq!(value["confidence"], 0.95);
    let full_auc = &value["rows"][2]["cells"][1];
    assert_eq!(full_auc["metric"], "auc");
    assert_eq!(full_auc["estimate"]["n"], 2);
    assert_eq!(full_auc["difference"]["excludes_zero"], true);
    assert_eq!(full_auc["note"], 1);
    let single_acc = &value["rows"][3]["cells"][0];
    assert_eq!(single_acc["estimate"]["interval"], serde_json::Value::Null);
    assert_eq!(
        value["notes"][0],
        "plus, seed 3: evaluate[arm=plus,seed=3] has not run"
    );
}
