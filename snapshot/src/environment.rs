//! Detection of *ephemeral* hosts.
//!
//! Snapshots are written to a local directory. On a host whose disk is thrown away on
//! every restart or redeploy (a PaaS dyno, a serverless function, a CI runner, a store
//! directory on `tmpfs`, ...) such local snapshots are lost together with the data they
//! were meant to protect, so the snapshot manager disables itself there unless it has a
//! remote store. This module decides whether the current host is such a host and names
//! the [`Indicator`] it matched, so that the log can say *why* snapshots are off (or on).
//!
//! # Override
//!
//! The variable [`SNAPSHOT_EPHEMERAL`](Environment::OVERRIDE_VAR) beats every other rule:
//! `1`, `true`, `yes` or `on` (case-insensitive) force an ephemeral host; `0`, `false`,
//! `no` or `off` force a persistent one. An empty value counts as unset; any other value
//! is ignored with a warning and detection carries on with the rules below.
//!
//! # Indicators
//!
//! The rules are checked in this order; the first match wins. A variable matches when it
//! is set to a non-empty value unless the table says otherwise.
//!
//! | Order | Indicator                                 | Platform         |
//! |-------|-------------------------------------------|------------------|
//! | 1     | `SNAPSHOT_EPHEMERAL` (see above)          | explicit override |
//! | 2     | `STREAMLIT_SHARING_MODE`                  | Streamlit Cloud  |
//! | 3     | `STREAMLIT_SERVER_HEADLESS` equal to `true` | Streamlit Cloud |
//! | 4     | working directory under `/mount/src/`     | Streamlit Cloud  |
//! | 5     | `DYNO`                                    | Heroku           |
//! | 6     | `AWS_LAMBDA_FUNCTION_NAME`                | AWS Lambda       |
//! | 7     | `K_SERVICE`                               | Google Cloud Run |
//! | 8     | `VERCEL`                                  | Vercel           |
//! | 9     | `RENDER`                                  | Render           |
//! | 10    | `FLY_APP_NAME`                            | Fly.io           |
//! | 11    | `RAILWAY_ENVIRONMENT`                     | Railway          |
//! | 12    | `GITHUB_ACTIONS`                          | GitHub Actions   |
//! | 13    | `GITLAB_CI`                               | GitLab CI        |
//! | 14    | `CIRCLECI`                                | CircleCI         |
//! | 15    | `BUILDKITE`                               | Buildkite        |
//! | 16    | store directory on a `tmpfs` or `ramfs` mount | any          |
//!
//! The generic `CI` variable is deliberately **not** an indicator: test harnesses and
//! local scripts set it on machines whose disks are perfectly persistent.
//!
//! Only variable *names* are recorded in an [`Indicator`], never their values (some
//! platforms put secrets or internal identifiers in them).

use std::ffi::OsString;
use std::fmt;
use std::path::{Component, Path, PathBuf};

/// How a platform variable is matched.
#[derive(Debug, Clone, Copy)]
enum Match {
    /// The variable is set to a non-empty (not only whitespace) value.
    NonEmpty,
    /// The variable is set to exactly this value.
    Equals(&'static str),
}

/// One environment variable that betrays a platform.
#[derive(Debug, Clone, Copy)]
struct VarRule {
    name: &'static str,
    platform: &'static str,
    matches: Match,
}

impl VarRule {
    const fn set(name: &'static str, platform: &'static str) -> Self {
        Self {
            name,
            platform,
            matches: Match::NonEmpty,
        }
    }

