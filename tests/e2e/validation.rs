//! Every validation error exits with code 2 before anything runs, naming file, line and column.

use crate::support::*;

/// Runs `plan` on a pipeline text; returns stderr after checking exit code 2 and that nothing ran.
fn invalid(text: &str, extra: &[&str]) -> String {
    let project = Project::new();
    project.write("p.yaml", text);
    let mut args = vec!["run", "p.yaml"];
    args.extend_from_slice(extra);
    let output = project.umdflow(&args);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(project.journal().is_empty(), "nothing may run");
    assert!(
        !project.path(".umdflow").exists(),
        "no cache is created for an invalid pipeline"
    );
    err
}

const OK_STAGE: &str = "    kind: cmd\n    run: 'echo x >> \"$JOURNAL\"'\n";

#[test]
fn unknown_kind_lists_the_known_ones() {
    let err = invalid(
        "name: v\nstages:\n  a:\n    kind: trian\n    run: 'true'\n",
        &[],
    );
    assert!(
        err.contains("p.yaml:4:11: unknown stage kind `trian`; known kinds: cmd"),
        "{err}"
    );
}

#[test]
fn unknown_input_is_named() {
    let err = invalid(
        &format!("name: v\nstages:\n  a:\n{OK_STAGE}    inputs: [prepp]\n"),
        &[],
    );
    assert!(err.contains("p.yaml:6:14: unknown input `prepp`"), "{err}");
}

#[test]
fn a_cycle_is_printed() {
    let text = format!(
        "name: v\nstages:\n  a:\n{OK_STAGE}    inputs: [b]\n  b:\n{OK_STAGE}    inputs: [a]\n"
    );
    let err = invalid(&text, &[]);
    assert!(
        err.contains("p.yaml:3:3: the stages form a cycle: a -> b -> a"),
        "{err}"
    );
}

#[test]
fn a_reference_to_no_axis_is_pointed_at() {
    let text = format!(
        "name: v\nsweep:\n  ratio: [1]\nstages:\n  a:\n{OK_STAGE}    params: {{r: \"${{ratoi}}\"}}\n"
    );
    let err = invalid(&text, &[]);
    assert!(
        err.contains("p.yaml:8:17: `${ratoi}` names no axis; axes are: ratio"),
        "{err}"
    );
}

#[test]
fn wrong_types_are_reported_with_position() {
    let err = invalid(
        "name: v\nstages:\n  a:\n    kind: cmd\n    run: 'true'\n    inputs: 7\n",
        &[],
    );
    assert!(
        err.contains(
            "p.yaml:6:13: `stages.a.inputs`: invalid type: integer `7`, expected a sequence"
        ),
        "{err}"
    );
    let err = invalid(
        "name: v\nstages:\n  a:\n    kind: cmd\n    run: {x: 1}\n",
        &[],
    );
    assert!(
        err.contains("p.yaml:5:10: `stages.a.run`: wrong type"),
        "{err}"
    );
    let err = invalid(
        "name: v\nstages:\n  a:\n    kind: cmd\n    rnu: 'true'\n",
        &[],
    );
    assert!(err.contains("unknown field `rnu`"), "{err}");
    let err = invalid("name: v\nstages:\n  a:\n    kind: cmd\n", &[]);
    assert!(
        err.contains("p.yaml:3:3: stage `a` (a): a `cmd` stage needs `run:`"),
        "{err}"
    );
}

#[test]
fn an_empty_axis_is_refused() {
    let text = format!(
        "name: v\nsweep:\n  ratio: []\nstages:\n  a:\n{OK_STAGE}    params: {{r: \"${{ratio}}\"}}\n"
    );
    let err = invalid(&text, &[]);
    assert!(err.contains("p.yaml:3:10: axis `ratio` is empty"), "{err}");
    // The same from the command line names the --set.
    let text = format!(
        "name: v\nsweep:\n  ratio: [1]\nstages:\n  a:\n{OK_STAGE}    params: {{r: \"${{ratio}}\"}}\n"
    );
    let err = invalid(&text, &["--set", "sweep.ratio=[]"]);
    assert!(
        err.contains("p.yaml (--set sweep.ratio=[]): axis `ratio` is empty"),
        "{err}"
    );
}

#[test]
fn a_sweep_over_max_points_says_how_many() {
    let text = format!(
        "name: v\nseeds: 10\nsweep:\n  a: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n  b: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n  c: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n  d: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\nstages:\n  s:\n{OK_STAGE}    params: {{x: \"${{a}}${{b}}${{c}}${{d}}${{seed}}\"}}\n"
    );
    let err = invalid(&text, &[]);
    assert!(
        err.contains(
            "p.yaml:3:1: the sweep expands to 100000 points, more than --max-points 10000"
        ),
        "{err}"
    );
}

#[test]
fn a_missing_dep_and_bad_yaml_are_reported() {
    let err = invalid(
        &format!("name: v\nstages:\n  a:\n{OK_STAGE}    deps: [missing.py]\n"),
        &[],
    );
    assert!(
        err.contains("p.yaml:6:12: dependency `missing.py` of stage `a` cannot be read"),
        "{err}"
    );
    let err = invalid("name: v\nstages:\n  a: [\n", &[]);
    assert!(
        err.contains("p.yaml:") && err.contains("not valid YAML"),
        "{err}"
    );
}

#[test]
fn several_problems_are_reported_at_once() {
    let text = "name: v\nstages:\n  a:\n    kind: nope\n  b:\n    kind: cmd\n    run: 'true'\n    inputs: [zz]\n";
    let err = invalid(text, &[]);
    assert!(
        err.contains("unknown stage kind `nope`") && err.contains("unknown input `zz`"),
        "{err}"
    );
}

#[test]
fn a_usage_error_exits_2() {
    let project = Project::new();
    assert_eq!(project.umdflow(&["run"]).status.code(), Some(2));
    assert_eq!(project.umdflow(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn mapping_axes_need_names_and_the_fields_referenced() {
    let text = format!(
        "name: v\nsweep:\n  arm:\n    - {{name: a, lr: 1}}\n    - {{lr: 2}}\nstages:\n  s:\n{OK_STAGE}    params: {{x: \"${{arm.lrr}}\"}}\n"
    );
    let err = invalid(&text, &[]);
    assert!(
        err.contains("p.yaml:5:7: values of axis `arm` are mappings, so each needs a `name:`"),
        "{err}"
    );
    assert!(
        err.contains("p.yaml:10:17: `${arm.lrr}`: value `a` of axis `arm` has no field `lrr`"),
        "{err}"
    );
}
