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

use crate::diagnostics::Invalid;
use crate::registry::Registry;
use crate::spec::{Design, Source};

mod axes;
mod design;
mod graph;
mod report_check;
mod template;

pub use template::{display_value, substitute};

use axes::{build_axes, is_identifier};
use design::design_points;
use graph::{find_cycle, topological};
use report_check::validate_report;
use template::{references, strings_in, substitute_text};

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