    fn is_match(&self, vars: &dyn Fn(&str) -> Option<String>) -> bool {
        match (vars(self.name), self.matches) {
            (None, _) => false,
            (Some(value), Match::NonEmpty) => !value.trim().is_empty(),
            (Some(value), Match::Equals(expected)) => value == expected,
        }
    }
}

const STREAMLIT: &str = "Streamlit Cloud";

/// The variables checked before the working directory (the original Streamlit rules).
const STREAMLIT_VARS: &[VarRule] = &[
    VarRule::set("STREAMLIT_SHARING_MODE", STREAMLIT),
    VarRule {
        name: "STREAMLIT_SERVER_HEADLESS",
        platform: STREAMLIT,
        matches: Match::Equals("true"),
    },
];

/// Working directories that betray a platform: `(prefix, platform)`.
const WORKING_DIRS: &[(&str, &str)] = &[("/mount/src/", STREAMLIT)];

/// Variables of common ephemeral platforms, checked after the working directory.
///
/// The generic `CI` variable is deliberately absent: test harnesses and local scripts
/// set it on machines with persistent disks.
const PLATFORM_VARS: &[VarRule] = &[
    VarRule::set("DYNO", "Heroku"),
    VarRule::set("AWS_LAMBDA_FUNCTION_NAME", "AWS Lambda"),
    VarRule::set("K_SERVICE", "Google Cloud Run"),
    VarRule::set("VERCEL", "Vercel"),
    VarRule::set("RENDER", "Render"),
    VarRule::set("FLY_APP_NAME", "Fly.io"),
    VarRule::set("RAILWAY_ENVIRONMENT", "Railway"),
    VarRule::set("GITHUB_ACTIONS", "GitHub Actions"),
    VarRule::set("GITLAB_CI", "GitLab CI"),
    VarRule::set("CIRCLECI", "CircleCI"),
    VarRule::set("BUILDKITE", "Buildkite"),
];

/// File systems that live in memory only.
const MEMORY_FS_TYPES: &[&str] = &["tmpfs", "ramfs"];

/// Where the kernel lists the mounts seen by this process.
const PROC_MOUNTS: &str = "/proc/self/mounts";

/// Whether the host keeps local files across restarts, and why the answer was reached.
///
/// Obtain one with [`Environment::detect`] (the real process), [`Environment::detect_with`]
/// (explicit inputs, for tests), or force one with [`Environment::persistent`] /
/// [`Environment::ephemeral`]. Its [`Display`](fmt::Display) text is meant for the log,
/// e.g. `ephemeral host: Heroku (DYNO is set)` or `persistent host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    ephemeral: bool,
    indicator: Option<Indicator>,
    /// The resolved store directory, kept only for the display of a [`Indicator::Tmpfs`].
    store_dir: Option<PathBuf>,
}

impl Environment {
    /// The variable that overrides detection: `1`/`true`/`yes`/`on` force an ephemeral
    /// host, `0`/`false`/`no`/`off` a persistent one (case-insensitive).
    pub const OVERRIDE_VAR: &'static str = "SNAPSHOT_EPHEMERAL";

    /// Detects the environment of the running process.
    ///
    /// Reads the process environment, the current working directory and, when a
    /// `store_dir` is given, `/proc/self/mounts` (missing on non-Linux hosts, in which
    /// case the tmpfs rule never matches). See the [module docs](self) for the rules.
    pub fn detect(store_dir: Option<&Path>) -> Environment {
        let vars = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
        let cwd = std::env::current_dir().unwrap_or_default();
        let mounts = match store_dir {
            Some(_) => std::fs::read_to_string(PROC_MOUNTS).unwrap_or_default(),
            None => String::new(),
        };
        let env = Self::detect_with(&vars, &cwd, store_dir, &mounts);
        tracing::debug!(environment = %env, "detected host environment");
        env
    }

    /// Detects the environment from explicit inputs.
    ///
    /// * `vars` looks up an environment variable (`None` when unset),
    /// * `cwd` is the working directory (also used to make a relative `store_dir`
    ///   absolute),
    /// * `store_dir` is where snapshots would be written; it need not exist,
    /// * `mounts` is text in the `/proc/self/mounts` format.
    ///
    /// Apart from resolving `store_dir` against the file system (nearest existing
    /// ancestor, canonicalized), this reads nothing from the process. See the
    /// [module docs](self) for the rules and their order.
    pub fn detect_with(
        vars: &dyn Fn(&str) -> Option<String>,
        cwd: &Path,
        store_dir: Option<&Path>,
        mounts: &str,
    ) -> Environment {
        if let Some(env) = Self::from_override(vars) {
            return env;
        }
        if let Some(indicator) = Self::from_vars(STREAMLIT_VARS, vars) {
            return Self::found(indicator);
        }
        for &(prefix, platform) in WORKING_DIRS {
            if cwd.is_absolute() && cwd.starts_with(prefix) {
                return Self::found(Indicator::WorkingDirUnder { prefix, platform });
            }
        }
        if let Some(indicator) = Self::from_vars(PLATFORM_VARS, vars) {
            return Self::found(indicator);
        }
        if let Some(store_dir) = store_dir {
            let resolved = resolve_dir(cwd, store_dir);
            if let Some((mount_point, fs_type)) = mount_of(&resolved, mounts)
                && MEMORY_FS_TYPES.contains(&fs_type.as_str())
            {
                return Environment {
                    ephemeral: true,
                    indicator: Some(Indicator::Tmpfs {
                        mount_point,
                        fs_type,
                    }),
                    store_dir: Some(resolved),
                };
            }
        }
        Self::persistent()
    }

