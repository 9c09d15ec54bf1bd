//! Choosing entries of a tree by glob, the same way for what a snapshot takes (include and
//! exclude) and what a restore puts back (`--path`): globs relative to the root, `*` and `?`
//! never crossing a `/` (as in a shell; `**/` for any depth), and a glob that names a
//! directory choosing everything below it.

use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// The globs `patterns` as one set.
///
/// # Errors
/// [`Error::InvalidInput`] (field `glob`) naming a pattern that does not parse.
pub(crate) fn globs(patterns: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let p = p.trim_start_matches("./").trim_end_matches('/');
        let glob = GlobBuilder::new(p)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| Error::invalid("glob", format!("{p:?}: {e}")))?;
        b.add(glob);
    }
    b.build().map_err(|e| Error::invalid("glob", e.to_string()))
}

/// Whether `rel` or a directory above it matches `set`.
pub(crate) fn selects(set: &GlobSet, rel: &Path) -> bool {
    rel.ancestors()
        .any(|a| !a.as_os_str().is_empty() && set.is_match(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_stay_in_one_directory_and_directories_choose_what_is_below() {
        let set = globs(&["csv/*.csv".into(), "json".into()]).expect("globs");
        assert!(selects(&set, Path::new("csv/a.csv")));
        assert!(!selects(&set, Path::new("csv/deep/a.csv")));
        assert!(selects(&set, Path::new("json/nested/deep.json")));
        assert!(!selects(&set, Path::new("notes.txt")));
        let any = globs(&["**/*.csv".into()]).expect("globs");
        assert!(selects(&any, Path::new("a.csv")) && selects(&any, Path::new("x/y/a.csv")));
        assert!(matches!(
            globs(&["[unclosed".into()]),
            Err(Error::InvalidInput { .. })
        ));
    }
}
