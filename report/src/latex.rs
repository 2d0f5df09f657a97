//! `ablation.tex`: booktabs tables to `\input` into a paper (needs `\usepackage{booktabs}`).

use std::collections::BTreeSet;
use std::fmt::Write;

use crate::cell_text::{CellMarkup, CellText, difference_cell, mean_cell};
use crate::markdown::percent;
use crate::slug::slug;
use crate::summary::Summary;

/// Both tables as LaTeX `table` environments.
pub fn to_latex(summary: &Summary) -> String {
    let mut out = String::new();
    let label = slug(&summary.title);
    let _ = writeln!(
        out,
        "% umdflow report for {}. Needs \\usepackage{{booktabs}}.",
        one_line(&summary.title)
    );
    let caption = format!(
        "{}: mean $\\pm$ half-width of the {}\\% confidence interval over seeds (Student $t$).",
        escape(&summary.title),
        percent(summary.confidence)
    );
    let body: Vec<(String, Vec<CellText>)> = summary
        .rows
        .iter()
        .map(|row| {
            let cells = row.cells.iter().map(|cell| mean_cell(row, cell)).collect();
            (format!("{} & {}", escape(&row.label), row.seeds), cells)
        })
        .collect();
    let table_label = format!("tab:{label}-ablation");
    let spec = Table {
        caption: &caption,
        label: &table_label,
        metrics: &summary.metrics,
        with_seeds: true,
        notes: &summary.notes,
    };
    spec.write(&mut out, &body);
    if let Some(baseline) = &summary.baseline {
        let caption = format!(
            "{}: difference to the baseline ({}), paired by seed; mean $\\pm$ half-width of the \
             {}\\% confidence interval. $^{{*}}$ marks an interval that has width and excludes 0.",
            escape(&summary.title),
            escape(baseline),
            percent(summary.confidence)
        );
        let body: Vec<(String, Vec<CellText>)> = summary
            .rows
            .iter()
            .filter(|row| !row.is_baseline)
            .map(|row| {
                let cells = row
                    .cells
                    .iter()
                    .filter_map(|cell| difference_cell(row, cell))
                    .collect();
                (escape(&row.label), cells)
            })
            .collect();
        let table_label = format!("tab:{label}-difference");
        let spec = Table {
            caption: &caption,
            label: &table_label,
            with_seeds: false,
            ..spec
        };
        out.push('\n');
        spec.write(&mut out, &body);
    }
    out
}

struct Table<'a> {
    caption: &'a str,
    label: &'a str,
    metrics: &'a [String],
    with_seeds: bool,
    notes: &'a [String],
}

impl Table<'_> {
    /// One float: the tabular, then the notes its cells cite, in the order of their numbers.
    fn write(&self, out: &mut String, body: &[(String, Vec<CellText>)]) {
        let columns = format!(
            "l{}{}",
            if self.with_seeds { "r" } else { "" },
            "r".repeat(self.metrics.len())
        );
        let mut header = String::from("Arm");
        if self.with_seeds {
            header.push_str(" & Seeds");
        }
        for metric in self.metrics {
            let _ = write!(header, " & {}", escape(metric));
        }
        let _ = writeln!(out, "\\begin{{table}}[htbp]\n\\centering");
        let _ = writeln!(
            out,
            "\\caption{{{}}}\n\\label{{{}}}",
            self.caption, self.label
        );
        let _ = writeln!(out, "\\begin{{tabular}}{{{columns}}}\n\\toprule");
        let _ = writeln!(out, "{header} \\\\\n\\midrule");
        let mut cited = BTreeSet::new();
        for (start, cells) in body {
            let mut line = start.clone();
            for cell in cells {
                let _ = write!(line, " & {}", cell.render(&MARKUP));
                cited.extend(cell.note());
            }
            let _ = writeln!(out, "{line} \\\\");
        }
        let _ = writeln!(out, "\\bottomrule\n\\end{{tabular}}");
        if !cited.is_empty() {
            let _ = writeln!(out, "\\par\\smallskip\n{{\\footnotesize");
            for number in cited {
                if let Some(note) = self.notes.get(number - 1) {
                    let _ = writeln!(
                        out,
                        "\\textsuperscript{{{number}}}Not available: {}.\\par",
                        escape(note)
                    );
                }
            }
            let _ = writeln!(out, "}}");
        }
        let _ = writeln!(out, "\\end{{table}}");
    }
}

const MARKUP: CellMarkup = CellMarkup {
    missing: "---",
    plus_minus: " \\pm ",
    star: "^{*}",
    math: true,
    count: |n| format!("\\,(n={n})"),
    footnote: |n| format!("\\textsuperscript{{{n}}}"),
};

/// A comment line must not break: newlines would end the comment early.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// Escapes text for LaTeX's text mode.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\textbackslash{}"),
            '{' | '}' | '$' | '&' | '#' | '_' | '%' => {
                out.push('\\');
                out.push(c);
            }
            '~' => out.push_str("\\textasciitilde{}"),
            '^' => out.push_str("\\textasciicircum{}"),
            '<' => out.push_str("\\textless{}"),
            '>' => out.push_str("\\textgreater{}"),
            '|' => out.push_str("\\textbar{}"),
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}
