//! What the server's catalog says about the tables of a schema: which there are, their columns
//! (with types as `format_type` writes them), primary keys, defaults and constraints.
//!
//! Shared by the snapshot export ([`bundle`](super::bundle)) and the table engine, so both
//! see a table the same way. Generated columns are left out everywhere: the server computes
//! them, and they can be neither copied in nor written.

use ::postgres::Client;

use crate::engine::postgres::manifest::{ColumnEntry, ConstraintEntry};
use crate::engine::postgres::target::Target;
use crate::error::Result;

/// A relation found by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Relation {
    /// Its object id.
    pub(crate) oid: u32,
    /// Its name as the catalog spells it.
    pub(crate) name: String,
    /// Its kind: `r` table, `p` partitioned table, `v` view, `m` materialized view,
    /// `f` foreign table.
    pub(crate) kind: char,
}

impl Relation {
    /// Whether it holds rows of its own to restore (a table or a partitioned table).
    pub(crate) fn is_table(&self) -> bool {
        matches!(self.kind, 'r' | 'p')
    }

    /// What it is, for messages.
    pub(crate) fn kind_name(&self) -> &'static str {
        match self.kind {
            'v' => "a view",
            'm' => "a materialized view",
            'f' => "a foreign table",
            'S' => "a sequence",
            'i' | 'I' => "an index",
            'c' => "a composite type",
            _ => "not a table",
        }
    }
}

/// Whether `schema` exists.
pub(crate) fn schema_exists(client: &mut Client, target: &Target, schema: &str) -> Result<bool> {
    client
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .map(|r| r.is_some())
        .map_err(|e| target.error("find schema", e))
}

/// The user tables of `schema` (partitions are read through their parent), sorted by name.
pub(crate) fn tables(client: &mut Client, target: &Target, schema: &str) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition",
            &[&schema],
        )
        .map_err(|e| target.error("list tables", e))?;
    let mut names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    names.sort();
    Ok(names)
}

/// The relation of `schema` called `name`: the exact name first, else the one name equal to
/// it ignoring case (as an unquoted name would be folded).
pub(crate) fn find(
    client: &mut Client,
    target: &Target,
    schema: &str,
    name: &str,
) -> Result<Option<Relation>> {
    let rows = client
        .query(
            "SELECT c.oid, c.relname::text, c.relkind FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND lower(c.relname) = lower($2)
               AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
             ORDER BY c.relname",
            &[&schema, &name],
        )
        .map_err(|e| target.error("find table", e))?;
    let found: Vec<Relation> = rows
        .iter()
        .map(|r| Relation {
            oid: r.get(0),
            name: r.get(1),
            kind: r.get::<_, i8>(2) as u8 as char,
        })
        .collect();
    let exact = found.iter().find(|r| r.name == name);
    let folded = found
        .iter()
        .find(|r| r.name == name.to_lowercase())
        .or_else(|| (found.len() == 1).then(|| &found[0]));
    Ok(exact.or(folded).cloned())
}

/// The columns of a relation in table order, generated columns left out, with the position of
/// each in the primary key and its default expression.
pub(crate) fn columns(client: &mut Client, target: &Target, oid: u32) -> Result<Vec<ColumnEntry>> {
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                    coalesce(array_position(i.indkey::int2[], a.attnum)
                             - array_lower(i.indkey::int2[], 1) + 1, 0)::int4,
                    pg_get_expr(d.adbin, d.adrelid),
                    a.attidentity::text
             FROM pg_attribute a
             LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
               AND a.attgenerated = ''
             ORDER BY a.attnum",
            &[&oid],
        )
        .map_err(|e| target.error("read columns", e))?;
    Ok(rows
        .iter()
        .map(|r| {
            let identity: String = r.get(5);
            ColumnEntry {
                name: r.get(0),
                data_type: r.get(1),
                not_null: r.get(2),
                primary_key: u32::try_from(r.get::<_, i32>(3)).unwrap_or(0),
                default: r.get(4),
                identity: match identity.as_str() {
                    "a" => Some("ALWAYS".to_string()),
                    "d" => Some("BY DEFAULT".to_string()),
                    _ => None,
                },
            }
        })
        .collect())
}

/// The constraints of a table other than its primary key and NOT NULLs (unique, check,
/// foreign key, exclusion), as `ALTER TABLE … ADD CONSTRAINT` would take them, and the tables
/// of `schema` its foreign keys refer to.
pub(crate) fn constraints(
    client: &mut Client,
    target: &Target,
    schema: &str,
    oid: u32,
) -> Result<(Vec<ConstraintEntry>, Vec<String>)> {
    let rows = client
        .query(
            "SELECT c.conname::text, pg_get_constraintdef(c.oid), c.contype::text,
                    CASE WHEN rn.nspname = $2 THEN r.relname::text END
             FROM pg_constraint c
             LEFT JOIN pg_class r ON r.oid = c.confrelid
             LEFT JOIN pg_namespace rn ON rn.oid = r.relnamespace
             WHERE c.conrelid = $1 AND c.contype IN ('u', 'c', 'f', 'x')
             ORDER BY c.contype, c.conname",
            &[&oid, &schema],
        )
        .map_err(|e| target.error("read constraints", e))?;
    let mut constraints = Vec::with_capacity(rows.len());
    let mut references: Vec<String> = Vec::new();
    for r in &rows {
        constraints.push(ConstraintEntry {
            name: r.get(0),
            definition: r.get(1),
        });
        let kind: String = r.get(2);
        if let (true, Some(to)) = (kind == "f", r.get::<_, Option<String>>(3))
            && !references.contains(&to)
        {
            references.push(to);
        }
    }
    Ok((constraints, references))
}
