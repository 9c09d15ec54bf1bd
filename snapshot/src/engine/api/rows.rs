//! Rows as the archive's CSV files hold them: a JSON record flattened to dotted columns
//! (`location.latitude`; arrays kept as JSON text), and the lookups left-joined into it.

use std::collections::HashMap;

use serde_json::Value;

use crate::engine::api::config::Lookup;

/// A flattened row: (column, cell) in the record's order.
pub(crate) type Flat = Vec<(String, String)>;

/// The text of a scalar in a CSV cell (`null` is empty; arrays and objects are JSON).
pub(crate) fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// `record` flattened: nested objects become dotted columns, everything else one cell. A
/// record that is no object is one column, `value`.
pub(crate) fn flatten(record: &Value) -> Flat {
    let mut out = Vec::new();
    match record {
        Value::Object(_) => walk(record, "", &mut out),
        other => out.push(("value".to_string(), cell(other))),
    }
    out
}

fn walk(v: &Value, prefix: &str, out: &mut Flat) {
    match v {
        Value::Object(m) if !m.is_empty() || prefix.is_empty() => {
            for (k, child) in m {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                walk(child, &name, out);
            }
        }
        other => out.push((prefix.to_string(), cell(other))),
    }
}

/// Column names in the order first seen.
#[derive(Debug, Default, Clone)]
pub(crate) struct Columns {
    order: Vec<String>,
    seen: HashMap<String, usize>,
}

impl Columns {
    /// Adds the columns of `row` not seen yet; whether there were any.
    pub fn add(&mut self, row: &Flat) -> bool {
        let mut added = false;
        for (k, _) in row {
            if !self.seen.contains_key(k) {
                self.seen.insert(k.clone(), self.order.len());
                self.order.push(k.clone());
                added = true;
            }
        }
        added
    }

    /// Adds the column `name` (not seen yet).
    pub fn push(&mut self, name: String) {
        self.seen.insert(name.clone(), self.order.len());
        self.order.push(name);
    }

    /// The position of the column `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.seen.get(name).copied()
    }

    /// The names, in order.
    pub fn names(&self) -> &[String] {
        &self.order
    }
}

/// One lookup, loaded: its joined columns and its rows by key.
#[derive(Debug)]
pub(crate) struct Loaded {
    join: String,
    columns: Vec<String>,
    rows: HashMap<String, Vec<String>>,
}

impl Loaded {
    /// The lookup `lookup` over its `records`.
    pub fn new<'a>(lookup: &Lookup, records: impl Iterator<Item = &'a Value> + Clone) -> Loaded {
        let prefix = lookup.prefix();
        let wanted: Vec<String> = match &lookup.fields {
            Some(f) => f.clone(),
            None => {
                let mut c = Columns::default();
                for r in records.clone() {
                    let flat: Flat = flatten(r)
                        .into_iter()
                        .filter(|(k, _)| *k != lookup.key)
                        .collect();
                    c.add(&flat);
                }
                c.names().to_vec()
            }
        };
        let mut rows = HashMap::new();
        for r in records {
            let flat = flatten(r);
            let Some(key) = flat
                .iter()
                .find(|(k, _)| *k == lookup.key)
                .map(|(_, v)| v.clone())
            else {
                continue;
            };
            let by: HashMap<&str, &str> =
                flat.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let cells = wanted
                .iter()
                .map(|w| by.get(w.as_str()).copied().unwrap_or("").to_string())
                .collect();
            rows.entry(key).or_insert(cells);
        }
        Loaded {
            join: lookup.join.clone(),
            columns: wanted.iter().map(|w| format!("{prefix}{w}")).collect(),
            rows,
        }
    }
}

/// The lookups of a run, joined in order.
#[derive(Debug, Default)]
pub(crate) struct Joins {
    lookups: Vec<Loaded>,
    names: Vec<String>,
}

impl Joins {
    /// The lookups, in their join order.
    pub fn new(lookups: Vec<Loaded>) -> Joins {
        let names = lookups.iter().flat_map(|l| l.columns.clone()).collect();
        Joins { lookups, names }
    }

