//! PostgreSQL connection settings as people write them — a `postgres://` URL or a libpq
//! `key=value` string — checked without connecting, and shown without their password.

use std::str::FromStr;

/// Whether `text` is a PostgreSQL URL: it starts with `postgres://` or `postgresql://` (any
/// case). Such a value given as `--db` or `SNAPSHOT_DB` names a PostgreSQL database.
pub(crate) fn is_url(text: &str) -> bool {
    let t = text.trim_start().as_bytes();
    ["postgres://", "postgresql://"]
        .iter()
        .any(|p| t.len() >= p.len() && t[..p.len()].eq_ignore_ascii_case(p.as_bytes()))
}

/// PostgreSQL connection settings (a URL or a libpq `key=value` string) with the password
/// replaced by `***`, and the password itself (to scrub it from messages).
pub(crate) fn redact(text: &str) -> (String, Option<String>) {
    if is_url(text) {
        return redact_url(text);
    }
    redact_key_values(text)
}

/// `postgres://user:***@host/db?password=***`: the credentials end at the first `@` (as the
/// client parses them); query parameters named like a password are redacted too.
fn redact_url(text: &str) -> (String, Option<String>) {
    let (scheme, rest) = text.split_once("://").unwrap_or(("", text));
    let mut password = None;
    let mut out = format!("{scheme}://");
    let rest = match rest.split_once('@') {
        Some((creds, tail)) => {
            match creds.split_once(':') {
                Some((user, pw)) => {
                    password = Some(pw.to_string());
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str(creds),
            }
            out.push('@');
            tail
        }
        None => rest,
    };
    match rest.split_once('?') {
        Some((head, query)) => {
            out.push_str(head);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) if k.to_ascii_lowercase().contains("password") => {
                        password = password.clone().or_else(|| Some(v.to_string()));
                        format!("{k}=***")
                    }
                    _ => kv.to_string(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(rest),
    }
    (out, password.filter(|p| !p.is_empty()))
}

/// `host=h password=*** dbname=d`: libpq's `key = value` pairs, a value bare or in single
/// quotes with backslash escapes.
fn redact_key_values(text: &str) -> (String, Option<String>) {
    let mut out = String::with_capacity(text.len());
    let mut password = None;
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            out.push(c);
            chars.next();
            continue;
        }
        // The keyword, up to whitespace or `=`.
        let mut end = start;
        while let Some(&(i, c)) = chars.peek() {
            if c.is_whitespace() || c == '=' {
                break;
            }
            end = i + c.len_utf8();
            chars.next();
        }
        let keyword = &text[start..end];
        out.push_str(keyword);
        // Whitespace, `=`, whitespace.
        while let Some(&(_, c)) = chars.peek() {
            if c.is_whitespace() || c == '=' {
                out.push(c);
                chars.next();
            } else {
                break;
            }
        }
        // The value.
        let mut value = String::new();
        let mut raw = String::new();
        if chars.peek().is_some_and(|&(_, c)| c == '\'') {
            raw.push('\'');
            chars.next();
            while let Some((_, c)) = chars.next() {
                raw.push(c);
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            raw.push(n);
                            value.push(n);
                        }
                    }
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&(_, c)) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                raw.push(c);
                chars.next();
                if c == '\\' {
                    if let Some((_, n)) = chars.next() {
                        raw.push(n);
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        if keyword.to_ascii_lowercase().contains("password") {
            out.push_str("***");
            if !value.is_empty() {
                password = Some(value);
            }
        } else {
            out.push_str(&raw);
        }
    }
    (out, password)
}

/// `message` with every occurrence of the password of `settings` replaced by `***`.
pub(crate) fn scrub(message: &str, settings: &str) -> String {
    match redact(settings).1 {
        Some(pw) => message.replace(&pw, "***"),
        None => message.to_string(),
    }
}

/// Why `settings` cannot be PostgreSQL connection settings (the message carries no password).
pub(crate) fn check(settings: &str) -> std::result::Result<(), String> {
    let t = settings.trim();
    if t.is_empty() {
        return Err("the PostgreSQL settings are empty".into());
    }
    if let Some((scheme, _)) = t.split_once("://")
        && !is_url(t)
        && !scheme.contains(char::is_whitespace)
        && !scheme.contains('=')
    {
        return Err(format!(
            "a {scheme}:// URL is not a PostgreSQL URL (postgres:// or postgresql://)"
        ));
    }
    {
        if let Err(e) = ::postgres::Config::from_str(&normalize_scheme(t)) {
            let mut detail = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                detail.push_str(": ");
                detail.push_str(&c.to_string());
                cause = c.source();
            }
            return Err(format!(
                "cannot parse the PostgreSQL settings ({}; expected \
                 postgres://user[:password]@host[:port]/database or libpq key=value pairs)",
                scrub(&detail, t)
            ));
        }
    }
    Ok(())
}

/// The settings with a URL's scheme in lower case (the client only knows `postgres://` and
/// `postgresql://`).
pub(crate) fn normalize_scheme(settings: &str) -> String {
    let t = settings.trim();
    match t.split_once("://") {
        Some((scheme, rest)) if is_url(t) => {
            format!("{}://{rest}", scheme.to_ascii_lowercase())
        }
        _ => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls_and_key_value_strings() {
        assert_eq!(
            redact("postgres://app:p%40ss@h:1/d?sslmode=disable&password=x"),
            (
                "postgres://app:***@h:1/d?sslmode=disable&password=***".into(),
                Some("p%40ss".into())
            )
        );
        assert_eq!(redact("postgresql://app@h/d").0, "postgresql://app@h/d");
        assert_eq!(
            redact("host=h password='a b\\'c' user=u"),
            ("host=h password=*** user=u".into(), Some("a b'c".into()))
        );
        assert_eq!(
            redact("host = h password = secret").0,
            "host = h password = ***"
        );
        assert_eq!(scrub("x secret y", "password=secret"), "x *** y");
        assert!(is_url("  PostgreSQL://x"));
        assert!(!is_url("postgres.db"));
        assert_eq!(normalize_scheme("POSTGRES://u@h/d"), "postgres://u@h/d");
    }

    #[test]
    fn settings_are_checked_without_connecting() {
        assert!(check("mysql://h/d").is_err());
        assert!(check("  ").is_err());
        assert!(check("postgres://app@127.0.0.1:5432/db").is_ok());
        assert!(check("host=/run/pg port=5433 user=u dbname=d").is_ok());
        let e = check("postgres://app:s3cret@h:notaport/d").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
    }
}
