//! Where each effective value came from: the file and line, a variable, a flag, a default.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// Built in.
    Default,
    /// Derived from another value (e.g. the store beside the database).
    Derived {
        /// How.
        from: String,
    },
    /// The configuration file, at this line.
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
    },
    /// An environment variable.
    Env {
        /// Its name.
        var: String,
    },
    /// A command-line flag.
    Flag {
        /// The flag, e.g. `--db`.
        flag: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::Derived { from } => write!(f, "default ({from})"),
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Env { var } => write!(f, "env {var}"),
            Origin::Flag { flag } => write!(f, "flag {flag}"),
        }
    }
}

/// The layers of the configuration, lowest precedence first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Layer {
    File,
    Env,
    Flag,
}

/// The line of a file origin (0 for others).
pub(crate) fn line_of(origin: &Origin) -> usize {
    match origin {
        Origin::File { line, .. } => *line,
        _ => 0,
    }
}
