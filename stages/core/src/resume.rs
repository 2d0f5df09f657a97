//! Resuming an interrupted instance: the folder the engine keeps for it across failures, and how
//! often a training kind writes a checkpoint there.
//!
//! The engine gives every running instance a folder of its own (`<cache>/resume/<key>/`) that
//! survives a failure, a crash, Ctrl-C and a time-limit kill, and is removed once the key commits.
//! A kind that trains writes its checkpoint there and, when it finds one on its next attempt,
//! continues from it instead of starting over. What it writes there is never part of the output.

use std::path::Path;
use std::time::Duration;

/// The resume folder of a running instance.
#[derive(Debug, Clone, Copy)]
pub struct Resume<'a> {
    /// Kept across attempts at the same key; empty on the first one.
    pub dir: &'a Path,
    /// The instance's key: a checkpoint records it, so one found elsewhere is never trusted.
    pub key: &'a str,
}

/// How often a training kind writes a checkpoint (`checkpoint_every`): by wall time, by optimiser
/// steps, or never. It cannot change a result, so it is never part of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Time(Duration),
    Steps(u64),
    Off,
}

/// The default: a checkpoint every ten minutes of training. By time rather than steps because a
/// step's time varies by more than an order of magnitude (0.35 s for `tiny` and 7.6 s for `small`
/// on the 2-core CPU of docs/benchmarks.md): ten minutes bounds the work a kill can lose whatever
/// the model and device, while a checkpoint (up to 16 bytes per parameter: f32 weights, two AdamW
/// moments, the EMA target) is written once per interval.
pub const DEFAULT_INTERVAL: &str = "10m";

impl Interval {
    /// Reads `30s`, `10m`, `2h`, `500 steps` (or `500steps`) and `off`.
    pub fn parse(text: &str) -> Result<Interval, String> {
        let text = text.trim();
        let expected = || {
            format!(
                "`{text}` is not a checkpoint interval; expected a duration such as `90s`, `10m` \
                 or `1h`, a step count such as `500 steps`, or `off`"
            )
        };
        if text == "off" {
            return Ok(Interval::Off);
        }
        if let Some(count) = text.strip_suffix("steps") {
            let steps: u64 = count.trim().parse().map_err(|_| expected())?;
            return if steps == 0 {
                Err(format!(
                    "`{text}`: a checkpoint every 0 steps; use `off` for none"
                ))
            } else {
                Ok(Interval::Steps(steps))
            };
        }
        let (number, unit) = text.split_at(text.len().saturating_sub(1));
        let seconds_per_unit = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => return Err(expected()),
        };
        let count: u64 = number.trim().parse().map_err(|_| expected())?;
        if count == 0 {
            return Err(format!(
                "`{text}`: a checkpoint every 0 seconds; use `off` for none"
            ));
        }
        Ok(Interval::Time(Duration::from_secs(
            count * seconds_per_unit,
        )))
    }

    /// Whether a checkpoint is due after `steps_done` steps, `since_last` after the last one.
    pub fn due(self, steps_done: u64, since_last: Duration) -> bool {
        match self {
            Interval::Time(every) => since_last >= every,
            Interval::Steps(every) => steps_done.is_multiple_of(every),
            Interval::Off => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse_and_bad_ones_say_what_was_expected() {
        assert_eq!(
            Interval::parse("10m"),
            Ok(Interval::Time(Duration::from_secs(600)))
        );
        assert_eq!(
            Interval::parse("90s"),
            Ok(Interval::Time(Duration::from_secs(90)))
        );
        assert_eq!(Interval::parse("500 steps"), Ok(Interval::Steps(500)));
        assert_eq!(Interval::parse("3steps"), Ok(Interval::Steps(3)));
        assert_eq!(Interval::parse("off"), Ok(Interval::Off));
        for bad in ["10", "ten m", "0 steps", "0s", "5 epochs", ""] {
            let err = Interval::parse(bad).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn due_by_steps_or_time() {
        let zero = Duration::ZERO;
        assert!(Interval::Steps(3).due(6, zero));
        assert!(!Interval::Steps(3).due(7, Duration::from_secs(9999)));
        assert!(Interval::Time(Duration::from_secs(60)).due(1, Duration::from_secs(60)));
        assert!(!Interval::Time(Duration::from_secs(60)).due(1, Duration::from_secs(59)));
        assert!(!Interval::Off.due(1, Duration::from_secs(9999)));
    }
}
