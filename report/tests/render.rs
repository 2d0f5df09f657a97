//! Files written by `render`: all present, non-empty, self-contained and deterministic.

mod common;

use std::fs;

use umdflow_report::{ReportError, render};

#[test]
fn writes_tables_plots_and_page() {
    let dir = tempfile::tempdir().unwrap();
    let written = render(&common::sweep(), dir.path()).unwrap();
    let names: Vec<String> = written
        .files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "ablation.md",
            "ablation.csv",
            "ablation.json",
            "ablation.tex",
            "metric-vqa-acc-vs-ratio.svg",
            "metric-vqa-acc-vs-ratio.png",
            "metric-recall-1-vs-ratio.svg",
            "metric-recall-1-vs-ratio.png",
            "curve-pre-training-loss.svg",
            "curve-pre-training-loss.png",
            "curve-gm-coord.svg",
            "curve-gm-coord.png",
            "report.html",
        ]
    );
    for path in written.files() {
        assert!(path.starts_with(dir.path()));
        let bytes = fs::read(path).unwrap();
        assert!(
            bytes.len() > 200,
            "{} has {} bytes",
            path.display(),
            bytes.len()
        );
    }
    for path in written
        .plots
        .iter()
        .filter(|p| p.extension().unwrap() == "png")
    {
        let bytes = fs::read(path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut pixels).unwrap();
        assert_eq!((reader.info().width, reader.info().height), (900, 540));
        // Drawn, not blank: a good share of pixels is not white.
        let inked = pixels.chunks(3).filter(|p| p != &[255, 255, 255]).count();
        assert!(
            inked > 5_000,
            "{}: {inked} non-white pixels",
            path.display()
        );
    }
    let svg = fs::read_to_string(dir.path().join("metric-vqa-acc-vs-ratio.svg")).unwrap();
    assert!(svg.contains("<polygon"), "the interval band is drawn");
    assert!(
        svg.contains("arm=mr-only"),
        "one line per group, labelled by its other axes"
    );
}

#[test]
fn page_is_self_contained() {
    let dir = tempfile::tempdir().unwrap();
    let written = render(&common::sweep(), dir.path()).unwrap();
    let html = fs::read_to_string(&written.html).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(!html.to_lowercase().contains("http"), "no URL of any kind");
    assert!(!html.contains("src="), "no loaded resources");
    assert!(!html.contains("<link"), "no style sheets");
    for (index, _) in html.match_indices("href=") {
        assert!(html[index..].starts_with("href=\"#"), "only in-page links");
    }
    assert_eq!(html.matches("<svg").count(), 4, "every chart inline");
    assert_eq!(html.matches("<table>").count(), 2);
    // The title is escaped, not markup.
    assert!(html.contains("<h1>ablation &lt;sweep&gt; &amp; 50% test: ablation report</h1>"));
}

#[test]
fn same_input_gives_identical_files() {
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    let a = render(&common::sweep(), first.path()).unwrap();
    let b = render(&common::sweep(), second.path()).unwrap();
    for (left, right) in a.files().iter().zip(b.files()) {
        assert_eq!(
            fs::read(left).unwrap(),
            fs::read(right).unwrap(),
            "{}",
            left.display()
        );
    }
}

#[test]
fn table_only_report_without_axis_or_curves() {
    let dir = tempfile::tempdir().unwrap();
    let written = render(&common::ablation(), dir.path()).unwrap();
    assert!(written.plots.is_empty());
    let html = fs::read_to_string(&written.html).unwrap();
    assert!(html.contains(
        "<li id=\"note-1\">Not available: plus, seed 3: evaluate[arm=plus,seed=3] has not run.</li>"
    ));
    assert!(html.contains("0.755 ± 0.064 (<i>n</i>=2)<sup><a href=\"#note-1\">1</a></sup>"));
    assert!(html.contains(
        "<td>+0.095 ± 0.064 (<i>n</i>=2) <b>*</b><sup><a href=\"#note-2\">2</a></sup></td>"
    ));
}

#[test]
fn bad_axis_values_and_curve_points_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = common::sweep();
    input.rows[2].axes[1].1 = "high".into();
    let error = render(&input, dir.path()).unwrap_err().to_string();
    assert!(
        error.contains("row \"full ratio=0.75\" has ratio=\"high\""),
        "{error}"
    );

    let mut input = common::sweep();
    input.x_axis = Some("lr".into());
    assert!(matches!(
        render(&input, dir.path()).unwrap_err(),
        ReportError::NoRowHasAxis { .. }
    ));

    let mut input = common::sweep();
    input.curves[0].series[1].points[7].1 = f64::NAN;
    let error = render(&input, dir.path()).unwrap_err().to_string();
    assert!(
        error.contains("curve \"Pre-training loss\", series \"seed 2\", point 7"),
        "{error}"
    );
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}
