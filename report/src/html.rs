//! `report.html`: tables, notes and inline SVG charts in one file with no external resources.

use std::fmt::Write;

use crate::cell_text::{CellMarkup, CellText, difference_cell, mean_cell};
use crate::markdown::percent;
use crate::summary::Summary;

/// A chart ready for the page.
pub(crate) struct InlineFigure<'a> {
    pub caption: &'a str,
    pub svg: &'a str,
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;\
color:#222}table{border-collapse:collapse;margin:1em 0}th,td{padding:.3em .8em;text-align:right;\
white-space:nowrap}th:first-child,td:first-child{text-align:left}thead th{border-bottom:1px solid \
#444}table{border-top:2px solid #222;border-bottom:2px solid #222}figure{margin:2em 0}\
figure svg{max-width:100%;height:auto}figcaption{color:#555;font-size:.9em}.notes{font-size:.9em}";

/// The whole page.
pub(crate) fn to_html(summary: &Summary, figures: &[InlineFigure]) -> String {
    let mut out = String::new();
    let title = escape(&summary.title);
    let _ = writeln!(out, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>");
    let _ = writeln!(out, "<meta charset=\"utf-8\">");
    let _ = writeln!(out, "<title>{title}: ablation report</title>");
    let _ = writeln!(out, "<style>{STYLE}</style>\n</head>\n<body>");
    let _ = writeln!(out, "<h1>{title}: ablation report</h1>");
    let _ = writeln!(
        out,
        "<p>Mean ± half-width of the {}% confidence interval over seeds (Student t, n − 1 degrees \
         of freedom). <i>n</i> is shown where only some of the row's seeds have a value, and for \
         a single seed.</p>",
        percent(summary.confidence)
    );
    let rows: Vec<(Vec<String>, Vec<CellText>)> = summary
        .rows
        .iter()
        .map(|row| {
            let cells = row.cells.iter().map(|cell| mean_cell(row, cell)).collect();
            (vec![escape(&row.label), row.seeds.to_string()], cells)
        })
        .collect();
    table(&mut out, &["Arm", "Seeds"], &summary.metrics, &rows);
    if let Some(baseline) = &summary.baseline {
        let _ = writeln!(
            out,
            "<h2>Difference to the baseline ({})</h2>",
            escape(baseline)
        );
        let _ = writeln!(
            out,
            "<p>Paired by seed: mean ± half-width of the {}% confidence interval of (row − \
             baseline). * marks an interval that has width and excludes 0.</p>",
            percent(summary.confidence)
        );
        let rows: Vec<(Vec<String>, Vec<CellText>)> = summary
            .rows
            .iter()
            .filter(|row| !row.is_baseline)
            .map(|row| {
                let cells = row
                    .cells
                    .iter()
                    .filter_map(|cell| difference_cell(row, cell))
                    .collect();
                (vec![escape(&row.label)], cells)
            })
            .collect();
        table(&mut out, &["Arm"], &summary.metrics, &rows);
    }
    if !summary.notes.is_empty() {
        let _ = writeln!(out, "<ol class=\"notes\">");
        for (index, note) in summary.notes.iter().enumerate() {
            let _ = writeln!(
                out,
                "<li id=\"note-{}\">Not available: {}.</li>",
                index + 1,
                escape(note)
            );
        }
        let _ = writeln!(out, "</ol>");
    }
    if !figures.is_empty() {
        let _ = writeln!(out, "<h2>Figures</h2>");
    }
    for figure in figures {
        let _ = writeln!(
            out,
            "<figure>\n{}\n<figcaption>{}</figcaption>\n</figure>",
            inline_svg(figure.svg),
            escape(figure.caption)
        );
    }
    let _ = writeln!(out, "</body>\n</html>");
    out
}

fn table(
    out: &mut String,
    leading: &[&str],
    metrics: &[String],
    rows: &[(Vec<String>, Vec<CellText>)],
) {
    let _ = write!(out, "<table>\n<thead><tr>");
    for name in leading {
        let _ = write!(out, "<th>{name}</th>");
    }
    for metric in metrics {
        let _ = write!(out, "<th>{}</th>", escape(metric));
    }
    let _ = writeln!(out, "</tr></thead>\n<tbody>");
    for (first, cells) in rows {
        let _ = write!(out, "<tr>");
        for text in first {
            let _ = write!(out, "<td>{text}</td>");
        }
        for cell in cells {
            let _ = write!(out, "<td>{}</td>", cell.render(&MARKUP));
        }
        let _ = writeln!(out, "</tr>");
    }
    let _ = writeln!(out, "</tbody>\n</table>");
}

const MARKUP: CellMarkup = CellMarkup {
    missing: "—",
    plus_minus: " ± ",
    star: " <b>*</b>",
    math: false,
    count: |n| format!(" (<i>n</i>={n})"),
    footnote: |n| format!("<sup><a href=\"#note-{n}\">{n}</a></sup>"),
};

/// An SVG document as an element of the page: without the XML declaration, and without the
/// namespace attribute, which HTML5 implies for `<svg>` (and which is the page's only URL).
fn inline_svg(svg: &str) -> String {
    let body = match svg.find("<svg") {
        Some(start) => &svg[start..],
        None => svg,
    };
    body.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)
}

/// Escapes text for HTML element content and double-quoted attributes.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}
