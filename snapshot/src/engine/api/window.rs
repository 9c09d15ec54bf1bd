//! A run's range cut into chunks (months, weeks or days), each a half-open window
//! `[from, to)` with a label that names its files (`2016-03`, `2016-03-07`).

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, Utc};

use crate::engine::api::config::ChunkUnit;

/// One chunk of the range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Window {
    /// Its label: `YYYY-MM` for months, the first day for weeks and days.
    pub label: String,
    /// The year (the archive's folder).
    pub year: i32,
    /// The first instant.
    pub from: DateTime<Utc>,
    /// The instant after the last: the chunk's natural end, or the range's end when it comes
    /// first.
    pub to: DateTime<Utc>,
    /// The chunk's natural end (the end of its month, week or day).
    pub full_to: DateTime<Utc>,
}

impl Window {
    /// Whether the chunk reaches its natural end (a month that is over, not one cut by now).
    pub fn is_whole(&self) -> bool {
        self.to == self.full_to
    }
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(0, 0, 0).expect("midnight").and_utc()
}

/// The start of the chunk holding the day `d`.
fn chunk_start(d: NaiveDate, unit: ChunkUnit) -> NaiveDate {
    match unit {
        ChunkUnit::Month => d.with_day(1).expect("day 1"),
        ChunkUnit::Week => d - Days::new(u64::from(d.weekday().num_days_from_monday())),
        ChunkUnit::Day => d,
    }
}

fn next_start(d: NaiveDate, unit: ChunkUnit) -> NaiveDate {
    match unit {
        ChunkUnit::Month => d + Months::new(1),
        ChunkUnit::Week => d + Days::new(7),
        ChunkUnit::Day => d + Days::new(1),
    }
}

/// The chunks of `[from, to)`: the first may start before `from` (its window is then cut to
/// `from`), the last is cut at `to`.
pub(crate) fn windows(from: DateTime<Utc>, to: DateTime<Utc>, unit: ChunkUnit) -> Vec<Window> {
    let mut out = Vec::new();
    let mut start = chunk_start(from.date_naive(), unit);
    while midnight(start) < to {
        let next = next_start(start, unit);
        let label = match unit {
            ChunkUnit::Month => format!("{:04}-{:02}", start.year(), start.month()),
            _ => start.format("%Y-%m-%d").to_string(),
        };
        let full_to = midnight(next);
        out.push(Window {
            label,
            year: start.year(),
            from: midnight(start).max(from),
            to: full_to.min(to),
            full_to,
        });
        start = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        midnight(NaiveDate::from_ymd_opt(y, m, d).unwrap())
    }

    #[test]
    fn months_cover_the_range_without_gap_or_overlap() {
        let w = windows(at(2016, 1, 15), at(2016, 4, 2), ChunkUnit::Month);
        let labels: Vec<_> = w.iter().map(|w| w.label.as_str()).collect();
        assert_eq!(labels, ["2016-01", "2016-02", "2016-03", "2016-04"]);
        assert_eq!(w[0].from, at(2016, 1, 15));
        assert_eq!(w[1].from, at(2016, 2, 1));
        assert_eq!(w[1].to, at(2016, 3, 1));
        assert!(w[1].is_whole() && !w[3].is_whole());
        assert_eq!(w[3].to, at(2016, 4, 2));
        for pair in w.windows(2) {
            assert_eq!(pair[0].to, pair[1].from);
        }
    }

    #[test]
    fn weeks_start_on_monday_and_days_are_days() {
        // 2016-01-06 is a Wednesday.
        let w = windows(at(2016, 1, 6), at(2016, 1, 20), ChunkUnit::Week);
        assert_eq!(w[0].label, "2016-01-04");
        assert_eq!(w.len(), 3);
        let d = windows(at(2016, 2, 28), at(2016, 3, 2), ChunkUnit::Day);
        assert_eq!(d.len(), 3, "2016 is a leap year");
    }
}
