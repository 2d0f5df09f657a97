//! Sweep expansion: a validated pipeline file becomes stage instances.
//!
//! A stage is instantiated once per combination of the axes it uses, directly (`${axis}` in its
//! params, `run` or `deps`) or through its inputs. A stage that uses no axis exists once and is
//! shared by every point of the sweep.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};
use umdflow_stages::{RunSpec, StageDecl, StageKind};

use crate::diagnostics::{Invalid, Reporter};
use crate::registry::Registry;
use crate::spec::{Design, Seeds, Source};

pub const SEED_AXIS: &str = "seed";

/// What a stage refers to: a whole axis (`${arm}`) or one field of a mapping-valued axis
/// (`${arm.fea_mim}`). A stage varies over the distinct values of its references, so two arms that
/// agree on every field a stage reads share that stage's instance.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AxisRef {
    pub axis: usize,
    pub field: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Axis {
    pub name: String,
    pub values: Vec<Value>,
}

/// One stage of the file, after validation.
#[derive(Clone)]
pub struct Stage {
    pub name: String,
    pub kind: Arc<dyn StageKind>,
    /// Indices of the input stages, in the order of `inputs:`.
    pub inputs: Vec<usize>,
    /// The axis references this stage varies over, its own and its inputs' (sorted: file order,
    /// `seed` last).
    pub axes: Vec<AxisRef>,
    /// Its instances, in sweep order.
    pub instances: Vec<usize>,
}

/// One stage instance: a node of the DAG.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Readable id, e.g. `train[ratio=0.5,seed=1]`.
    pub id: String,
    pub stage: usize,
    /// `(reference, value)` for each axis reference the stage varies over, e.g. `("seed", 1)` or
    /// `("arm.fea_mim", false)`.
    pub assignment: Vec<(String, Value)>,
    /// Resolved params, defaults filled in by the kind.
    pub params: Map<String, Value>,
    pub run: Option<RunSpec>,
    /// Paths relative to the pipeline folder, as written (after substitution).
    pub deps: Vec<String>,
    /// Input instances, in the order of the stage's `inputs:`.
    pub inputs: Vec<usize>,
}

pub struct Expanded {
    pub name: String,
    pub file: PathBuf,
    pub dir: PathBuf,
    pub axes: Vec<Axis>,
    pub design: Design,
    /// The sweep points (seeds included), as a value index per axis.
    pub points: Vec<Vec<usize>>,
    /// `point_instances[stage][point]`: the instance of each stage at each point.
    pub point_instances: Vec<Vec<usize>>,
    pub stages: Vec<Stage>,
    pub instances: Vec<Instance>,
}

impl Expanded {
    pub fn stage_of(&self, instance: &Instance) -> &Stage {
        &self.stages[instance.stage]
    }
}

/// `0.5` -> `0.5`, `"adam"` -> `adam`: how a value shows in ids and in interpolated strings.
pub fn display_value(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Object(map) if map.get("name").is_some_and(Value::is_string) => {
            map["name"].as_str().unwrap_or_default().to_string()
        }
        other => other.to_string(),
    }
}

/// Names inside `${...}` in a string.
fn references(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                names.push(after[..end].trim().to_string());
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    names
}

/// Every string in a value, with its YAML path.
fn strings_in<'a>(value: &'a Value, path: String, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::String(text) => out.push((path, text)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                strings_in(item, format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                strings_in(item, format!("{path}.{key}"), out);
            }
        }
        _ => {}
    }
}

