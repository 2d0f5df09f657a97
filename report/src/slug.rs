//! File names and LaTeX labels from free text.

use std::collections::BTreeSet;

/// Lower-case ASCII letters and digits, other runs of characters as one `-`; `"x"` if empty.
pub(crate) fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() { "x".to_string() } else { out }
}

/// Hands out slugs that are unique within one report (`loss`, `loss-2`, ...).
#[derive(Default)]
pub(crate) struct UniqueNames {
    taken: BTreeSet<String>,
}

impl UniqueNames {
    pub(crate) fn take(&mut self, text: &str) -> String {
        let base = slug(text);
        let mut name = base.clone();
        let mut counter = 2;
        while !self.taken.insert(name.clone()) {
            name = format!("{base}-{counter}");
            counter += 1;
        }
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_plain_and_unique() {
        assert_eq!(slug("VQA accuracy (open)"), "vqa-accuracy-open");
        assert_eq!(slug("--Ünïcode__"), "n-code");
        assert_eq!(slug("ρ"), "x");
        let mut names = UniqueNames::default();
        assert_eq!(names.take("Loss"), "loss");
        assert_eq!(names.take("loss!"), "loss-2");
        assert_eq!(names.take("loss"), "loss-3");
    }
}
