//! Crash-test hooks in the commit path, in the manner of SQLite's and redb's crash tests.
//!
//! `UMDFLOW_FAILPOINT=NAME[@N][:panic]` makes the `N`th pass (default: the first) through the point
//! `NAME` abort the process, as a `kill -9` or power cut would stop it there (with `:panic`, it
//! panics instead). Unset, a point costs one check of a value read once per process. The crash
//! tests (`cache/tests/crash.rs`) hit every point in [`FAILPOINTS`] and then open the cache again.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every failpoint, in the order a commit passes them.
pub const FAILPOINTS: &[&str] = &[
    // Creating the index file (first open of a cache).
    "index-create:built",
    "index-create:synced",
    "index-create:linked",
    // Storing one output file as a blob.
    "blob:hashed",
    "blob:synced",
    "blob:read-only",
    "blob:renamed",
    // The rest of the commit.
    "commit:dirs-synced",
    "index:record-written",
    "index:stats-written",
    "index:history-written",
    "index:committed",
    "commit:staging-removed",
    // Forgetting damaged records.
    "index:forget-written",
];

struct Armed {
    name: String,
    nth: u64,
    panic: bool,
    hits: AtomicU64,
}

fn parse(spec: &str) -> Option<Armed> {
    let (spec, panic) = match spec.strip_suffix(":panic") {
        Some(rest) => (rest, true),
        None => (spec.strip_suffix(":abort").unwrap_or(spec), false),
    };
    let (name, nth) = match spec.split_once('@') {
        Some((name, nth)) => (name, nth.parse().ok()?),
        None => (spec, 1),
    };
    (!name.is_empty()).then(|| Armed {
        name: name.to_string(),
        nth,
        panic,
        hits: AtomicU64::new(0),
    })
}

static ARMED: OnceLock<Option<Armed>> = OnceLock::new();

/// Passes the failpoint `name`: stops the process here if the environment armed it.
pub(crate) fn hit(name: &str) {
    debug_assert!(FAILPOINTS.contains(&name), "undeclared failpoint {name}");
    let armed = ARMED.get_or_init(|| {
        std::env::var("UMDFLOW_FAILPOINT")
            .ok()
            .and_then(|spec| parse(&spec))
    });
    let Some(armed) = armed else { return };
    if armed.name != name || armed.hits.fetch_add(1, Ordering::SeqCst) + 1 != armed.nth {
        return;
    }
    if armed.panic {
        panic!("failpoint {name} hit");
    }
    eprintln!("umdflow: failpoint {name} hit, aborting");
    std::process::abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let armed = parse("blob:renamed@3:panic").unwrap();
        assert_eq!(
            (armed.name.as_str(), armed.nth, armed.panic),
            ("blob:renamed", 3, true)
        );
        let armed = parse("index:committed").unwrap();
        assert_eq!((armed.nth, armed.panic), (1, false));
        assert!(parse("x@notanumber").is_none());
        assert!(parse("").is_none());
    }
}
