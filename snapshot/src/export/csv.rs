//! The CSV dialect of exports: RFC 4180 with NULL told apart from the empty string.

use std::io::{BufRead, Write};

use base64::Engine as _;

use crate::error::{Error, Result};
use crate::export::RowWriter;
use crate::export::reader::{Cell, ColumnSchema};

pub(crate) struct CsvWriter<'w> {
    out: &'w mut dyn Write,
    line: Vec<u8>,
}

impl<'w> CsvWriter<'w> {
    pub(crate) fn new(out: &'w mut dyn Write) -> Self {
        CsvWriter {
            out,
            line: Vec::with_capacity(256),
        }
    }

    fn flush_line(&mut self) -> Result<()> {
        self.line.push(b'\n');
        self.out
            .write_all(&self.line)
            .map_err(|e| Error::io("write csv", "export", e))?;
        self.line.clear();
        Ok(())
    }
}

/// Appends a text field, quoted when it is empty or holds a separator, quote, CR or LF, or
/// leading/trailing white space (which some readers trim).
fn push_text(line: &mut Vec<u8>, s: &str) {
    let needs = s.is_empty()
        || s.bytes().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
        || s.starts_with(char::is_whitespace)
        || s.ends_with(char::is_whitespace);
    if !needs {
        line.extend_from_slice(s.as_bytes());
        return;
    }
    line.push(b'"');
    for b in s.bytes() {
        if b == b'"' {
            line.push(b'"');
        }
        line.push(b);
    }
    line.push(b'"');
}

/// A float as text that reads back to the same bits, always recognisable as a float.
pub(crate) fn float_text(f: f64) -> String {
    format!("{f:?}")
}

