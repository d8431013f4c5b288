//! Typed values of the stack format: durations (`1m30s`, Go syntax), byte sizes (`512M`, `1g`) and cpus (`0.5`).
//!
//! Owns parsing and printing these units the way docker does (printing durations as Go's `time.Duration` does,
//! so `stack config` output matches `docker stack config`). Must not know about files or keys.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written in Go syntax (`10s`, `1m30s`, `1.5h`, `100ms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration(pub Duration);

/// Parses a Go duration: a sequence of decimal numbers with units ns, us, µs, ms, s, m, h. `0` alone is allowed.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let orig = s;
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s.starts_with('-') {
        return Err(format!(
            "invalid duration {orig:?}: negative durations are not allowed"
        ));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total: f64 = 0.0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        if start == i {
            return Err(format!("invalid duration {orig:?}"));
        }
        let num: f64 = s[start..i]
            .parse()
            .map_err(|_| format!("invalid duration {orig:?}"))?;
        let ustart = i;
        while i < bytes.len() && !(bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        let unit = s[ustart..i].trim();
        let nanos_per = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => {
                return Err(format!(
                    "invalid duration {orig:?}: missing unit (use e.g. \"10s\")"
                ))
            }
            other => return Err(format!("invalid duration {orig:?}: unknown unit {other:?}")),
        };
        total += num * nanos_per;
    }
    if total > u64::MAX as f64 {
        return Err(format!("invalid duration {orig:?}: too large"));
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

/// Formats a duration as Go's `time.Duration.String()` does (`1m0s`, `1.5s`, `100ms`, `0s`).
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", trim_frac(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", trim_frac(nanos, 1_000_000));
    }
    let secs_total = nanos / 1_000_000_000;
    let frac = nanos % 1_000_000_000;
    let h = secs_total / 3600;
    let m = (secs_total % 3600) / 60;
    let s = secs_total % 60;
    let sec_str = trim_frac(u128::from(s as u64) * 1_000_000_000 + frac, 1_000_000_000);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{sec_str}s"));
    out
}

fn trim_frac(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(GoDuration)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses a byte size the way docker's `units.RAMInBytes` does: a number with an optional unit
/// b, k/kb/kib, m/mb/mib, g/gb/gib, t, p (case-insensitive, binary multiples: `1k` = 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let orig = s;
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(format!("invalid size {orig:?}"));
    }
    let value: f64 = num.parse().map_err(|_| format!("invalid size {orig:?}"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024f64.powi(4),
        "p" | "pb" | "pib" => 1024f64.powi(5),
        other => return Err(format!("invalid size {orig:?}: unknown unit {other:?}")),
    };
    let bytes = value * mult;
    if bytes > i64::MAX as f64 {
        return Err(format!("invalid size {orig:?}: too large"));
    }
    Ok(bytes as u64)
}

/// Parses a cpus value (`"0.5"`, `2`) into nano-cpus, as docker's `ParseCPUs` does.
pub fn parse_nano_cpus(s: &str) -> Result<i64, String> {
    let value: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("invalid cpus value {s:?}: expected a number like \"0.5\""))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!(
            "invalid cpus value {s:?}: must be a positive number"
        ));
    }
    let nanos = (value * 1e9).round();
    if nanos > i64::MAX as f64 {
        return Err(format!("invalid cpus value {s:?}: too large"));
    }
    Ok(nanos as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        let cases = [
            ("10s", 10_000_000_000u64),
            ("1m30s", 90_000_000_000),
            ("1.5h", 5_400_000_000_000),
            ("100ms", 100_000_000),
            ("0", 0),
            ("2h45m", 9_900_000_000_000),
            ("1us", 1_000),
            ("3ns", 3),
        ];
        for (text, nanos) in cases {
            assert_eq!(
                parse_duration(text).unwrap(),
                Duration::from_nanos(nanos),
                "{text}"
            );
        }
        for bad in ["", "10", "ten", "1x", "-1s", "s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_print_like_go() {
        let cases = [
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(120), "2m0s"),
            (Duration::from_secs(10), "10s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(100), "100ms"),
            (Duration::from_secs(3600 + 61), "1h1m1s"),
            (Duration::ZERO, "0s"),
            (Duration::from_micros(5), "5µs"),
        ];
        for (d, text) in cases {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text).unwrap(), d);
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512M").unwrap(), 512 * 1024 * 1024);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("128m").unwrap(), 128 << 20);
        assert_eq!(parse_bytes("50M").unwrap(), 52_428_800);
        assert_eq!(parse_bytes("10000").unwrap(), 10_000);
        assert_eq!(parse_bytes("1.5k").unwrap(), 1536);
        assert_eq!(parse_bytes("2kb").unwrap(), 2048);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("12q").is_err());
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_nano_cpus("0.5").unwrap(), 500_000_000);
        assert_eq!(parse_nano_cpus("2").unwrap(), 2_000_000_000);
        assert_eq!(parse_nano_cpus("0.001").unwrap(), 1_000_000);
        assert!(parse_nano_cpus("half").is_err());
        assert!(parse_nano_cpus("-1").is_err());
    }
}
