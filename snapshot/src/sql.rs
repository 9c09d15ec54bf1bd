//! Quoting for SQL text built by the engines: identifiers and string literals, the same in
//! SQLite, DuckDB and PostgreSQL.

/// Quotes an identifier: `"` around, inner `"` doubled. Safe for any name the engines accept.
#[cfg_attr(not(feature = "sql"), allow(dead_code))]
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal: `'` around, inner `'` doubled.
#[allow(dead_code)] // not every engine writes literals
pub(crate) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(ident(r#"a"b c"#), r#""a""b c""#);
        assert_eq!(literal("it's"), "'it''s'");
        // Backslashes are plain characters (PostgreSQL runs with standard_conforming_strings).
        assert_eq!(literal(r"it's \n"), r"'it''s \n'");
    }
}