    /// An environment assumed to keep its disk across restarts (for tests, or when the
    /// application knows better than detection). It has no indicator.
    pub fn persistent() -> Environment {
        Environment {
            ephemeral: false,
            indicator: None,
            store_dir: None,
        }
    }

    /// An environment forced to be ephemeral, with [`Indicator::Declared`]`(reason)`.
    pub fn ephemeral(reason: impl Into<String>) -> Environment {
        Self::found(Indicator::Declared(reason.into()))
    }

    /// Whether local files are lost on restart or redeploy.
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// What decided the answer: the matched indicator of an ephemeral host, or
    /// [`Indicator::Override`] when the override forced a persistent one. `None` for a
    /// host found (or assumed) persistent without any indicator.
    pub fn indicator(&self) -> Option<&Indicator> {
        self.indicator.as_ref()
    }

    fn found(indicator: Indicator) -> Environment {
        Environment {
            ephemeral: true,
            indicator: Some(indicator),
            store_dir: None,
        }
    }

    fn from_override(vars: &dyn Fn(&str) -> Option<String>) -> Option<Environment> {
        let value = vars(Self::OVERRIDE_VAR)?;
        let ephemeral = match value.trim().to_ascii_lowercase().as_str() {
            "" => return None,
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => {
                tracing::warn!(
                    variable = Self::OVERRIDE_VAR,
                    value = %value,
                    "ignoring {}={value:?}: expected 1/true/yes/on or 0/false/no/off",
                    Self::OVERRIDE_VAR,
                );
                return None;
            }
        };
        Some(Environment {
            ephemeral,
            indicator: Some(Indicator::Override { value }),
            store_dir: None,
        })
    }

    fn from_vars(rules: &[VarRule], vars: &dyn Fn(&str) -> Option<String>) -> Option<Indicator> {
        rules
            .iter()
            .find(|rule| rule.is_match(vars))
            .map(|rule| Indicator::EnvVar {
                name: rule.name,
                platform: rule.platform,
            })
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.ephemeral {
            "ephemeral host"
        } else {
            "persistent host"
        })?;
        match (&self.indicator, &self.store_dir) {
            (None, _) => Ok(()),
            (
                Some(Indicator::Tmpfs {
                    mount_point,
                    fs_type,
                }),
                Some(store_dir),
            ) => write!(
                f,
                ": store dir {} is on {fs_type} mounted at {}",
                store_dir.display(),
                mount_point.display()
            ),
            (Some(indicator), _) => write!(f, ": {indicator}"),
        }
    }
}

/// The reason an [`Environment`] was found ephemeral (or forced persistent).
///
/// Its [`Display`](fmt::Display) text completes `ephemeral host: ...`, e.g.
/// `Heroku (DYNO is set)`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Indicator {
    /// [`Environment::OVERRIDE_VAR`] was set to a recognised value.
    Override {
        /// The value as found in the environment.
        value: String,
    },
    /// A platform's environment variable is set. Its value is deliberately not kept.
    EnvVar {
        /// The variable's name, e.g. `DYNO`.
        name: &'static str,
        /// The platform it betrays, e.g. `Heroku`.
        platform: &'static str,
    },
    /// The working directory lies under a platform's checkout directory.
    WorkingDirUnder {
        /// The directory prefix, e.g. `/mount/src/`.
        prefix: &'static str,
        /// The platform it betrays, e.g. `Streamlit Cloud`.
        platform: &'static str,
    },
    /// The store directory lies on an in-memory file system.
    Tmpfs {
        /// The mount point of that file system.
        mount_point: PathBuf,
        /// Its type: `tmpfs` or `ramfs`.
        fs_type: String,
    },
    /// The application declared the host ephemeral ([`Environment::ephemeral`]).
    Declared(String),
}

