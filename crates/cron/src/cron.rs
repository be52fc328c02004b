//! Cron strings as Temporal's `cron_schedule` reads them: the standard five fields (minute,
//! hour, day of month, month, day of week) or a descriptor (`@yearly`, `@annually`, `@monthly`,
//! `@weekly`, `@daily`, `@midnight`, `@hourly`, `@every <duration>`), optionally prefixed by
//! `CRON_TZ=<IANA zone>` or `TZ=<IANA zone>`. Times are UTC milliseconds; everything here is a
//! pure function of its arguments.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// A parsed cron string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CronSchedule {
    /// Fixed fields in a time zone.
    Spec(FieldSpec),
    /// `@every d`: whole seconds, at least one.
    Every { seconds: i64 },
}

/// Bit sets of the allowed values of each field (bit n = value n).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldSpec {
    pub minute: u64,
    pub hour: u64,
    pub dom: u64,
    pub month: u64,
    pub dow: u64,
    /// Day of month or day of week was `*`/`?`: both day fields must match (otherwise either).
    pub dom_star: bool,
    pub dow_star: bool,
    pub tz: Option<Tz>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronError(pub String);

impl std::fmt::Display for CronError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CronError {}

fn err<T>(msg: impl Into<String>) -> Result<T, CronError> {
    Err(CronError(msg.into()))
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [&'static str],
    name_base: u32,
}

const MINUTE: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
    name_base: 0,
};
const HOUR: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
    name_base: 0,
};
const DOM: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
    name_base: 0,
};
const MONTH: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &MONTHS,
    name_base: 1,
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &DAYS,
    name_base: 0,
};

fn parse_value(s: &str, b: &Bounds) -> Result<u32, CronError> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = b.names.iter().position(|n| *n == lower) {
        return Ok(i as u32 + b.name_base);
    }
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return err(format!("failed to parse int from {s}"));
    }
    s.parse::<u32>()
        .or_else(|_| err(format!("failed to parse int from {s}")))
}

/// One comma-separated part of a field: `*`, `?`, `a`, `a-b`, each with an optional `/step`.
fn parse_range(part: &str, b: &Bounds) -> Result<(u64, bool), CronError> {
    let (range, step) = match part.split_once('/') {
        Some((r, s)) => {
            if s.contains('/') {
                return err(format!("too many slashes: {part}"));
            }
            (r, Some(s))
        }
        None => (part, None),
    };
    let (mut start, mut end, star) = if range == "*" || range == "?" {
        (b.min, b.max, true)
    } else if let Some((lo, hi)) = range.split_once('-') {
        if hi.contains('-') {
            return err(format!("too many hyphens: {part}"));
        }
        (parse_value(lo, b)?, parse_value(hi, b)?, false)
    } else {
        let v = parse_value(range, b)?;
        (v, v, false)
    };
    let step = match step {
        None => 1,
        Some(s) => {
            let v = parse_value(s, &MINUTE)?;
            // "N/step" means N through the field's maximum.
            if !star && !range.contains('-') {
                end = b.max;
            }
            v
        }
    };
    if start < b.min {
        return err(format!(
            "beginning of range ({start}) below minimum ({}): {part}",
            b.min
        ));
    }
    if end > b.max {
        return err(format!(
            "end of range ({end}) above maximum ({}): {part}",
            b.max
        ));
    }
    if start > end {
        return err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {part}"
        ));
    }
    if step == 0 {
        return err(format!("step of range should be a positive number: {part}"));
    }
    let mut bits = 0u64;
    while start <= end {
        bits |= 1 << start;
        // A huge step ends the loop instead of wrapping around.
        start = start.saturating_add(step);
    }
    Ok((bits, star && step == 1))
}

fn parse_field(field: &str, b: &Bounds) -> Result<(u64, bool), CronError> {
    let mut bits = 0;
    let mut star = false;
    for part in field.split(',') {
        let (p, s) = parse_range(part, b)?;
        bits |= p;
        star |= s;
    }
    Ok((bits, star))
}

