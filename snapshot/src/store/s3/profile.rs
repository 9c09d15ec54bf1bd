//! Credentials and region of a profile of the AWS shared files (`~/.aws/credentials`,
//! `~/.aws/config`; `AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE`, `AWS_PROFILE`).
//!
//! `object_store` reads the standard variables but not these files, and the crates that do
//! (the AWS SDK's `aws-config`) bring a second HTTP stack and runtime; the files' format is
//! INI sections of `key = value` lines, read here in a few lines.

use std::path::PathBuf;

/// What a profile says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Profile {
    pub(crate) access_key: String,
    pub(crate) secret_key: String,
    pub(crate) session_token: Option<String>,
    pub(crate) region: Option<String>,
}

/// The keys of section `section` of an INI text.
fn section(text: &str, wanted: &[String]) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = wanted.iter().any(|w| w == name.trim());
            continue;
        }
        if inside && let Some((k, v)) = line.split_once('=') {
            out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    out
}

fn home_file(var: &str, name: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws").join(name)))
}

/// The profile `AWS_PROFILE` (else `default`) of the shared files, when they give keys.
pub(crate) fn profile_credentials() -> Option<Profile> {
    let name = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".to_string());
    let creds = std::fs::read_to_string(home_file("AWS_SHARED_CREDENTIALS_FILE", "credentials")?)
        .unwrap_or_default();
    let config = home_file("AWS_CONFIG_FILE", "config")
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    parse(&name, &creds, &config)
}

/// The profile `name` from the two files' texts.
fn parse(name: &str, creds: &str, config: &str) -> Option<Profile> {
    let mut keys = section(creds, &[name.to_string()]);
    keys.extend(section(
        config,
        &[format!("profile {name}"), name.to_string()],
    ));
    let get = |k: &str| {
        keys.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    Some(Profile {
        access_key: get("aws_access_key_id")?,
        secret_key: get("aws_secret_access_key")?,
        session_token: get("aws_session_token"),
        region: get("region"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_is_read_from_both_files() {
        let creds = "[default]\naws_access_key_id = A\naws_secret_access_key = S\n\n\
                     [ci]\n# comment\naws_access_key_id=CI\naws_secret_access_key = CS\n\
                     aws_session_token = T\n";
        let config = "[default]\nregion = eu-west-1\n[profile ci]\nregion = us-west-2\n";
        let p = parse("ci", creds, config).unwrap();
        assert_eq!(p.access_key, "CI");
        assert_eq!(p.secret_key, "CS");
        assert_eq!(p.session_token.as_deref(), Some("T"));
        assert_eq!(p.region.as_deref(), Some("us-west-2"));
        let d = parse("default", creds, config).unwrap();
        assert_eq!(
            (d.access_key.as_str(), d.region.as_deref()),
            ("A", Some("eu-west-1"))
        );
        assert_eq!(parse("nobody", creds, config), None);
    }
}
