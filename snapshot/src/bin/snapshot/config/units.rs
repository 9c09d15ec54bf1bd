//! Durations and sizes as people write them in the configuration: `90s`, `1d12h`, `10GiB`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use snapshot::Result;

use crate::invalid;

/// A duration written as text: `90s`, `30m`, `12h`, `7d`, `2w`, or sums like `1d12h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parses `90s`, `30m`, `12h`, `7d`, `2w`, `1d12h` (a bare number is seconds).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming what is wrong.
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim();
        if t.is_empty() {
            return Err(invalid("duration", "empty duration"));
        }
        if let Ok(secs) = t.parse::<u64>() {
            return Ok(HumanDuration(Duration::from_secs(secs)));
        }
        let mut total: u64 = 0;
        let mut num = String::new();
        for c in t.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let unit: u64 = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                'w' => 7 * 86_400,
                _ => {
                    return Err(invalid(
                        "duration",
                        format!("{text:?}: unknown unit {c:?} (use s, m, h, d, w)"),
                    ));
                }
            };
            let n: u64 = num.parse().map_err(|_| {
                invalid("duration", format!("{text:?}: a number must precede {c:?}"))
            })?;
            num.clear();
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| invalid("duration", format!("{text:?} is too long")))?;
        }
        if !num.is_empty() {
            return Err(invalid(
                "duration",
                format!("{text:?}: the last number has no unit (s, m, h, d, w)"),
            ));
        }
        Ok(HumanDuration(Duration::from_secs(total)))
    }

    /// As a chrono duration.
    pub fn to_chrono(self) -> chrono::Duration {
        chrono::Duration::from_std(self.0).unwrap_or(chrono::Duration::MAX)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.0.as_secs();
        if s == 0 {
            return f.write_str("0s");
        }
        for (unit, len) in [
            ("w", 604_800),
            ("d", 86_400),
            ("h", 3600),
            ("m", 60),
            ("s", 1),
        ] {
            if s >= len {
                write!(f, "{}{unit}", s / len)?;
                s %= len;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(HumanDuration(Duration::from_secs(s))),
            Raw::Text(t) => HumanDuration::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A size written as text: `500000`, `64KiB`, `10MB`, `1.5GiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses a byte count with an optional unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming what is wrong.
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| invalid("size", format!("{text:?} does not start with a number")))?;
        let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "kb" | "k" => 1e3,
            "mb" | "m" => 1e6,
            "gb" | "g" => 1e9,
            "tb" | "t" => 1e12,
            "kib" => 1024.0,
            "mib" => 1024.0 * 1024.0,
            "gib" => 1024.0 * 1024.0 * 1024.0,
            "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            other => {
                return Err(invalid(
                    "size",
                    format!("{text:?}: unknown unit {other:?} (use B, KB, MB, GB, KiB, MiB, GiB)"),
                ));
            }
        };
        let bytes = n * mult;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(invalid("size", format!("{text:?} is out of range")));
        }
        Ok(ByteSize(bytes.round() as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(b) => Ok(ByteSize(b)),
            Raw::Text(t) => ByteSize::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}