/// Go's `time.ParseDuration`, in nanoseconds.
pub fn parse_go_duration(s: &str) -> Result<i128, CronError> {
    let bad = || CronError(format!("time: invalid duration \"{s}\""));
    let mut rest = s;
    let mut neg = false;
    if let Some(r) = rest.strip_prefix('-') {
        neg = true;
        rest = r;
    } else if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(bad());
        }
        let value: f64 = num.parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(CronError(format!("time: missing unit in duration \"{s}\""))),
            _ => {
                return Err(CronError(format!(
                    "time: unknown unit \"{unit}\" in duration \"{s}\""
                )));
            }
        };
        total += value * scale;
    }
    if total > i64::MAX as f64 {
        return Err(bad());
    }
    let ns = total as i128;
    Ok(if neg { -ns } else { ns })
}

/// Parses a cron string as Temporal's `cron_schedule` (robfig/cron's standard parser).
pub fn parse(spec: &str) -> Result<CronSchedule, CronError> {
    let mut spec = spec.trim();
    if spec.is_empty() {
        return err("empty spec string");
    }
    let mut tz = None;
    if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
        let Some(eq) = spec.find('=') else {
            return err("bad time zone");
        };
        let space = spec.find(' ').unwrap_or(spec.len());
        let name = &spec[eq + 1..space];
        tz = Some(
            name.parse::<Tz>()
                .or_else(|_| err(format!("provided bad location {name}")))?,
        );
        spec = spec[space..].trim();
    }
    if let Some(desc) = spec.strip_prefix('@') {
        let fields = match desc {
            "yearly" | "annually" => "0 0 1 1 *",
            "monthly" => "0 0 1 * *",
            "weekly" => "0 0 * * 0",
            "daily" | "midnight" => "0 0 * * *",
            "hourly" => "0 * * * *",
            _ => {
                if let Some(d) = desc.strip_prefix("every ") {
                    let ns = parse_go_duration(d.trim())
                        .or_else(|e| err(format!("failed to parse duration {spec}: {e}")))?;
                    let secs = (ns / 1_000_000_000).max(1) as i64;
                    return Ok(CronSchedule::Every { seconds: secs });
                }
                return err(format!("unrecognized descriptor: {spec}"));
            }
        };
        return parse_fields(fields, tz);
    }
    parse_fields(spec, tz)
}

fn parse_fields(spec: &str, tz: Option<Tz>) -> Result<CronSchedule, CronError> {
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return err(format!(
            "expected exactly 5 fields, found {}: {spec}",
            fields.len()
        ));
    }
    let (minute, _) = parse_field(fields[0], &MINUTE)?;
    let (hour, _) = parse_field(fields[1], &HOUR)?;
    let (dom, dom_star) = parse_field(fields[2], &DOM)?;
    let (month, _) = parse_field(fields[3], &MONTH)?;
    let (dow, dow_star) = parse_field(fields[4], &DOW)?;
    Ok(CronSchedule::Spec(FieldSpec {
        minute,
        hour,
        dom,
        month,
        dow,
        dom_star,
        dow_star,
        tz,
    }))
}

fn has(bits: u64, v: u32) -> bool {
    bits & (1u64 << v) != 0
}

