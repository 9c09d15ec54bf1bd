//! Snapshot ids: unique, time-sortable, safe as file names whatever the caller passes.
//!
//! An id is `YYYYMMDD_HHMMSS_mmm_<operation>[_<entity>[_<entity id>]]`, every part after the time
//! reduced to `[A-Za-z0-9-]` and bounded in length. When a part had to be altered (a `../../etc`,
//! a NUL, unicode, or a 10 kB string) a short hash of the original is appended, so two different
//! entity ids never collapse into one. Ids made in the same millisecond are told apart by the
//! store: publishing refuses an existing name and the next attempt appends `-0002`, `-0003`, …
//! Generation is a pure function of its inputs.

use chrono::{DateTime, Datelike, Utc};

/// Longest kept part of the operation, entity type or entity id.
const MAX_PART: usize = 40;

/// Builds the id for a snapshot taken at `at`. `attempt` 0 gives the plain id; 1, 2, … give the
/// `-0002`, `-0003`, … variants used when a name is already taken.
pub fn snapshot_id(
    at: DateTime<Utc>,
    operation: &str,
    entity_type: Option<&str>,
    entity_id: Option<&str>,
    attempt: u32,
) -> String {
    let mut id = format!("{}{}", year(at), at.format("%m%d_%H%M%S_%3f"));
    for part in [Some(operation), entity_type, entity_id]
        .into_iter()
        .flatten()
    {
        let clean = sanitize(part);
        if !clean.is_empty() {
            id.push('_');
            id.push_str(&clean);
        }
    }
    if attempt > 0 {
        id.push_str(&format!("-{:04}", attempt + 1));
    }
    id
}

/// The `YYYYMMDD_HHMMSS` time stamp of the original format.
pub fn timestamp(at: DateTime<Utc>) -> String {
    format!("{}{}", year(at), at.format("%m%d_%H%M%S"))
}

/// The year as `%Y` writes it (four digits at least, `-` before a year BCE), without the `+`
/// it puts before a year past 9999: an id stays file-name-safe and [`is_valid`] whatever the
/// clock says.
fn year(at: DateTime<Utc>) -> String {
    let y = at.year();
    if y < 0 {
        format!("-{:04}", y.unsigned_abs())
    } else {
        format!("{y:04}")
    }
}

/// Reduces a free-form part to a bounded, file-name-safe token.
pub fn sanitize(part: &str) -> String {
    let mut out = String::with_capacity(part.len().min(MAX_PART));
    let mut last_dash = true; // no leading dash
    for c in part.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
            last_dash = false;
        } else if !last_dash {
            out.push('-');
            last_dash = true;
        }
        if out.len() >= MAX_PART {
            break;
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    if out != part {
        let h = blake3::hash(part.as_bytes()).to_hex();
        if !out.is_empty() {
            out.push('-');
        }
        out.push_str(&h[..8]);
    }
    out
}

/// Whether `id` could have been produced by [`snapshot_id`] (used to reject hostile ids given to
/// `get`/`restore` before they reach a path).
pub fn is_valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 10, 15, 0)
            .single()
            .unwrap_or_default()
            + chrono::Duration::milliseconds(123)
    }

    #[test]
    fn plain_ids_read_like_the_original() {
        assert_eq!(
            snapshot_id(at(), "delete", Some("measure"), Some("42"), 0),
            "20261123_101500_123_delete_measure_42"
        );
        assert_eq!(
            snapshot_id(at(), "manual", None, None, 0),
            "20261123_101500_123_manual"
        );
        assert_eq!(
            snapshot_id(at(), "manual", None, None, 2),
            "20261123_101500_123_manual-0003"
        );
        assert_eq!(timestamp(at()), "20261123_101500");
    }

    #[test]
    fn hostile_parts_stay_inside_and_distinct() {
        let hostile = [
            "../../etc",
            "a\0b",
            "a b",
            "ü",
            &"x".repeat(10_000),
            "..",
            "/",
            "",
        ];
        let ids: Vec<String> = hostile
            .iter()
            .map(|h| snapshot_id(at(), "delete", Some("m"), Some(h), 0))
            .collect();
        for id in &ids {
            assert!(is_valid(id), "{id}");
            assert!(id.len() < 120, "{id}");
        }
        // distinct inputs give distinct ids (except "" which means "no id")
        let mut uniq = ids.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), ids.len());
    }

    #[test]
    fn ids_are_valid_whatever_the_clock_says() {
        // Found by the fuzzer (`fuzz/regressions/snapshot_id/`): `%Y` writes `+64462`.
        for (millis, stamp) in [
            (1_972_087_115_764_370, "644621214_083604"),
            (253_402_300_799_999, "99991231_235959"),
            (-62_167_219_200_001, "-00011231_235959"),
        ] {
            let at = DateTime::<Utc>::from_timestamp_millis(millis).unwrap_or_default();
            let id = snapshot_id(at, "manual", None, None, 0);
            assert!(is_valid(&id), "{id}");
            assert_eq!(timestamp(at), stamp);
            assert!(id.starts_with(stamp), "{id}");
        }
        assert_eq!(timestamp(at()), at().format("%Y%m%d_%H%M%S").to_string());
    }

    proptest! {
        #[test]
        fn any_entity_id_gives_a_safe_bounded_id(s in ".*") {
            let id = snapshot_id(at(), "delete", Some("measure"), Some(&s), 0);
            prop_assert!(is_valid(&id));
            prop_assert!(id.len() <= 20 + 7 + 8 + 41 + 9);
        }

        #[test]
        fn ids_sort_by_time(a in 0i64..10_000_000_000, b in 0i64..10_000_000_000, e in ".{0,20}") {
            let ta = DateTime::<Utc>::from_timestamp_millis(a * 7).unwrap_or_default();
            let tb = DateTime::<Utc>::from_timestamp_millis(b * 7).unwrap_or_default();
            let ia = snapshot_id(ta, "delete", Some("m"), Some(&e), 0);
            let ib = snapshot_id(tb, "delete", Some("m"), Some(&e), 0);
            if ta < tb { prop_assert!(ia < ib); }
        }
    }
}
