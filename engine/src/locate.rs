//! Finds where each value of a YAML file starts, so that errors found after parsing (an unknown
//! input, a `${name}` naming no axis) can still point at a line and column.
//!
//! Paths use the form of `serde_path_to_error`: `stages.train.inputs[0]`.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// Value positions by path; keys of mappings are recorded too, under `path` + `#key`.
#[derive(Debug, Default)]
pub struct Locator {
    positions: HashMap<String, Position>,
}

enum Frame {
    Mapping { path: String, key: Option<String> },
    Sequence { path: String, index: usize },
}

struct Builder {
    stack: Vec<Frame>,
    positions: HashMap<String, Position>,
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl Builder {
    /// The path of the node starting now, or None if the node is a mapping key.
    fn place(&mut self, scalar: Option<&str>, mark: Marker) -> Option<String> {
        let position = position_of(mark);
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Mapping { path, key }) => match key.take() {
                None => {
                    let name = scalar.unwrap_or("?").to_string();
                    self.positions
                        .insert(format!("{}#key", join(path, &name)), position);
                    *key = Some(name);
                    None
                }
                Some(name) => Some(join(path, &name)),
            },
            Some(Frame::Sequence { path, index }) => {
                let here = format!("{path}[{index}]");
                *index += 1;
                Some(here)
            }
        }
        .inspect(|path| {
            self.positions.insert(path.clone(), position);
        })
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(text, ..) => {
                self.place(Some(&text), mark);
            }
            Event::Alias(_) => {
                self.place(None, mark);
            }
            Event::MappingStart(..) => {
                if let Some(path) = self.place(None, mark) {
                    self.stack.push(Frame::Mapping { path, key: None });
                } else {
                    // A complex mapping key: keep the structure consistent.
                    self.stack.push(Frame::Mapping {
                        path: "?".into(),
                        key: None,
                    });
                }
            }
            Event::SequenceStart(..) => {
                let path = self.place(None, mark).unwrap_or_else(|| "?".into());
                self.stack.push(Frame::Sequence { path, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

/// Bounds on what a pipeline file may make the parsers do, so that a hostile or broken file
/// fails in milliseconds instead of taking seconds and gigabytes.
pub const MAX_DEPTH: usize = 64;
/// Nodes after every alias is expanded (real pipelines have a few hundred).
pub const MAX_NODES: u64 = 200_000;

/// Why a file was refused before it was deserialized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub position: Position,
    pub message: String,
}

fn position_of(mark: Marker) -> Position {
    Position {
        line: mark.line(),
        // yaml-rust2 counts columns from 0 despite its doc comment.
        column: mark.col() + 1,
    }
}

/// Counts nodes as aliases would expand them, remembering the expanded size of each anchor.
#[derive(Default)]
struct Expansion {
    /// `(anchor id, nodes so far)` of each open collection.
    open: Vec<(usize, u64)>,
    anchor_sizes: HashMap<usize, u64>,
    total: u64,
}

impl Expansion {
    fn add(&mut self, nodes: u64) {
        self.total = self.total.saturating_add(nodes);
        if let Some((_, count)) = self.open.last_mut() {
            *count = count.saturating_add(nodes);
        }
    }

    fn node(&mut self, event: &Event) {
        match event {
            Event::Scalar(_, _, anchor, _) => {
                if *anchor > 0 {
                    self.anchor_sizes.insert(*anchor, 1);
                }
                self.add(1);
            }
            Event::Alias(anchor) => {
                let size = self.anchor_sizes.get(anchor).copied().unwrap_or(1);
                self.add(size);
            }
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                self.add(1);
                self.open.push((*anchor, 1));
            }
            Event::MappingEnd | Event::SequenceEnd => {
                if let Some((anchor, count)) = self.open.pop() {
                    if anchor > 0 {
                        self.anchor_sizes.insert(anchor, count);
                    }
                    if let Some((_, parent)) = self.open.last_mut() {
                        *parent = parent.saturating_add(count - 1);
                    }
                }
            }
            _ => {}
        }
    }
}

impl Locator {
    /// Reads the file's structure with its positions, refusing (with the position) a syntax
    /// error, a second document, nesting deeper than [`MAX_DEPTH`] and more than [`MAX_NODES`]
    /// nodes once aliases are expanded. Runs before the deserializer, which has no such bounds.
    pub fn parse(text: &str) -> Result<Locator, Refused> {
        let mut builder = Builder {
            stack: Vec::new(),
            positions: HashMap::new(),
        };
        let mut expansion = Expansion::default();
        let mut documents = 0;
        let mut parser = Parser::new_from_str(text);
        loop {
            let (event, mark) = parser.next_token().map_err(|err| Refused {
                position: position_of(*err.marker()),
                message: format!("not valid YAML: {}", err.info()),
            })?;
            match &event {
                Event::StreamEnd => break,
                Event::DocumentStart => {
                    documents += 1;
                    if documents > 1 {
                        return Err(Refused {
                            position: position_of(mark),
                            message: "a second YAML document starts here; a pipeline file is one document (is a `---` line or a line indented less than its mapping left over?)".into(),
                        });
                    }
                }
                _ => {}
            }
            expansion.node(&event);
            if expansion.open.len() > MAX_DEPTH {
                return Err(Refused {
                    position: position_of(mark),
                    message: format!("nesting deeper than {MAX_DEPTH} levels"),
                });
            }
            if expansion.total > MAX_NODES {
                return Err(Refused {
                    position: position_of(mark),
                    message: format!(
                        "more than {MAX_NODES} values once aliases (`*name`) are expanded"
                    ),
                });
            }
            builder.on_event(event, mark);
        }
        Ok(Locator {
            positions: builder.positions,
        })
    }

    /// Where the value at `path` starts. For a path the file does not have (a missing field), the
    /// key of the closest enclosing entry, e.g. the stage's name.
    pub fn value(&self, path: &str) -> Option<Position> {
        if let Some(position) = self.positions.get(path) {
            return Some(*position);
        }
        let mut path = path;
        loop {
            // A top-level entry the file does not have: the start of the document.
            let Some(cut) = path.rfind(['.', '[']) else {
                return self.positions.get("").copied();
            };
            path = &path[..cut];
            if let Some(position) = self
                .positions
                .get(&format!("{path}#key"))
                .or_else(|| self.positions.get(path))
            {
                return Some(*position);
            }
        }
    }

    /// Where the key of the mapping entry at `path` is (for errors about the entry itself).
    pub fn key(&self, path: &str) -> Option<Position> {
        self.positions
            .get(&format!("{path}#key"))
            .copied()
            .or_else(|| self.value(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "name: x\nsweep:\n  ratio: [0.25, 0.5]\nstages:\n  train:\n    kind: cmd\n    inputs:\n      - prep\n    params: {n: 1}\n";

    #[test]
    fn values_and_keys_have_positions() {
        let locator = Locator::parse(TEXT).unwrap();
        assert_eq!(locator.value("name"), Some(Position { line: 1, column: 7 }));
        assert_eq!(
            locator.value("sweep.ratio[1]"),
            Some(Position {
                line: 3,
                column: 17
            })
        );
        assert_eq!(
            locator.key("stages.train"),
            Some(Position { line: 5, column: 3 })
        );
        assert_eq!(
            locator.value("stages.train.kind"),
            Some(Position {
                line: 6,
                column: 11
            })
        );
        assert_eq!(
            locator.value("stages.train.inputs[0]"),
            Some(Position { line: 8, column: 9 })
        );
        assert_eq!(
            locator.value("stages.train.params.n"),
            Some(Position {
                line: 9,
                column: 17
            })
        );
    }

    #[test]
    fn deep_nesting_is_refused_quickly_with_a_position() {
        let text = format!("name: {}{}", "[".repeat(100_000), "]".repeat(100_000));
        let started = std::time::Instant::now();
        let refused = Locator::parse(&text).unwrap_err();
        assert!(
            started.elapsed().as_millis() < 500,
            "{:?}",
            started.elapsed()
        );
        // The scanner's own recursion limit or ours, whichever comes first.
        assert!(
            refused.message.contains("nesting") || refused.message.contains("recursion limit"),
            "{}",
            refused.message
        );
        assert_eq!(refused.position.line, 1);
    }

    #[test]
    fn an_alias_bomb_is_refused_before_it_expands() {
        let mut text = String::from("a: &a [");
        text.push_str(&vec!["x"; 20_000].join(", "));
        text.push_str("]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n");
        let started = std::time::Instant::now();
        let refused = Locator::parse(&text).unwrap_err();
        assert!(
            started.elapsed().as_millis() < 500,
            "{:?}",
            started.elapsed()
        );
        assert!(refused.message.contains("aliases"), "{}", refused.message);
        assert_eq!(refused.position.line, 2);
        // A few aliases of a small anchor are fine.
        assert!(Locator::parse("a: &a [1, 2]\nb: [*a, *a]\n").is_ok());
    }

    #[test]
    fn a_second_document_is_refused_at_its_start() {
        let refused = Locator::parse("name: x\n---\nname: y\n").unwrap_err();
        assert_eq!(refused.position.line, 2, "{refused:?}");
    }

    #[test]
    fn unknown_paths_fall_back_to_the_parent() {
        let locator = Locator::parse(TEXT).unwrap();
        assert_eq!(
            locator.value("stages.train.params.missing"),
            locator.key("stages.train.params")
        );
        assert_eq!(
            locator.value("stages.train.run"),
            Some(Position { line: 5, column: 3 })
        );
    }
}