impl FieldSpec {
    fn day_matches(&self, d: NaiveDate) -> bool {
        let dom = has(self.dom, d.day());
        let dow = has(self.dow, d.weekday().num_days_from_sunday());
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first matching minute strictly after `after_ms`, in UTC milliseconds.
    fn next(&self, after_ms: i64) -> Option<i64> {
        let tz = self.tz.unwrap_or(Tz::UTC);
        let after = DateTime::<Utc>::from_timestamp_millis(after_ms)?;
        let local = after.with_timezone(&tz).naive_local();
        // The next whole minute strictly after `after` (the seconds field is always 0).
        let minute = Duration::minutes(1);
        let mut t: NaiveDateTime = local
            .with_second(0)?
            .with_nanosecond(0)?
            .checked_add_signed(minute)?;
        let year_limit = local.year().saturating_add(5);
        // Every step moves forward by at least a minute; bounded by the year limit.
        loop {
            if t.year() > year_limit {
                return None;
            }
            if !has(self.month, t.month()) {
                let (y, m) = if t.month() == 12 {
                    (t.year() + 1, 1)
                } else {
                    (t.year(), t.month() + 1)
                };
                t = NaiveDate::from_ymd_opt(y, m, 1)?.and_hms_opt(0, 0, 0)?;
                continue;
            }
            if !self.day_matches(t.date()) {
                t = t.date().succ_opt()?.and_hms_opt(0, 0, 0)?;
                continue;
            }
            if !has(self.hour, t.hour()) {
                t = t.with_minute(0)?.checked_add_signed(Duration::hours(1))?;
                continue;
            }
            if !has(self.minute, t.minute()) {
                t = t.checked_add_signed(minute)?;
                continue;
            }
            // Local time to UTC: a time skipped by a DST change does not happen; a repeated one
            // happens at its first occurrence.
            match tz.from_local_datetime(&t).earliest() {
                Some(at) if at.timestamp_millis() > after_ms => return Some(at.timestamp_millis()),
                _ => t = t.checked_add_signed(minute)?,
            }
        }
    }
}

impl CronSchedule {
    /// The first time of the schedule strictly after `after_ms` (UTC ms), `None` if there is
    /// none within five years.
    pub fn next(&self, after_ms: i64) -> Option<i64> {
        match self {
            CronSchedule::Every { seconds } => {
                // As robfig/cron: t + d, less t's fraction of a second.
                let frac = after_ms.rem_euclid(1000);
                Some(
                    after_ms
                        .saturating_add(seconds.saturating_mul(1000))
                        .saturating_sub(frac),
                )
            }
            CronSchedule::Spec(s) => s.next(after_ms),
        }
    }
}

/// Temporal's cron check: parses, and some time must satisfy the schedule (`now_ms` is only
/// used for that).
pub fn validate(spec: &str, now_ms: i64) -> Result<(), String> {
    if spec.is_empty() {
        return Ok(());
    }
    match parse(spec) {
        Err(_) => Err("invalid CronSchedule.".to_string()),
        Ok(s) if s.next(now_ms).is_none() => {
            Err("invalid CronSchedule, no time can be found to satisfy the schedule".to_string())
        }
        Ok(_) => Ok(()),
    }
}

/// Temporal's backoff to the next cron time: the first schedule time after `scheduled_ms` that
/// is not before `now_ms` (or `scheduled_ms` itself if still ahead), minus `now_ms`, rounded up
/// to whole seconds. `None`: no next time (or no valid schedule).
pub fn backoff_ms(spec: &str, scheduled_ms: i64, now_ms: i64) -> Option<i64> {
    if spec.is_empty() {
        return None;
    }
    let sched = parse(spec).ok()?;
    let next = if now_ms < scheduled_ms {
        scheduled_ms
    } else {
        let mut next = sched.next(scheduled_ms)?;
        // Bounded: each step moves at least a second forward; give up after many.
        let mut steps = 0u32;
        while next < now_ms {
            steps += 1;
            if steps > 1_000_000 {
                // Jump close to now rather than walking (only @every can be this dense).
                next = sched.next(now_ms.saturating_sub(1))?;
                break;
            }
            next = sched.next(next)?;
        }
        next
    };
    let diff = next.saturating_sub(now_ms);
    // Ceil to whole seconds.
    let secs = diff.saturating_add(999).div_euclid(1000);
    Some(secs.saturating_mul(1000))
}

/// `backoff_ms` for a first run: never negative, zero when there is no next time.
pub fn first_backoff_ms(spec: &str, now_ms: i64) -> i64 {
    backoff_ms(spec, now_ms, now_ms).unwrap_or(0).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    fn next(spec: &str, at: &str) -> String {
        let n = parse(spec).unwrap().next(ms(at)).unwrap();
        DateTime::<Utc>::from_timestamp_millis(n)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    #[test]
    fn standard_fields() {
        assert_eq!(
            next("* * * * *", "2024-01-01T00:00:00Z"),
            "2024-01-01T00:01:00.000Z"
        );
        assert_eq!(
            next("* * * * *", "2024-01-01T00:00:30.5Z"),
            "2024-01-01T00:01:00.000Z"
        );
        assert_eq!(
            next("*/15 * * * *", "2024-01-01T00:16:00Z"),
            "2024-01-01T00:30:00.000Z"
        );
        assert_eq!(
            next("5/20 * * * *", "2024-01-01T00:26:00Z"),
            "2024-01-01T00:45:00.000Z"
        );
        assert_eq!(
            next("0 9 * * mon-fri", "2024-01-05T10:00:00Z"),
            "2024-01-08T09:00:00.000Z"
        );
        assert_eq!(
            next("0 0 29 feb *", "2024-03-01T00:00:00Z"),
            "2028-02-29T00:00:00.000Z"
        );
        // Day of month OR day of week when neither is a star.
        assert_eq!(
            next("0 0 13 * 5", "2024-01-01T00:00:00Z"),
            "2024-01-05T00:00:00.000Z"
        );
        assert_eq!(
            next("@daily", "2024-01-01T12:00:00Z"),
            "2024-01-02T00:00:00.000Z"
        );
        assert_eq!(
            next("@hourly", "2024-01-01T12:00:00Z"),
            "2024-01-01T13:00:00.000Z"
        );
        assert_eq!(
            next("@weekly", "2024-01-01T12:00:00Z"),
            "2024-01-07T00:00:00.000Z"
        );
        assert_eq!(
            next("@yearly", "2024-01-01T12:00:00Z"),
            "2025-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn time_zones() {
        assert_eq!(
            next("CRON_TZ=America/New_York 0 9 * * *", "2024-01-01T00:00:00Z"),
            "2024-01-01T14:00:00.000Z"
        );
        assert_eq!(
            next("TZ=Asia/Tokyo 30 8 * * *", "2024-01-01T00:00:00Z"),
            "2024-01-01T23:30:00.000Z"
        );
        // 02:30 does not exist on the spring-forward day in New York.
        assert_eq!(
            next(
                "CRON_TZ=America/New_York 30 2 * * *",
                "2024-03-10T05:00:00Z"
            ),
            "2024-03-11T06:30:00.000Z"
        );
    }

    #[test]
    fn every() {
        assert_eq!(
            parse("@every 2s").unwrap(),
            CronSchedule::Every { seconds: 2 }
        );
        assert_eq!(
            parse("@every 1h30m").unwrap(),
            CronSchedule::Every { seconds: 5400 }
        );
        assert_eq!(
            parse("@every 100ms").unwrap(),
            CronSchedule::Every { seconds: 1 }
        );
        assert_eq!(
            next("@every 2s", "2024-01-01T00:00:00.300Z"),
            "2024-01-01T00:00:02.000Z"
        );
    }

    #[test]
    fn invalid() {
        for bad in [
            "",
            "* * * *",
            "* * * * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 7",
            "5-1 * * * *",
            "*/0 * * * *",
            "@every",
            "@every 2",
            "@every x",
            "@often",
            "CRON_TZ=Mars/Base * * * * *",
            "a * * * *",
            "*/99999999999 * * * *",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(
            validate("0 0 30 2 *", 0).unwrap_err(),
            "invalid CronSchedule, no time can be found to satisfy the schedule"
        );
        assert_eq!(validate("bad", 0).unwrap_err(), "invalid CronSchedule.");
        // A step beyond the field ends the range (no overflow, no endless loop).
        assert_eq!(
            next("*/4294967295 * * * *", "2024-01-01T00:00:30Z"),
            "2024-01-01T01:00:00.000Z"
        );
        // Times at the end of the representable range give no next time rather than panic.
        assert_eq!(
            parse("* * * * *").unwrap().next(8_210_266_876_799_999),
            None
        );
        assert!(validate("", 0).is_ok());
    }

    #[test]
    fn backoff() {
        let now = ms("2024-01-01T00:00:00.300Z");
        assert_eq!(first_backoff_ms("@every 2s", now), 2000);
        assert_eq!(first_backoff_ms("* * * * *", now), 60_000);
        // A run that started at its cron time and closed later waits for the next one.
        let scheduled = ms("2024-01-01T00:01:00Z");
        assert_eq!(
            backoff_ms("* * * * *", scheduled, ms("2024-01-01T00:01:20.5Z")),
            Some(40_000)
        );
        // A run that closed after several cron times skips to the next one after now.
        assert_eq!(
            backoff_ms("* * * * *", scheduled, ms("2024-01-01T00:03:30Z")),
            Some(30_000)
        );
        assert_eq!(backoff_ms("", scheduled, now), None);
        // Dense schedules far behind do not walk forever.
        assert_eq!(
            backoff_ms("@every 1s", 0, ms("2024-01-01T00:00:00.5Z")),
            Some(1000)
        );
    }
}
