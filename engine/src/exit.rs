//! umdflow's exit codes, in one type so that the code and `docs/pipeline-reference.md` agree.

use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Everything asked for was done.
    Ok = 0,
    /// A stage failed, `verify` found damage, or another error (I/O, the cache) stopped the command.
    Failed = 1,
    /// The pipeline file or the command line is invalid; nothing ran (clap's usage errors use 2 too).
    Invalid = 2,
    /// Interrupted by Ctrl-C; completed stages stay cached.
    Interrupted = 130,
}

impl Exit {
    /// The numeric code, for `std::process::exit`.
    pub fn code(self) -> i32 {
        self as i32
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_ones() {
        assert_eq!(
            [Exit::Ok, Exit::Failed, Exit::Invalid, Exit::Interrupted].map(Exit::code),
            [0, 1, 2, 130]
        );
    }
}