impl fmt::Display for Indicator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Indicator::Override { value } => {
                write!(f, "{}={value:?} (override)", Environment::OVERRIDE_VAR)
            }
            Indicator::EnvVar { name, platform } => write!(f, "{platform} ({name} is set)"),
            Indicator::WorkingDirUnder { prefix, platform } => {
                write!(f, "{platform} (working directory is under {prefix})")
            }
            Indicator::Tmpfs {
                mount_point,
                fs_type,
            } => write!(
                f,
                "store dir is on {fs_type} mounted at {}",
                mount_point.display()
            ),
            Indicator::Declared(reason) => write!(f, "{reason} (declared by the application)"),
        }
    }
}

/// Makes `dir` absolute against `cwd` and resolves symlinks in its longest existing
/// ancestor; the missing rest is appended lexically (`.` dropped, `..` pops).
fn resolve_dir(cwd: &Path, dir: &Path) -> PathBuf {
    let absolute = cwd.join(dir);
    let existing = absolute
        .ancestors()
        .find(|a| !a.as_os_str().is_empty() && a.try_exists().unwrap_or(false));
    let (mut resolved, rest) = match existing.and_then(|a| Some((a, a.canonicalize().ok()?))) {
        Some((ancestor, canonical)) => {
            let rest = absolute.strip_prefix(ancestor).unwrap_or(Path::new(""));
            (canonical, rest)
        }
        None => (PathBuf::new(), absolute.as_path()),
    };
    for component in rest.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                resolved.pop();
            }
            other => resolved.push(other),
        }
    }
    resolved
}

/// The mount (point, fs type) in `mounts` that contains `path`: the longest matching
/// mount point; among equal ones the last listed, which is the one on top.
fn mount_of(path: &Path, mounts: &str) -> Option<(PathBuf, String)> {
    let mut best: Option<(usize, PathBuf, String)> = None;
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        let (Some(_device), Some(mount_point), Some(fs_type)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let mount_point = unescape_mount_field(mount_point);
        if !mount_point.is_absolute() || !path.starts_with(&mount_point) {
            continue;
        }
        let depth = mount_point.components().count();
        if best.as_ref().is_none_or(|(d, _, _)| depth >= *d) {
            best = Some((depth, mount_point, fs_type.to_owned()));
        }
    }
    best.map(|(_, mount_point, fs_type)| (mount_point, fs_type))
}

/// Decodes the octal escapes (`\040` for a space, `\011`, `\012`, `\134`) that the
/// kernel uses in the fields of `/proc/self/mounts`.
fn unescape_mount_field(field: &str) -> PathBuf {
    let raw = field.as_bytes();
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\'
            && let Some(code) = raw.get(i + 1..i + 4).and_then(octal_byte)
        {
            bytes.push(code);
            i += 4;
        } else {
            bytes.push(raw[i]);
            i += 1;
        }
    }
    PathBuf::from(bytes_to_os_string(bytes))
}

/// Three octal digits as one byte (`None` if not octal or above `\377`).
fn octal_byte(digits: &[u8]) -> Option<u8> {
    digits.iter().try_fold(0u8, |acc, &d| {
        if (b'0'..=b'7').contains(&d) {
            acc.checked_mul(8)?.checked_add(d - b'0')
        } else {
            None
        }
    })
}

#[cfg(unix)]
fn bytes_to_os_string(bytes: Vec<u8>) -> OsString {
    use std::os::unix::ffi::OsStringExt;
    OsString::from_vec(bytes)
}