    /// The joined columns, after a row's own.
    pub fn columns(&self) -> Vec<String> {
        self.names.clone()
    }

    /// Appends the joined cells to `cells`, a row's own cells by `columns` (empty cells when
    /// a key is unknown: a left join). A lookup's join column may be one an earlier lookup
    /// added.
    pub fn append(&self, columns: &Columns, cells: &mut Vec<String>) {
        let own = cells.len();
        for l in &self.lookups {
            let at = columns.index(&l.join).or_else(|| {
                self.names
                    .iter()
                    .position(|n| *n == l.join)
                    .map(|p| own + p)
                    .filter(|i| *i < cells.len())
            });
            let found = at.and_then(|i| l.rows.get(cells[i].as_str()));
            match found {
                Some(row) => cells.extend(row.iter().cloned()),
                None => cells.extend(std::iter::repeat_n(String::new(), l.columns.len())),
            }
        }
    }

    /// `row` with every lookup's columns added (empty cells when its key is unknown: a left
    /// join). A lookup's join column may be one an earlier lookup added.
    #[cfg(test)]
    pub fn join(&self, mut row: Flat) -> Flat {
        for l in &self.lookups {
            let key = row
                .iter()
                .find(|(k, _)| *k == l.join)
                .map(|(_, v)| v.clone());
            let found = key.and_then(|k| l.rows.get(&k));
            for (i, c) in l.columns.iter().enumerate() {
                let v = found.map(|cells| cells[i].clone()).unwrap_or_default();
                row.push((c.clone(), v));
            }
        }
        row
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_flatten_to_dotted_columns_and_lookups_chain() {
        let flat =
            flatten(&json!({"id": 1, "loc": {"lat": 1.5, "lon": null}, "tags": [1, 2], "e": {}}));
        // A `Value`'s keys are in name order.
        assert_eq!(
            flat,
            vec![
                ("e".into(), "{}".into()),
                ("id".into(), "1".into()),
                ("loc.lat".into(), "1.5".into()),
                ("loc.lon".into(), String::new()),
                ("tags".into(), "[1,2]".into()),
            ]
        );
        let subjects = [json!({"id": "s1", "name": "Ana", "group": "g1"})];
        let groups = [json!({"id": "g1", "name": "Herd"})];
        let lookup = |name: &str, join: &str| Lookup {
            name: name.into(),
            path: String::new(),
            key: "id".into(),
            join: join.into(),
            prefix: None,
            fields: None,
            params: Default::default(),
            paging: Default::default(),
        };
        let joins = Joins::new(vec![
            Loaded::new(&lookup("subjects", "subject"), subjects.iter()),
            Loaded::new(&lookup("groups", "subjects.group"), groups.iter()),
        ]);
        assert_eq!(
            joins.columns(),
            ["subjects.group", "subjects.name", "groups.name"]
        );
        let row = joins.join(flatten(&json!({"subject": "s1"})));
        assert_eq!(row[3], ("groups.name".into(), "Herd".into()));
        let tail: Vec<String> = row[1..].iter().map(|c| c.1.clone()).collect();
        let (mut columns, mut cells, mut key) = (Columns::default(), Vec::new(), String::new());
        let fill = crate::engine::api::flat::fill;
        assert!(fill(r#"{"subject": "s1"}"#, &mut columns, &mut cells, &mut key).unwrap());
        joins.append(&columns, &mut cells);
        assert_eq!(cells[1..], tail[..]);
        let mut again = Vec::new();
        let other = r#"{"subject": "s2", "extra": {"a": [1]}}"#;
        assert!(fill(other, &mut columns, &mut again, &mut key).unwrap());
        assert_eq!(again, ["s2", "[1]"]);
        let unknown = joins.join(flatten(&json!({"subject": "nobody"})));
        assert!(
            unknown[1..].iter().all(|(_, v)| v.is_empty()),
            "{unknown:?}"
        );
    }
}
