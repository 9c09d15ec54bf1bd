//! The JSON of exports: one array, one object per row, values typed.

use std::io::Write;

use base64::Engine as _;

use crate::error::{Error, Result};
use crate::export::RowWriter;
use crate::export::reader::{Cell, ColumnSchema};

pub(crate) struct JsonWriter<'w> {
    out: &'w mut dyn Write,
    keys: Vec<String>,
    rows: u64,
    buf: Vec<u8>,
}

impl<'w> JsonWriter<'w> {
    pub(crate) fn new(out: &'w mut dyn Write) -> Self {
        JsonWriter {
            out,
            keys: Vec::new(),
            rows: 0,
            buf: Vec::with_capacity(256),
        }
    }

    fn emit(&mut self) -> Result<()> {
        self.out
            .write_all(&self.buf)
            .map_err(|e| Error::io("write json", "export", e))?;
        self.buf.clear();
        Ok(())
    }
}

fn push_str(buf: &mut Vec<u8>, s: &str) -> Result<()> {
    serde_json::to_writer(&mut *buf, s).map_err(|e| Error::invalid("json", e.to_string()))
}

impl RowWriter for JsonWriter<'_> {
    fn header(&mut self, columns: &[ColumnSchema]) -> Result<()> {
        self.keys = columns
            .iter()
            .map(|c| serde_json::to_string(&c.name).unwrap_or_else(|_| "\"?\"".into()))
            .collect();
        self.buf.push(b'[');
        self.emit()
    }

    fn row(&mut self, cells: &[Cell<'_>]) -> Result<()> {
        self.buf
            .extend_from_slice(if self.rows == 0 { b"\n{" } else { b",\n{" });
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            self.buf.extend_from_slice(self.keys[i].as_bytes());
            self.buf.push(b':');
            match c {
                Cell::Null => self.buf.extend_from_slice(b"null"),
                Cell::Bool(b) => self
                    .buf
                    .extend_from_slice(if *b { b"true" } else { b"false" }),
                Cell::Int(n) => self.buf.extend_from_slice(n.to_string().as_bytes()),
                Cell::UInt(n) => self.buf.extend_from_slice(n.to_string().as_bytes()),
                Cell::Number(s) => self.buf.extend_from_slice(s.as_bytes()),
                Cell::Float(f) if f.is_finite() => serde_json::to_writer(&mut self.buf, f)
                    .map_err(|e| Error::invalid("json", e.to_string()))?,
                Cell::Float(f) => {
                    let t = if f.is_nan() {
                        "NaN"
                    } else if *f > 0.0 {
                        "inf"
                    } else {
                        "-inf"
                    };
                    push_str(&mut self.buf, t)?;
                }
                Cell::Text(s) | Cell::Other(s) => push_str(&mut self.buf, s)?,
                Cell::Blob(b) => {
                    let enc = base64::engine::general_purpose::STANDARD.encode(b);
                    push_str(&mut self.buf, &enc)?;
                }
            }
        }
        self.buf.push(b'}');
        self.rows += 1;
        self.emit()
    }

    fn finish(&mut self) -> Result<()> {
        self.buf.extend_from_slice(b"\n]\n");
        self.emit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_their_json_types() -> Result<()> {
        let cols: Vec<ColumnSchema> = ["a", "b\"", "c", "d", "e", "f", "g"]
            .iter()
            .map(|n| ColumnSchema {
                name: n.to_string(),
                declared_type: String::new(),
                kind: crate::export::ValueKind::Other,
                nullable: true,
                primary_key: false,
                observed: Default::default(),
            })
            .collect();
        let mut out = Vec::new();
        {
            let mut w = JsonWriter::new(&mut out);
            w.header(&cols)?;
            w.row(&[
                Cell::Null,
                Cell::Bool(true),
                Cell::Int(i64::MAX),
                Cell::Float(2.5),
                Cell::Number("12345678901234567890123.45".into()),
                Cell::Text("é\n\"".into()),
                Cell::Blob(b"hi".as_slice().into()),
            ])?;
            w.row(&[
                Cell::Float(f64::NEG_INFINITY),
                Cell::Null,
                Cell::Null,
                Cell::Float(1.0),
                Cell::Null,
                Cell::Null,
                Cell::Null,
            ])?;
            w.finish()?;
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out).map_err(|e| Error::invalid("json", e.to_string()))?;
        assert_eq!(v[0]["a"], serde_json::Value::Null);
        assert_eq!(v[0]["b\""], true);
        assert_eq!(v[0]["c"].as_i64(), Some(i64::MAX));
        assert_eq!(v[0]["d"].as_f64(), Some(2.5));
        assert_eq!(v[0]["f"], "é\n\"");
        assert_eq!(v[0]["g"], "aGk=");
        assert_eq!(v[1]["a"], "-inf");
        assert!(v[1]["d"].is_f64());
        // Exact decimal literal kept in the text.
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("12345678901234567890123.45"));
        Ok(())
    }

    #[test]
    fn an_empty_table_is_an_empty_array() -> Result<()> {
        let mut out = Vec::new();
        {
            let mut w = JsonWriter::new(&mut out);
            w.header(&[])?;
            w.finish()?;
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out).map_err(|e| Error::invalid("json", e.to_string()))?;
        assert_eq!(v, serde_json::json!([]));
        Ok(())
    }
}