#[cfg(not(unix))]
fn bytes_to_os_string(bytes: Vec<u8>) -> OsString {
    OsString::from(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A host directory that certainly does not exist, so that resolution keeps it as is.
    const NOWHERE: &str = "/snapshot-env-test-nonexistent";

    fn detect(pairs: &[(&str, &str)], cwd: &str, store: Option<&str>, mounts: &str) -> Environment {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let vars = move |name: &str| map.get(name).cloned();
        Environment::detect_with(&vars, Path::new(cwd), store.map(Path::new), mounts)
    }

    fn detect_vars(pairs: &[(&str, &str)]) -> Environment {
        detect(pairs, "/home/app", None, "")
    }

    fn assert_env_var(name: &'static str, value: &str, platform: &'static str) {
        let env = detect_vars(&[(name, value)]);
        assert!(env.is_ephemeral(), "{name}={value} should be ephemeral");
        assert_eq!(
            env.indicator(),
            Some(&Indicator::EnvVar { name, platform }),
            "{name}"
        );
        assert_eq!(
            env.to_string(),
            format!("ephemeral host: {platform} ({name} is set)")
        );
    }

    #[test]
    fn nothing_set_is_persistent() {
        let env = detect_vars(&[]);
        assert!(!env.is_ephemeral());
        assert_eq!(env.indicator(), None);
        assert_eq!(env.to_string(), "persistent host");
        assert_eq!(env, Environment::persistent());
    }

    #[test]
    fn streamlit_sharing_mode() {
        assert_env_var("STREAMLIT_SHARING_MODE", "streamlit", "Streamlit Cloud");
        assert!(!detect_vars(&[("STREAMLIT_SHARING_MODE", "")]).is_ephemeral());
    }

    #[test]
    fn streamlit_server_headless_true_only() {
        assert_env_var("STREAMLIT_SERVER_HEADLESS", "true", "Streamlit Cloud");
        assert!(!detect_vars(&[("STREAMLIT_SERVER_HEADLESS", "false")]).is_ephemeral());
        assert!(!detect_vars(&[("STREAMLIT_SERVER_HEADLESS", "")]).is_ephemeral());
    }

    #[test]
    fn working_dir_under_mount_src() {
        let env = detect(&[], "/mount/src/my-app", None, "");
        assert!(env.is_ephemeral());
        assert_eq!(
            env.indicator(),
            Some(&Indicator::WorkingDirUnder {
                prefix: "/mount/src/",
                platform: "Streamlit Cloud"
            })
        );
        assert_eq!(
            env.to_string(),
            "ephemeral host: Streamlit Cloud (working directory is under /mount/src/)"
        );
    }

    #[test]
    fn working_dir_not_under_mount_srcx() {
        assert!(!detect(&[], "/mount/srcx/app", None, "").is_ephemeral());
        assert!(!detect(&[], "/mount", None, "").is_ephemeral());
        assert!(!detect(&[], "mount/src/app", None, "").is_ephemeral());
    }

    #[test]
    fn heroku() {
        assert_env_var("DYNO", "web.1", "Heroku");
    }

    #[test]
    fn aws_lambda() {
        assert_env_var("AWS_LAMBDA_FUNCTION_NAME", "my-fn", "AWS Lambda");
    }

    #[test]
    fn cloud_run() {
        assert_env_var("K_SERVICE", "svc", "Google Cloud Run");
    }

    #[test]
    fn vercel() {
        assert_env_var("VERCEL", "1", "Vercel");
    }

    #[test]
    fn render() {
        assert_env_var("RENDER", "true", "Render");
    }

    #[test]
    fn fly() {
        assert_env_var("FLY_APP_NAME", "app", "Fly.io");
    }

    #[test]
    fn railway() {
        assert_env_var("RAILWAY_ENVIRONMENT", "production", "Railway");
    }

    #[test]
    fn ci_runners() {
        assert_env_var("GITHUB_ACTIONS", "true", "GitHub Actions");
        assert_env_var("GITLAB_CI", "true", "GitLab CI");
        assert_env_var("CIRCLECI", "true", "CircleCI");
        assert_env_var("BUILDKITE", "true", "Buildkite");
    }

    #[test]
    fn generic_ci_is_not_an_indicator() {
        assert!(!detect_vars(&[("CI", "true")]).is_ephemeral());
    }

    #[test]
    fn empty_platform_variable_does_not_match() {
        assert!(!detect_vars(&[("DYNO", ""), ("VERCEL", "  ")]).is_ephemeral());
    }

    #[test]
    fn secret_values_are_not_kept() {
        let env = detect_vars(&[("AWS_LAMBDA_FUNCTION_NAME", "secret-name-123")]);
        assert!(!format!("{env:?}").contains("secret-name-123"));
        assert!(!env.to_string().contains("secret-name-123"));
    }

    #[test]
    fn override_on() {
        for value in ["1", "true", "TRUE", "Yes", "on", " on "] {
            let env = detect_vars(&[(Environment::OVERRIDE_VAR, value)]);
            assert!(env.is_ephemeral(), "{value:?}");
            assert_eq!(
                env.indicator(),
                Some(&Indicator::Override {
                    value: value.to_owned()
                })
            );
        }
        assert_eq!(
            detect_vars(&[(Environment::OVERRIDE_VAR, "1")]).to_string(),
            "ephemeral host: SNAPSHOT_EPHEMERAL=\"1\" (override)"
        );
    }

    #[test]
    fn override_off() {
        for value in ["0", "false", "No", "OFF"] {
            let env = detect_vars(&[(Environment::OVERRIDE_VAR, value)]);
            assert!(!env.is_ephemeral(), "{value:?}");
            assert_eq!(
                env.indicator(),
                Some(&Indicator::Override {
                    value: value.to_owned()
                })
            );
        }
        assert_eq!(
            detect_vars(&[(Environment::OVERRIDE_VAR, "0")]).to_string(),
            "persistent host: SNAPSHOT_EPHEMERAL=\"0\" (override)"
        );
    }

    #[test]
    fn override_invalid_is_ignored() {
        let env = detect_vars(&[(Environment::OVERRIDE_VAR, "maybe")]);
        assert_eq!(env, Environment::persistent());
        let env = detect_vars(&[(Environment::OVERRIDE_VAR, "maybe"), ("DYNO", "web.1")]);
        assert_eq!(
            env.indicator(),
            Some(&Indicator::EnvVar {
                name: "DYNO",
                platform: "Heroku"
            })
        );
        let env = detect_vars(&[(Environment::OVERRIDE_VAR, ""), ("DYNO", "web.1")]);
        assert!(env.is_ephemeral());
    }

    #[test]
    fn override_off_beats_platform() {
        let env = detect(
            &[(Environment::OVERRIDE_VAR, "off"), ("DYNO", "web.1")],
            "/mount/src/app",
            Some(NOWHERE),
            &format!("none {NOWHERE} tmpfs rw 0 0\n"),
        );
        assert!(!env.is_ephemeral());
        assert!(matches!(env.indicator(), Some(Indicator::Override { .. })));
    }

    #[test]
    fn rule_order() {
        // Streamlit variables come before the working directory, which comes before the
        // other platforms.
        let env = detect(
            &[("DYNO", "web.1"), ("STREAMLIT_SHARING_MODE", "1")],
            "/mount/src/app",
            None,
            "",
        );
        assert!(matches!(
            env.indicator(),
            Some(Indicator::EnvVar {
                name: "STREAMLIT_SHARING_MODE",
                ..
            })
        ));
        let env = detect(&[("DYNO", "web.1")], "/mount/src/app", None, "");
        assert!(matches!(
            env.indicator(),
            Some(Indicator::WorkingDirUnder { .. })
        ));
    }

    #[test]
    fn store_dir_on_tmpfs() {
        let store = format!("{NOWHERE}/snapshots");
        let mounts =
            format!("/dev/sda1 / ext4 rw,relatime 0 0\ntmpfs {NOWHERE} tmpfs rw,nosuid 0 0\n");
        let env = detect(&[], "/home/app", Some(&store), &mounts);
        assert!(env.is_ephemeral());
        assert_eq!(
            env.indicator(),
            Some(&Indicator::Tmpfs {
                mount_point: PathBuf::from(NOWHERE),
                fs_type: "tmpfs".into()
            })
        );
        assert_eq!(
            env.to_string(),
            format!("ephemeral host: store dir {store} is on tmpfs mounted at {NOWHERE}")
        );
        // Without a store dir the rule does not apply.
        assert!(!detect(&[], "/home/app", None, &mounts).is_ephemeral());
    }

    #[test]
    fn store_dir_on_ramfs() {
        let mounts = format!("none {NOWHERE} ramfs rw 0 0\n");
        let env = detect(&[], "/", Some(NOWHERE), &mounts);
        assert!(matches!(
            env.indicator(),
            Some(Indicator::Tmpfs { fs_type, .. }) if fs_type == "ramfs"
        ));
    }

    #[test]
    fn relative_store_dir_is_resolved_against_cwd() {
        let mounts = format!("tmpfs {NOWHERE}/run tmpfs rw 0 0\n");
        let cwd = format!("{NOWHERE}/app");
        let env = detect(&[], &cwd, Some("../run/./snaps"), &mounts);
        assert!(env.is_ephemeral(), "{env}");
        assert!(!detect(&[], &cwd, Some("snaps"), &mounts).is_ephemeral());
    }

    #[test]
    fn tmpfs_mount_point_with_escaped_space() {
        let mounts = format!("tmpfs {NOWHERE}/my\\040store tmpfs rw 0 0\n");
        let store = format!("{NOWHERE}/my store/snaps");
        let env = detect(&[], "/", Some(&store), &mounts);
        assert_eq!(
            env.indicator(),
            Some(&Indicator::Tmpfs {
                mount_point: PathBuf::from(format!("{NOWHERE}/my store")),
                fs_type: "tmpfs".into()
            })
        );
    }

    #[test]
    fn longest_mount_point_wins() {
        let root = format!("{NOWHERE}/root");
        let mounts = format!("tmpfs / tmpfs rw 0 0\n/dev/vdb {root}/data ext4 rw 0 0\n");
        let data = format!("{root}/data/snapshots");
        assert!(!detect(&[], "/", Some(&data), &mounts).is_ephemeral());
        // Outside /data the tmpfs root applies.
        let other = format!("{root}/var/snapshots");
        let env = detect(&[], "/", Some(&other), &mounts);
        assert_eq!(
            env.indicator(),
            Some(&Indicator::Tmpfs {
                mount_point: PathBuf::from("/"),
                fs_type: "tmpfs".into()
            })
        );
    }

    #[test]
    fn mount_prefix_is_component_wise() {
        let mounts = format!("tmpfs {NOWHERE}/tmp tmpfs rw 0 0\n");
        let store = format!("{NOWHERE}/tmpx/snaps");
        assert!(!detect(&[], "/", Some(&store), &mounts).is_ephemeral());
    }

    #[test]
    fn later_mount_on_same_point_wins() {
        let mounts = format!("tmpfs {NOWHERE} tmpfs rw 0 0\n/dev/vdb {NOWHERE} ext4 rw 0 0\n");
        assert!(!detect(&[], "/", Some(NOWHERE), &mounts).is_ephemeral());
    }

    #[test]
    fn malformed_mount_lines_are_skipped() {
        let mounts = format!("garbage\n\ntmpfs {NOWHERE} tmpfs rw 0 0\n");
        assert!(detect(&[], "/", Some(NOWHERE), &mounts).is_ephemeral());
    }

    #[test]
    fn unescape_octal() {
        assert_eq!(
            unescape_mount_field(r"/a\040b\011c\134d\0"),
            PathBuf::from("/a b\tc\\d\\0")
        );
        assert_eq!(unescape_mount_field(r"/x\999"), PathBuf::from(r"/x\999"));
    }

    #[test]
    fn persistent_constructor() {
        let env = Environment::persistent();
        assert!(!env.is_ephemeral());
        assert_eq!(env.indicator(), None);
        assert_eq!(env.to_string(), "persistent host");
    }

    #[test]
    fn ephemeral_constructor() {
        let env = Environment::ephemeral("container without volume");
        assert!(env.is_ephemeral());
        assert_eq!(
            env.indicator(),
            Some(&Indicator::Declared("container without volume".into()))
        );
        assert_eq!(
            env.to_string(),
            "ephemeral host: container without volume (declared by the application)"
        );
    }

    #[test]
    fn detect_on_this_machine_does_not_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        for store in [None, Some(dir.path())] {
            let env = Environment::detect(store);
            let text = env.to_string();
            assert!(
                text.starts_with("ephemeral host") || text.starts_with("persistent host"),
                "{text}"
            );
            assert_eq!(env.is_ephemeral(), text.starts_with("ephemeral host"));
        }
    }
}
