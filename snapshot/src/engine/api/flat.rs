//! A record's cells read straight from its JSON text, without building the record: nested
//! objects become dotted columns (`location.latitude`), arrays and empty objects one cell of
//! compact JSON, `null` an empty cell — the columns in the order the API writes its keys.
//! (Building a `serde_json::Value` per record — a tree of maps and strings — cost more than
//! everything else an export does to a row.)

use std::fmt::{self, Write as _};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::engine::api::rows::Columns;

/// Writes the cells of the record `text` into `cells` at their columns' positions (`cells` is
/// cut to the row's own columns first), adding the columns not seen yet; whether any was.
/// `key` is scratch space for the dotted names.
///
/// # Errors
/// When `text` is not JSON.
pub(crate) fn fill(
    text: &str,
    columns: &mut Columns,
    cells: &mut Vec<String>,
    key: &mut String,
) -> serde_json::Result<bool> {
    cells.truncate(columns.names().len());
    cells.iter_mut().for_each(String::clear);
    cells.resize(columns.names().len(), String::new());
    key.clear();
    let mut sink = Sink {
        columns,
        cells,
        key,
        added: false,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    Node { sink: &mut sink }.deserialize(&mut de)?;
    de.end()?;
    Ok(sink.added)
}

struct Sink<'a> {
    columns: &'a mut Columns,
    cells: &'a mut Vec<String>,
    key: &'a mut String,
    added: bool,
}

impl Sink<'_> {
    /// The cell of the current key (`value` for a record that is no object), cleared.
    fn cell(&mut self) -> &mut String {
        if self.key.is_empty() {
            self.key.push_str("value");
        }
        let i = match self.columns.index(self.key) {
            Some(i) => i,
            None => {
                self.columns.push(self.key.clone());
                self.cells.push(String::new());
                self.added = true;
                self.cells.len() - 1
            }
        };
        let c = &mut self.cells[i];
        c.clear();
        c
    }
}

/// One value at the current key.
struct Node<'s, 'a> {
    sink: &'s mut Sink<'a>,
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.sink.cell().push_str(if v { "true" } else { "false" });
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        let _ = write!(self.sink.cell(), "{v}");
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        let _ = write!(self.sink.cell(), "{v}");
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        if let Some(n) = serde_json::Number::from_f64(v) {
            let _ = write!(self.sink.cell(), "{n}");
        }
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.sink.cell().push_str(v);
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.sink.cell();
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        use serde::Deserialize;
        let v = Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        let _ = write!(self.sink.cell(), "{v}");
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let len = self.sink.key.len();
        let mut empty = true;
        while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            empty = false;
            if len > 0 {
                self.sink.key.push('.');
            }
            self.sink.key.push_str(&k);
            map.next_value_seed(Node {
                sink: &mut *self.sink,
            })?;
            self.sink.key.truncate(len);
        }
        if empty && len > 0 {
            self.sink.cell().push_str("{}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::api::rows::flatten;
    use serde_json::json;

    #[test]
    fn cells_from_text_equal_the_flattened_record() {
        let record = json!({"id": 1, "loc": {"lat": 1.5, "lon": null}, "tags": [1, {"a": "x"}],
                            "e": {}, "s": "a\"b\nc", "f": 2.0, "big": 18446744073709551615u64,
                            "neg": -3, "ok": true});
        let (mut columns, mut cells, mut key) = (Columns::default(), Vec::new(), String::new());
        assert!(fill(&record.to_string(), &mut columns, &mut cells, &mut key).unwrap());
        let flat = flatten(&record);
        let by_name: Vec<(String, String)> = columns
            .names()
            .iter()
            .cloned()
            .zip(cells.iter().cloned())
            .collect();
        let mut a = by_name.clone();
        let mut b = flat.clone();
        a.sort();
        b.sort();
        assert_eq!(a, b);
        // Keys in the order the text has them.
        let mut c = Columns::default();
        fill(r#"{"z": 1, "a": {"b": 2}}"#, &mut c, &mut cells, &mut key).unwrap();
        assert_eq!(c.names(), ["z", "a.b"]);
        assert!(fill("[1]", &mut c, &mut cells, &mut key).unwrap());
        assert_eq!(c.names().last().map(String::as_str), Some("value"));
        assert!(fill("{", &mut c, &mut cells, &mut key).is_err());
    }
}