fn substitute_str(text: &str, assignment: &[(String, Value)]) -> Value {
    let lookup = |name: &str| -> Option<&Value> {
        if let Some((_, value)) = assignment.iter().find(|(label, _)| label == name) {
            return Some(value);
        }
        // `${arm.lr}` when the stage also varies over the whole `arm`.
        let (axis, field) = name.split_once('.')?;
        assignment
            .iter()
            .find(|(label, _)| label == axis)
            .and_then(|(_, value)| value.get(field))
    };
    // A string that is exactly `${axis}` takes the axis value with its type (0.5 stays a number).
    if let [name] = references(text).as_slice()
        && text.trim() == format!("${{{name}}}")
        && let Some(value) = lookup(name)
    {
        return value.clone();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                let name = after[..end].trim();
                match lookup(name) {
                    Some(value) => out.push_str(&display_value(value)),
                    None => out.push_str(&rest[start..start + 3 + end]),
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    Value::String(out)
}

pub fn substitute(value: &Value, assignment: &[(String, Value)]) -> Value {
    match value {
        Value::String(text) => substitute_str(text, assignment),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| substitute(v, assignment)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), substitute(v, assignment)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn substitute_text(text: &str, assignment: &[(String, Value)]) -> String {
    display_value(&substitute_str(text, assignment))
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Finds a cycle among stages (by index) and returns it as `a -> b -> a`.
fn find_cycle(names: &[String], inputs: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        node: usize,
        inputs: &[Vec<usize>],
        marks: &mut [Mark],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        marks[node] = Mark::Open;
        stack.push(node);
        for &next in &inputs[node] {
            match marks[next] {
                Mark::Open => {
                    let start = stack.iter().position(|&n| n == next).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next);
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(cycle) = visit(next, inputs, marks, stack) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks[node] = Mark::Done;
        None
    }
    let mut marks = vec![Mark::New; names.len()];
    for node in 0..names.len() {
        if marks[node] == Mark::New
            && let Some(mut cycle) = visit(node, inputs, &mut marks, &mut Vec::new())
        {
            // Print in data-flow order: an input before the stage that reads it.
            cycle.reverse();
            return Some(cycle);
        }
    }
    None
}

/// Stage indices with every stage after its inputs.
fn topological(inputs: &[Vec<usize>]) -> Vec<usize> {
    let mut order = Vec::with_capacity(inputs.len());
    let mut placed = vec![false; inputs.len()];
    while order.len() < inputs.len() {
        let before = order.len();
        for stage in 0..inputs.len() {
            if !placed[stage] && inputs[stage].iter().all(|&i| placed[i]) {
                placed[stage] = true;
                order.push(stage);
            }
        }
        if order.len() == before {
            break; // a cycle; reported elsewhere
        }
    }
    order
}

fn build_axes(source: &Source, reporter: &mut Reporter<'_>, max_points: usize) -> Vec<Axis> {
    let raw = &source.raw;
    let mut axes = Vec::new();
    for (name, values) in &raw.sweep.0 {
        let path = format!("sweep.{name}");
        if !is_identifier(name) {
            reporter.at_key(&path, format!("axis name `{name}` must start with a letter and use letters, digits, `_` or `-`"));
        } else if name == SEED_AXIS && raw.seeds.is_some() {
            reporter.at_key(
                &path,
                "`seed` is the replicate axis given by `seeds:`; rename this axis",
            );
        } else if values.is_empty() {
            reporter.at_value(
                &path,
                format!("axis `{name}` is empty: give at least one value"),
            );
        } else {
            let mut seen = BTreeSet::new();
            let mappings = values.iter().filter(|v| v.is_object()).count();
            if mappings > 0 {
                for (i, value) in values.iter().enumerate() {
                    if !value.get("name").is_some_and(Value::is_string) {
                        reporter.at_value(
                            &format!("{path}[{i}]"),
                            format!("values of axis `{name}` are mappings, so each needs a `name:` (used in instance ids)"),
                        );
                    }
                }
            }
            for (i, value) in values.iter().enumerate() {
                if !seen.insert(display_value(value)) {
                    reporter.at_value(
                        &format!("{path}[{i}]"),
                        format!("axis `{name}` lists {value} twice"),
                    );
                }
            }
        }
        axes.push(Axis {
            name: name.clone(),
            values: values.clone(),
        });
    }
    match &raw.seeds {
        None => {}
        Some(Seeds::Count(0)) => reporter.at_value(
            "seeds",
            "`seeds:` is 0: give a count of at least 1 or a list",
        ),
        Some(Seeds::List(list)) if list.is_empty() => {
            reporter.at_value("seeds", "`seeds:` is an empty list")
        }
        // Checked before the values are made: `seeds: 1000000000` must not allocate them.
        Some(Seeds::Count(n)) if *n > max_points as u64 => reporter.at_value(
            "seeds",
            format!("`seeds: {n}` alone gives more than --max-points {max_points} points; raise --max-points or use fewer seeds"),
        ),
        Some(Seeds::Count(n)) => axes.push(Axis {
            name: SEED_AXIS.into(),
            values: (0..*n).map(Value::from).collect(),
        }),
        Some(Seeds::List(list)) => {
            let mut seen = BTreeSet::new();
            for (i, seed) in list.iter().enumerate() {
                if !seen.insert(crate::keys::canonical_json(seed)) {
                    reporter.at_value(
                        &format!("seeds[{i}]"),
                        format!("seed {seed} is listed twice; replicates need distinct seeds"),
                    );
                }
            }
            axes.push(Axis {
                name: SEED_AXIS.into(),
                values: list.clone(),
            })
        }
    }
    axes
}

/// Sweep points as value indices per axis (the seed axis, if any, is last and always crossed).
fn design_points(
    source: &Source,
    axes: &[Axis],
    reporter: &mut Reporter<'_>,
    max_points: usize,
) -> Vec<Vec<usize>> {
    let has_seed = axes.last().is_some_and(|a| a.name == SEED_AXIS) && source.raw.seeds.is_some();
    let sweep_axes = if has_seed {
        &axes[..axes.len() - 1]
    } else {
        axes
    };
    let seed_count = if has_seed {
        axes[axes.len() - 1].values.len()
    } else {
        1
    };
    let design = source.raw.design;
    if design != Design::OneAtATime && source.raw.baseline.is_some() {
        reporter.at_key(
            "baseline",
            "`baseline:` is only used by `design: one-at-a-time`",
        );
    }
    let count: u128 = match design {
        Design::Grid => sweep_axes.iter().map(|a| a.values.len() as u128).product(),
        Design::Zip => {
            let lengths: BTreeSet<usize> = sweep_axes.iter().map(|a| a.values.len()).collect();
            if lengths.len() > 1 {
                let described: Vec<String> = sweep_axes
                    .iter()
                    .map(|a| format!("{} has {}", a.name, a.values.len()))
                    .collect();
                reporter.at_value(
                    "design",
                    format!(
                        "`design: zip` needs axes of equal length; {}",
                        described.join(", ")
                    ),
                );
                return Vec::new();
            }
            lengths.into_iter().next().unwrap_or(1) as u128
        }
        Design::OneAtATime => {
            1 + sweep_axes
                .iter()
                .map(|a| a.values.len().saturating_sub(1) as u128)
                .sum::<u128>()
        }
    } * seed_count as u128;
    if count > max_points as u128 {
        reporter.at_key(
            "sweep",
            format!("the sweep expands to {count} points, more than --max-points {max_points}; raise --max-points or shrink the sweep"),
        );
        return Vec::new();
    }

    let mut points: Vec<Vec<usize>> = match design {
        Design::Grid => {
            let mut points = vec![Vec::new()];
            for axis in sweep_axes {
                points = points
                    .into_iter()
                    .flat_map(|p| {
                        (0..axis.values.len()).map(move |i| {
                            let mut next = p.clone();
                            next.push(i);
                            next
                        })
                    })
                    .collect();
            }
            points
        }
        Design::Zip => {
            let n = sweep_axes.first().map(|a| a.values.len()).unwrap_or(1);
            (0..n).map(|i| vec![i; sweep_axes.len()]).collect()
        }
        Design::OneAtATime => {
            let Some(baseline) = &source.raw.baseline else {
                reporter.at_value(
                    "design",
                    "`design: one-at-a-time` needs `baseline:` giving a value for every axis",
                );
                return Vec::new();
            };
            for key in baseline.keys() {
                if !sweep_axes.iter().any(|a| &a.name == key) {
                    reporter.at_key(
                        &format!("baseline.{key}"),
                        format!("`{key}` is not a sweep axis"),
                    );
                }
            }
            let mut base = Vec::new();
            for axis in sweep_axes {
                match baseline.get(&axis.name) {
                    None => reporter.at_value(
                        "baseline",
                        format!("`baseline:` gives no value for axis `{}`", axis.name),
                    ),
                    Some(value) => match axis.values.iter().position(|v| {
                        v == value
                            || (v.is_object()
                                && value.is_string()
                                && display_value(v) == value.as_str().unwrap_or_default())
                    }) {
                        Some(i) => base.push(i),
                        None => reporter.at_value(
                            &format!("baseline.{}", axis.name),
                            format!(
                                "baseline value {value} is not one of the values of axis `{}`",
                                axis.name
                            ),
                        ),
                    },
                }
            }
            if base.len() != sweep_axes.len() {
                return Vec::new();
            }
            let mut points = vec![base.clone()];
            for (a, axis) in sweep_axes.iter().enumerate() {
                for i in 0..axis.values.len() {
                    if i != base[a] {
                        let mut point = base.clone();
                        point[a] = i;
                        points.push(point);
                    }
                }
            }
            points
        }
    };
    if has_seed {
        points = points
            .into_iter()
            .flat_map(|p| {
                (0..seed_count).map(move |s| {
                    let mut next = p.clone();
                    next.push(s);
                    next
                })
            })
            .collect();
    }
    points
}

/// The `report:` section names stages and axes that exist.
fn validate_report(source: &Source, names: &[String], axes: &[Axis], reporter: &mut Reporter<'_>) {
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

/// Validates the file and expands it into instances. Every problem found is reported at once.
pub fn expand(
    source: &Source,
    registry: &Registry,
    max_points: usize,
) -> Result<Expanded, Invalid> {
    let mut reporter = source.reporter();
    let raw = &source.raw;
    let names: Vec<String> = raw.stages.0.iter().map(|(name, _)| name.clone()).collect();
    if names.is_empty() {
        reporter.at_value(
            "stages",
            "`stages:` is empty: a pipeline needs at least one stage",
        );
    }

    // Kinds and inputs.
    let mut kinds = Vec::new();
    let mut inputs: Vec<Vec<usize>> = Vec::new();
    for (name, stage) in &raw.stages.0 {
        let path = format!("stages.{name}");
        if !is_identifier(name) {
            reporter.at_key(&path, format!("stage name `{name}` must start with a letter and use letters, digits, `_` or `-`"));
        }
        match registry.get(&stage.kind) {
            Some(kind) => kinds.push(Some(kind)),
            None => {
                reporter.at_value(
                    &format!("{path}.kind"),
                    format!(
                        "unknown stage kind `{}`; known kinds: {}",
                        stage.kind,
                        registry.names().join(", ")
                    ),
                );
                kinds.push(None);
            }
        }
        let mut own = Vec::new();
        for (i, input) in stage.inputs.iter().enumerate() {
            let input_path = format!("{path}.inputs[{i}]");
            match names.iter().position(|n| n == input) {
                Some(index) if own.contains(&index) => {
                    reporter.at_value(&input_path, format!("input `{input}` is listed twice"))
                }
                Some(index) => own.push(index),
                None => reporter.at_value(
                    &input_path,
                    format!(
                        "unknown input `{input}`; stages in this file: {}",
                        names.join(", ")
                    ),
                ),
            }
        }
        inputs.push(own);
    }
    if let Some(cycle) = find_cycle(&names, &inputs) {
        let described: Vec<&str> = cycle.iter().map(|&i| names[i].as_str()).collect();
        reporter.at_key(
            &format!("stages.{}", names[cycle[0]]),
            format!("the stages form a cycle: {}", described.join(" -> ")),
        );
    }

    // Axes, and the axes each stage names directly.
    let axes = build_axes(source, &mut reporter, max_points);
    let axis_names: Vec<&str> = axes.iter().map(|a| a.name.as_str()).collect();
    let mut direct: Vec<BTreeSet<AxisRef>> = vec![BTreeSet::new(); names.len()];
    for (s, (name, stage)) in raw.stages.0.iter().enumerate() {
        let path = format!("stages.{name}");
        let mut strings = Vec::new();
        for (key, value) in &stage.params {
            strings_in(value, format!("{path}.params.{key}"), &mut strings);
        }
        match &stage.run {
            Some(RunSpec::Shell(text)) => strings.push((format!("{path}.run"), text.as_str())),
            Some(RunSpec::Argv(argv)) => {
                for (i, arg) in argv.iter().enumerate() {
                    strings.push((format!("{path}.run[{i}]"), arg.as_str()));
                }
            }
            None => {}
        }
        for (i, dep) in stage.deps.iter().enumerate() {
            strings.push((format!("{path}.deps[{i}]"), dep.as_str()));
        }
        for (value_path, text) in strings {
            for reference in references(text) {
                let (axis_name, field) = match reference.split_once('.') {
                    Some((axis, field)) => (axis, Some(field.to_string())),
                    None => (reference.as_str(), None),
                };
                match axis_names.iter().position(|a| *a == axis_name) {
                    Some(axis) => {
                        if let Some(field) = &field
                            && let Some(missing) =
                                axes[axis].values.iter().find(|v| v.get(field).is_none())
                        {
                            reporter.at_value(
                                &value_path,
                                format!(
                                    "`${{{reference}}}`: value `{}` of axis `{axis_name}` has no field `{field}`",
                                    display_value(missing)
                                ),
                            );
                        }
                        direct[s].insert(AxisRef { axis, field });
                    }
                    None => {
                        let known = if axis_names.is_empty() {
                            "this file has no axes (`sweep:` or `seeds:`)".to_string()
                        } else {
                            format!("axes are: {}", axis_names.join(", "))
                        };
                        reporter.at_value(
                            &value_path,
                            format!("`${{{reference}}}` names no axis; {known}"),
                        );
                    }
                }
            }
        }
    }
    validate_report(source, &names, &axes, &mut reporter);
    let points = design_points(source, &axes, &mut reporter, max_points);
    if !reporter.is_clean() {
        return Err(Invalid(reporter.found));
    }
    for (a, axis) in axes.iter().enumerate() {
        if !direct.iter().any(|used| used.iter().any(|r| r.axis == a)) {
            tracing::warn!("axis `{}` is used by no stage", axis.name);
        }
    }

    // Which axes each stage varies over: its own plus its inputs'.
    let order = topological(&inputs);
    let mut used: Vec<BTreeSet<AxisRef>> = direct.clone();
    for &stage in &order {
        for &input in &inputs[stage] {
            let inherited = used[input].clone();
            used[stage].extend(inherited);
        }
        // A whole-axis reference covers its field references.
        let whole: BTreeSet<usize> = used[stage]
            .iter()
            .filter(|r| r.field.is_none())
            .map(|r| r.axis)
            .collect();
        used[stage].retain(|r| r.field.is_none() || !whole.contains(&r.axis));
    }

    let mut stages: Vec<Stage> = Vec::with_capacity(names.len());
    for (s, name) in names.iter().enumerate() {
        stages.push(Stage {
            name: name.clone(),
            kind: kinds[s].clone().expect("kinds were validated"),
            inputs: inputs[s].clone(),
            axes: used[s].iter().cloned().collect(),
            instances: Vec::new(),
        });
    }

    // Instances: one per distinct projection of the points onto a stage's axes.
    let mut instances: Vec<Instance> = Vec::new();
    let mut by_projection: Vec<HashMap<Vec<String>, usize>> = vec![HashMap::new(); names.len()];
    let mut point_instances: Vec<Vec<usize>> = vec![vec![0; points.len()]; names.len()];
    let project = |refs: &[AxisRef], point: &[usize]| -> Vec<(String, Value)> {
        refs.iter()
            .map(|r| {
                let value = &axes[r.axis].values[point[r.axis]];
                match &r.field {
                    None => (axes[r.axis].name.clone(), value.clone()),
                    Some(field) => (
                        format!("{}.{field}", axes[r.axis].name),
                        value.get(field).cloned().unwrap_or(Value::Null),
                    ),
                }
            })
            .collect()
    };
    let projection_key = |assignment: &[(String, Value)]| -> Vec<String> {
        assignment
            .iter()
            .map(|(_, v)| crate::keys::canonical_json(v))
            .collect()
    };
    for &s in &order {
        let (stage_name, raw_stage) = &raw.stages.0[s];
        let stage_axes = stages[s].axes.clone();
        let input_kinds: Vec<(String, String)> = inputs[s]
            .iter()
            .map(|&i| (names[i].clone(), stages[i].kind.name().to_string()))
            .collect();
        for (p, point) in points.iter().enumerate() {
            let assignment = project(&stage_axes, point);
            let projection = projection_key(&assignment);
            if let Some(&existing) = by_projection[s].get(&projection) {
                point_instances[s][p] = existing;
                continue;
            }
            let id = if assignment.is_empty() {
                stage_name.clone()
            } else {
                let parts: Vec<String> = assignment
                    .iter()
                    .map(|(k, v)| format!("{k}={}", display_value(v)))
                    .collect();
                format!("{stage_name}[{}]", parts.join(","))
            };
            let run = raw_stage.run.as_ref().map(|run| match run {
                RunSpec::Shell(text) => RunSpec::Shell(substitute_text(text, &assignment)),
                RunSpec::Argv(argv) => RunSpec::Argv(
                    argv.iter()
                        .map(|a| substitute_text(a, &assignment))
                        .collect(),
                ),
            });
            let params = match substitute(&Value::Object(raw_stage.params.clone()), &assignment) {
                Value::Object(map) => map,
                _ => Map::new(),
            };
            let decl = StageDecl {
                name: stage_name,
                run: run.as_ref(),
                inputs: &input_kinds,
            };
            let params = match stages[s].kind.resolve_params(&decl, params) {
                Ok(params) => params,
                Err(problems) => {
                    for problem in problems {
                        reporter.at_value(
                            &format!("stages.{stage_name}.{}", problem.field),
                            format!("stage `{stage_name}` ({}): {}", id, problem.message),
                        );
                    }
                    Map::new()
                }
            };
            let deps = raw_stage
                .deps
                .iter()
                .map(|d| substitute_text(d, &assignment))
                .collect();
            let input_instances = inputs[s].iter().map(|&i| point_instances[i][p]).collect();
            let index = instances.len();
            instances.push(Instance {
                id,
                stage: s,
                assignment,
                params,
                run,
                deps,
                inputs: input_instances,
            });
            by_projection[s].insert(projection, index);
            point_instances[s][p] = index;
            stages[s].instances.push(index);
        }
    }
    reporter.finish()?;
    Ok(Expanded {
        name: raw.name.clone(),
        file: source.file.clone(),
        dir: source.dir.clone(),
        axes,
        design: raw.design,
        points,
        point_instances,
        stages,
        instances,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_string_references_keep_their_type() {
        let assignment = vec![("ratio".to_string(), Value::from(0.5))];
        assert_eq!(
            substitute(&Value::from("${ratio}"), &assignment),
            Value::from(0.5)
        );
        assert_eq!(
            substitute(&Value::from("r_${ratio}_x"), &assignment),
            Value::from("r_0.5_x")
        );
        assert_eq!(
            substitute(&Value::from("${other}"), &assignment),
            Value::from("${other}")
        );
    }

    #[test]
    fn references_are_found() {
        assert_eq!(references("a ${x} b ${ y }"), vec!["x", "y"]);
        assert!(references("no refs, $HOME").is_empty());
    }

    #[test]
    fn cycles_are_printed_in_flow_order() {
        let names = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        // a reads c, b reads a, c reads b
        let inputs = vec![vec![2], vec![0], vec![1]];
        let cycle = find_cycle(&names, &inputs).unwrap();
        let described: Vec<&str> = cycle.iter().map(|&i| names[i].as_str()).collect();
        assert_eq!(described.first(), described.last());
        assert_eq!(described.len(), 4);
    }
}