impl RowWriter for CsvWriter<'_> {
    fn header(&mut self, columns: &[ColumnSchema]) -> Result<()> {
        for (i, c) in columns.iter().enumerate() {
            if i > 0 {
                self.line.push(b',');
            }
            push_text(&mut self.line, &c.name);
        }
        self.flush_line()
    }

    fn row(&mut self, cells: &[Cell<'_>]) -> Result<()> {
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                self.line.push(b',');
            }
            match c {
                Cell::Null => {}
                Cell::Bool(b) => self
                    .line
                    .extend_from_slice(if *b { b"true" } else { b"false" }),
                Cell::Int(n) => self.line.extend_from_slice(n.to_string().as_bytes()),
                Cell::UInt(n) => self.line.extend_from_slice(n.to_string().as_bytes()),
                Cell::Number(s) => self.line.extend_from_slice(s.as_bytes()),
                Cell::Float(f) => self.line.extend_from_slice(float_text(*f).as_bytes()),
                Cell::Text(s) | Cell::Other(s) => push_text(&mut self.line, s),
                Cell::Blob(b) => {
                    let enc = base64::engine::general_purpose::STANDARD.encode(b);
                    if enc.is_empty() {
                        self.line.extend_from_slice(b"\"\"");
                    } else {
                        self.line.extend_from_slice(enc.as_bytes());
                    }
                }
            }
        }
        self.flush_line()
    }

    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Reads the CSV the exporter writes, record by record, telling NULL (an empty unquoted field,
/// `None`) from the empty string (`""`, `Some("")`). Quoted fields may hold separators, doubled
/// quotes and line breaks; lines may end with LF or CRLF.
///
/// ```
/// use snapshot::export::CsvReader;
///
/// let data = "id,name\n1,\"a, \"\"b\"\"\nc\"\n2,\n3,\"\"\n";
/// let mut r = CsvReader::new(data.as_bytes());
/// assert_eq!(r.next_record()?, Some(vec![Some("id".into()), Some("name".into())]));
/// assert_eq!(r.next_record()?, Some(vec![Some("1".into()), Some("a, \"b\"\nc".into())]));
/// assert_eq!(r.next_record()?, Some(vec![Some("2".into()), None]));
/// assert_eq!(r.next_record()?, Some(vec![Some("3".into()), Some("".into())]));
/// assert_eq!(r.next_record()?, None);
/// # Ok::<(), snapshot::Error>(())
/// ```
#[derive(Debug)]
pub struct CsvReader<R> {
    input: R,
    line_no: usize,
}

impl<R: BufRead> CsvReader<R> {
    /// A reader over `input`.
    pub fn new(input: R) -> Self {
        CsvReader { input, line_no: 0 }
    }

    /// The next record, `None` at the end.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (field `csv`) for a malformed record (naming its line), I/O
    /// errors.
    pub fn next_record(&mut self) -> Result<Option<Vec<Option<String>>>> {
        let mut line = String::new();
        if self.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let start = self.line_no;
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        loop {
            if i >= chars.len() {
                if quoted {
                    // A line break inside a quoted field: the record goes on.
                    let mut more = String::new();
                    if self.read_line(&mut more)? == 0 {
                        return Err(Error::invalid(
                            "csv",
                            format!("line {start}: a quoted field is not closed"),
                        ));
                    }
                    chars.extend(more.chars());
                    continue;
                }
                fields.push(Some(field).filter(|f| !f.is_empty()));
                break;
            }
            let c = chars[i];
            if quoted {
                if c == '"' {
                    if chars.get(i + 1) == Some(&'"') {
                        field.push('"');
                        i += 2;
                        continue;
                    }
                    quoted = false;
                    // After the closing quote: a separator or the end of the record.
                    match chars.get(i + 1) {
                        None | Some('\n') => {
                            fields.push(Some(std::mem::take(&mut field)));
                            return Ok(Some(fields));
                        }
                        Some('\r') if chars.get(i + 2).is_none_or(|c| *c == '\n') => {
                            fields.push(Some(std::mem::take(&mut field)));
                            return Ok(Some(fields));
                        }
                        Some(',') => {
                            fields.push(Some(std::mem::take(&mut field)));
                            i += 2;
                            if i >= chars.len() || chars[i] == '\n' || chars[i] == '\r' {
                                fields.push(None);
                                return Ok(Some(fields));
                            }
                            continue;
                        }
                        Some(other) => {
                            return Err(Error::invalid(
                                "csv",
                                format!("line {}: {other:?} after a closing quote", self.line_no),
                            ));
                        }
                    }
                }
                field.push(c);
                i += 1;
                continue;
            }
            match c {
                '"' if field.is_empty() => quoted = true,
                ',' => fields.push(Some(std::mem::take(&mut field)).filter(|f| !f.is_empty())),
                '\n' => {
                    fields.push(Some(std::mem::take(&mut field)).filter(|f| !f.is_empty()));
                    return Ok(Some(fields));
                }
                '\r' if chars.get(i + 1).is_none_or(|c| *c == '\n') => {
                    fields.push(Some(std::mem::take(&mut field)).filter(|f| !f.is_empty()));
                    return Ok(Some(fields));
                }
                _ => field.push(c),
            }
            i += 1;
        }
        Ok(Some(fields))
    }

    fn read_line(&mut self, buf: &mut String) -> Result<usize> {
        let n = self
            .input
            .read_line(buf)
            .map_err(|e| Error::io("read csv", "input", e))?;
        if n > 0 {
            self.line_no += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_back_nulls_empties_quotes_and_newlines() -> Result<()> {
        let mut out = Vec::new();
        {
            let mut w = CsvWriter::new(&mut out);
            w.row(&[
                Cell::Null,
                Cell::Text("".into()),
                Cell::Text("a,\"b\"\r\nc".into()),
                Cell::Text(" pad ".into()),
                Cell::Int(i64::MIN),
                Cell::Float(1.0),
                Cell::Blob(b"\x00\xff".as_slice().into()),
            ])?;
        }
        let text = String::from_utf8(out).map_err(|e| Error::invalid("utf8", e.to_string()))?;
        assert_eq!(
            text,
            ",\"\",\"a,\"\"b\"\"\r\nc\",\" pad \",-9223372036854775808,1.0,AP8=\n"
        );
        let mut r = CsvReader::new(text.as_bytes());
        let rec = r.next_record()?.unwrap_or_default();
        assert_eq!(
            rec,
            vec![
                None,
                Some(String::new()),
                Some("a,\"b\"\r\nc".into()),
                Some(" pad ".into()),
                Some("-9223372036854775808".into()),
                Some("1.0".into()),
                Some("AP8=".into()),
            ]
        );
        assert_eq!(r.next_record()?, None);
        Ok(())
    }

    #[test]
    fn trailing_null_and_unclosed_quote() -> Result<()> {
        let mut r = CsvReader::new("1,\n\"x\",\n".as_bytes());
        assert_eq!(r.next_record()?, Some(vec![Some("1".into()), None]));
        assert_eq!(r.next_record()?, Some(vec![Some("x".into()), None]));
        let mut bad = CsvReader::new("\"open\n".as_bytes());
        assert!(bad.next_record().is_err());
        Ok(())
    }

    #[test]
    fn floats_are_always_recognisable() {
        for f in [
            1.0,
            -0.0,
            1e300,
            1e-7,
            0.1,
            f64::MAX,
            f64::INFINITY,
            f64::NAN,
        ] {
            let t = float_text(f);
            assert!(t.parse::<i64>().is_err(), "{t} reads as an integer");
            let back: f64 = t.parse().unwrap_or(0.5);
            assert!(
                back.to_bits() == f.to_bits() || (f.is_nan() && back.is_nan()),
                "{t}"
            );
        }
    }
}
