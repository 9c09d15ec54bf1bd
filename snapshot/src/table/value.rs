//! [`Value`]: one cell of a row, as an engine stores it.

use std::fmt;

/// One cell of a row read from a snapshot or the live data.
///
/// These are SQLite's five storage classes; other engines map their types onto them (exact
/// numbers and times that fit no other class become [`Value::Text`]). Values read for display
/// only — previews, compare samples, conflicts — pass through this type; restores copy rows
/// inside the engine and never convert them.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit signed integer.
    Integer(i64),
    /// A 64-bit IEEE float.
    Real(f64),
    /// Text (invalid UTF-8 read from an engine is replaced with U+FFFD).
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl Value {
    /// Whether this is [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The integer, when this is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The float, when this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Real(f) => Some(*f),
            _ => None,
        }
    }

    /// The text, when this is text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The bytes, when this is a blob.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Blob(b) => Some(b),
            _ => None,
        }
    }
}

/// Longest text shown in full by `Display` (characters).
const SHOWN_CHARS: usize = 80;
/// Longest blob shown in full by `Display` (bytes).
const SHOWN_BYTES: usize = 32;

impl fmt::Display for Value {
    /// An SQL-literal-like form for messages: `NULL`, `42`, `0.1`, `'it''s'`, `x'00ff'`. Long
    /// text and blobs are cut with `…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Integer(i) => write!(f, "{i}"),
            Value::Real(x) => write!(f, "{x:?}"),
            Value::Text(s) => {
                let cut: String = s.chars().take(SHOWN_CHARS).collect();
                let more = if cut.len() < s.len() { "…" } else { "" };
                write!(f, "'{}{more}'", cut.replace('\'', "''"))
            }
            Value::Blob(b) => {
                f.write_str("x'")?;
                for byte in b.iter().take(SHOWN_BYTES) {
                    write!(f, "{byte:02x}")?;
                }
                if b.len() > SHOWN_BYTES {
                    f.write_str("…")?;
                }
                f.write_str("'")
            }
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Integer(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// Renders a key (one or more values) for messages: `42` or `(1, 'a')`.
pub(crate) fn show_key(key: &[Value]) -> String {
    match key {
        [one] => one.to_string(),
        many => {
            let parts: Vec<String> = many.iter().map(Value::to_string).collect();
            format!("({})", parts.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_literal_like_and_bounded() {
        assert_eq!(Value::Null.to_string(), "NULL");
        assert_eq!(Value::Integer(i64::MIN).to_string(), "-9223372036854775808");
        assert_eq!(Value::Real(1.0).to_string(), "1.0");
        assert_eq!(Value::Real(0.1).to_string(), "0.1");
        assert_eq!(Value::from("it's").to_string(), "'it''s'");
        assert_eq!(Value::Blob(vec![0, 255]).to_string(), "x'00ff'");
        let long = Value::from("é".repeat(100));
        assert_eq!(long.to_string(), format!("'{}…'", "é".repeat(80)));
        assert!(Value::Blob(vec![1; 100]).to_string().ends_with("…'"));
        assert_eq!(show_key(&[Value::Integer(42)]), "42");
        assert_eq!(show_key(&[Value::Integer(1), "a".into()]), "(1, 'a')");
        assert_eq!(Value::from(None::<i64>), Value::Null);
    }
}
