//! Hostile pipeline files (issue 11, item 7): refused in milliseconds, before anything is
//! allocated for them, with an error that names the line and column.

use std::time::{Duration, Instant};

use crate::support::*;

/// Plans a pipeline file's bytes; returns stderr after checking exit code 2 within `limit`.
fn refused(bytes: &[u8], limit: Duration) -> String {
    let project = Project::new();
    std::fs::write(project.path("p.yaml"), bytes).unwrap();
    let started = Instant::now();
    let output = project.umdflow(&["plan", "p.yaml"]);
    let took = started.elapsed();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(took < limit, "took {took:?}: {err}");
    err
}

/// Process start included; each case takes milliseconds of umdflow's own time.
const FAST: Duration = Duration::from_secs(2);

#[test]
fn a_billion_seeds_is_refused_before_allocating() {
    let err = refused(
        b"name: p\nseeds: 1000000000\nstages:\n  a: {kind: cmd, run: 'true'}\n",
        FAST,
    );
    assert!(
        err.contains("p.yaml:2:8: `seeds: 1000000000` alone gives more than --max-points 10000"),
        "{err}"
    );
}

#[test]
fn deep_nesting_is_refused() {
    let text = format!(
        "name: p\nstages:\n  a: {{kind: cmd, run: 'true', params: {{x: {}{}}}}}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let err = refused(text.as_bytes(), FAST);
    // The scanner's own recursion limit or ours, whichever comes first.
    assert!(
        err.contains("p.yaml:3:")
            && (err.contains("nesting deeper than 64") || err.contains("recursion limit")),
        "{err}"
    );
}

#[test]
fn an_alias_bomb_is_refused() {
    let mut text = String::from("name: p\nbig: &a [");
    text.push_str(&vec!["x"; 20_000].join(", "));
    text.push_str("]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n");
    let err = refused(text.as_bytes(), FAST);
    assert!(
        err.contains("p.yaml:3:") && err.contains("aliases"),
        "{err}"
    );
}

#[test]
fn a_huge_file_is_refused() {
    let mut text = String::from("name: p\nstages:\n  a: {kind: cmd, run: 'true'}\n");
    while text.len() <= 2 << 20 {
        text.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    let err = refused(text.as_bytes(), FAST);
    assert!(
        err.contains("a pipeline file may have at most 1048576"),
        "{err}"
    );
    assert!(err.contains("p.yaml:"), "{err}");
}

#[test]
fn invalid_utf8_names_the_byte_offset() {
    let err = refused(b"name: p\nstages:\n  a: {kind: cmd, run: '\xff'}\n", FAST);
    assert!(
        err.contains("p.yaml:3:24: not UTF-8 text: invalid byte at byte offset 39"),
        "{err}"
    );
}

#[test]
fn a_second_document_is_located() {
    let err = refused(b"name: p\n---\nstages: {}\n", FAST);
    assert!(err.contains("p.yaml:2:1: a second YAML document"), "{err}");
}

#[test]
fn a_misindented_first_line_is_located() {
    let err = refused(b"  name: p\nstages:\n  a: {kind: cmd, run: 'true'}\n", FAST);
    assert!(err.contains("p.yaml:2:"), "{err}");
}

#[test]
fn presets_of_the_wrong_shape_are_located() {
    let base = "name: p\nstages:\n  a: {kind: cmd, run: 'true'}\n";
    let err = refused(format!("{base}presets: [ci]\n").as_bytes(), FAST);
    assert!(err.contains("p.yaml:4:10: `presets:` must map"), "{err}");
    let err = refused(format!("{base}presets:\n  ci: 3\n").as_bytes(), FAST);
    assert!(err.contains("p.yaml:5:7: `presets.ci` must map"), "{err}");
}
