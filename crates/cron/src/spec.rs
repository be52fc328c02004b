//! Schedule specs as Temporal's scheduler reads them: structured calendars (every field must
//! match; day of month AND day of week), calendars and cron strings turned into structured
//! calendars, intervals with a phase, exclusion calendars, start/end times, jitter and a time
//! zone. Times are UTC milliseconds; schedule times are whole seconds.

use chronicle_proto::temporal::api::schedule::v1::{
    CalendarSpec, IntervalSpec, Range, ScheduleSpec, StructuredCalendarSpec,
};
use chronicle_proto::wkt::Duration;
use chrono::{Datelike, NaiveDate, TimeZone, Timelike};
use chrono_tz::Tz;

const MIN_YEAR: i32 = 2000;
const MAX_YEAR: i32 = 2100;
const MAX_COMMENT: usize = 200;

fn dur_ms(d: Option<&Duration>) -> i64 {
    d.map(|d| {
        d.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(d.nanos) / 1_000_000)
    })
    .unwrap_or(0)
}

fn ts_ms(t: Option<&chronicle_proto::wkt::Timestamp>) -> Option<i64> {
    t.map(|t| {
        t.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(t.nanos) / 1_000_000)
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Int,
    Year,
    Month,
    Dow,
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];
const DAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

fn parse_value(s: &str, min: i32, max: i32, mode: Mode) -> Result<i32, ()> {
    let lower = s.to_ascii_lowercase();
    let named = match mode {
        Mode::Month if s.len() >= 3 => MONTHS
            .iter()
            .position(|m| m.starts_with(&lower))
            .map(|i| i as i32 + 1),
        Mode::Dow if s.len() >= 2 => DAYS
            .iter()
            .position(|d| d.starts_with(&lower))
            .map(|i| i as i32),
        _ => None,
    };
    if let Some(v) = named {
        return if v < min || v > max { Err(()) } else { Ok(v) };
    }
    let v: i32 = s.parse().map_err(|_| ())?;
    if v < min || v > max { Err(()) } else { Ok(v) }
}

fn make_range(
    s: &str,
    field: &str,
    default: &str,
    min: i32,
    max: i32,
    mode: Mode,
) -> Result<Vec<Range>, String> {
    let mut s = s.trim();
    if s.is_empty() {
        s = default;
    }
    if s == "*" && mode == Mode::Year {
        return Ok(Vec::new());
    }
    let mut ranges = Vec::new();
    for part in s.split(',') {
        let mut part = part;
        let mut step = 1;
        let mut has_step = false;
        match part.matches('/').count() {
            0 => {}
            1 => {
                let (p, st) = part.split_once('/').unwrap_or((part, ""));
                if st.is_empty() {
                    return Err(format!("{field} missing step value"));
                }
                step = st.parse::<i32>().map_err(|e| e.to_string())?;
                if step < 1 {
                    return Err(format!("{field} has invalid Step"));
                }
                has_step = true;
                part = p;
            }
            _ => return Err(format!("{field} has too many slashes")),
        }
        let (mut start, mut end) = (min, max);
        if part != "*" {
            if part.contains('-') {
                let Some((a, b)) = part.split_once('-').filter(|(_, b)| !b.contains('-')) else {
                    return Err(format!("{field} has too many dashes"));
                };
                start = parse_value(a, min, max, mode)
                    .map_err(|_| format!("{field} Start is not in range [{min}-{max}]"))?;
                end = parse_value(b, start, max, mode).map_err(|_| {
                    format!("{field} End is before Start or not in range [{min}-{max}]")
                })?;
            } else {
                start = parse_value(part, min, max, mode)
                    .map_err(|_| format!("{field} is not in range [{min}-{max}]"))?;
                if !has_step {
                    end = start;
                }
            }
        }
        if mode == Mode::Dow && end == 7 {
            // 7 is Sunday too.
            if (7 - start) % step == 0 && (step > 1 || start > 1) {
                ranges.push(Range {
                    start: 0,
                    end: 0,
                    step: 0,
                });
                if start == 7 {
                    continue;
                }
            }
            end = 6;
        }
        ranges.push(Range {
            start,
            end: if start == end { 0 } else { end },
            step: if step == 1 { 0 } else { step },
        });
    }
    Ok(ranges)
}

/// A calendar spec (strings) as a structured one.
pub fn calendar_to_structured(cal: &CalendarSpec) -> Result<StructuredCalendarSpec, String> {
    let mut errs = Vec::new();
    let mut f = |s: &str, field: &str, def: &str, min, max, mode| match make_range(
        s, field, def, min, max, mode,
    ) {
        Ok(r) => r,
        Err(e) => {
            errs.push(e);
            Vec::new()
        }
    };
    let out = StructuredCalendarSpec {
        second: f(&cal.second, "Second", "0", 0, 59, Mode::Int),
        minute: f(&cal.minute, "Minute", "0", 0, 59, Mode::Int),
        hour: f(&cal.hour, "Hour", "0", 0, 23, Mode::Int),
        day_of_week: f(&cal.day_of_week, "DayOfWeek", "*", 0, 7, Mode::Dow),
        day_of_month: f(&cal.day_of_month, "DayOfMonth", "*", 1, 31, Mode::Int),
        month: f(&cal.month, "Month", "*", 1, 12, Mode::Month),
        year: f(&cal.year, "Year", "*", MIN_YEAR, MAX_YEAR, Mode::Year),
        comment: cal.comment.clone(),
    };
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(errs.join(", "))
    }
}

enum CronPart {
    Calendar(StructuredCalendarSpec),
    Interval(IntervalSpec),
}

fn go_duration(s: &str) -> Result<Duration, String> {
    let ns = crate::cron::parse_go_duration(s).map_err(|e| e.to_string())?;
    Ok(Duration {
        seconds: (ns / 1_000_000_000) as i64,
        nanos: (ns % 1_000_000_000) as i32,
    })
}

/// A schedule's cron string: 5 fields (minute to day of week), 6 (and year) or 7 (second
/// first), a descriptor, `@every interval[/phase]`; optional `CRON_TZ=`/`TZ=` and `# comment`.
fn parse_cron_string(c: &str) -> Result<(CronPart, String), String> {
    let mut c = c.trim();
    let mut tz = String::new();
    if c.starts_with("TZ=") || c.starts_with("CRON_TZ=") {
        let Some((t, rest)) = c.split_once(' ') else {
            return Err("CronString has time zone but missing fields".into());
        };
        tz = t
            .split_once('=')
            .map(|(_, n)| n.to_string())
            .unwrap_or_default();
        c = rest;
    }
    let (body, comment) = c.split_once('#').unwrap_or((c, ""));
    let c = body.trim();
    let comment = comment.trim().to_string();
    if c.starts_with("@every") {
        let Some((_, iv)) = c.split_once(' ') else {
            return Err("CronString does not have interval after @every".into());
        };
        let (iv, phase) = iv.split_once('/').unwrap_or((iv, ""));
        let interval = go_duration(iv.trim())?;
        let phase = if phase.is_empty() {
            None
        } else {
            Some(go_duration(phase.trim())?)
        };
        return Ok((
            CronPart::Interval(IntervalSpec {
                interval: Some(interval),
                phase,
            }),
            String::new(),
        ));
    }
    let c = match c {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        other => other,
    };
    let toks: Vec<&str> = c.split_whitespace().collect();
    let mut cal = CalendarSpec {
        comment,
        ..Default::default()
    };
    let s = |i: usize| toks[i].to_string();
    match toks.len() {
        5 => {
            (
                cal.minute,
                cal.hour,
                cal.day_of_month,
                cal.month,
                cal.day_of_week,
            ) = (s(0), s(1), s(2), s(3), s(4))
        }
        6 => {
            (
                cal.minute,
                cal.hour,
                cal.day_of_month,
                cal.month,
                cal.day_of_week,
                cal.year,
            ) = (s(0), s(1), s(2), s(3), s(4), s(5))
        }
        7 => {
            (
                cal.second,
                cal.minute,
                cal.hour,
                cal.day_of_month,
                cal.month,
                cal.day_of_week,
                cal.year,
            ) = (s(0), s(1), s(2), s(3), s(4), s(5), s(6))
        }
        _ => return Err("CronString does not have 5-7 fields".into()),
    }
    Ok((CronPart::Calendar(calendar_to_structured(&cal)?), tz))
}

fn clean_ranges(ranges: &mut [Range]) {
    for r in ranges {
        if r.end < r.start {
            r.end = r.start;
        }
        if r.step == 0 {
            r.step = 1;
        }
    }
}

/// Temporal's CleanSpec: explicit ends and steps in structured ranges.
pub fn clean(spec: &mut ScheduleSpec) {
    for cal in spec
        .structured_calendar
        .iter_mut()
        .chain(spec.exclude_structured_calendar.iter_mut())
    {
        clean_ranges(&mut cal.second);
        clean_ranges(&mut cal.minute);
        clean_ranges(&mut cal.hour);
        clean_ranges(&mut cal.day_of_month);
        clean_ranges(&mut cal.month);
        clean_ranges(&mut cal.year);
        clean_ranges(&mut cal.day_of_week);
    }
}

fn validate_structured(c: &StructuredCalendarSpec) -> Result<(), String> {
    let mut errs = Vec::new();
    let mut check = |ranges: &[Range], field: &str, min: i32, max: i32| {
        for r in ranges {
            if r.start < min || r.start > max {
                errs.push(format!("{field} Start is not in range [{min}-{max}]"));
            }
            if r.end != 0 && (r.end < r.start || r.end > max) {
                errs.push(format!(
                    "{field} End is before Start or not in range [{min}-{max}]"
                ));
            }
            if r.step < 0 {
                errs.push(format!("{field} has invalid Step"));
            }
        }
    };
    check(&c.second, "Second", 0, 59);
    check(&c.minute, "Minute", 0, 59);
    check(&c.hour, "Hour", 0, 23);
    check(&c.day_of_month, "DayOfMonth", 1, 31);
    check(&c.month, "Month", 1, 12);
    check(&c.year, "Year", MIN_YEAR, MAX_YEAR);
    check(&c.day_of_week, "DayOfWeek", 0, 6);
    if c.comment.len() > MAX_COMMENT {
        errs.push("comment is too long".into());
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!("invalid calendar spec: {}", errs.join(", ")))
    }
}

fn validate_interval(i: &IntervalSpec) -> Result<(), String> {
    let iv = dur_ms(i.interval.as_ref());
    let phase = dur_ms(i.phase.as_ref());
    if iv < 1000 {
        Err("interval is too small".into())
    } else if phase < 0 {
        Err("phase is negative".into())
    } else if phase >= iv {
        Err("phase cannot be greater than Interval".into())
    } else {
        Ok(())
    }
}

/// The spec as Temporal stores it: calendars and cron strings as structured calendars (or
/// intervals), the cron strings' time zone as the spec's, everything checked.
pub fn canonicalize(spec: &ScheduleSpec) -> Result<ScheduleSpec, String> {
    let mut spec = spec.clone();
    for cal in std::mem::take(&mut spec.calendar) {
        spec.structured_calendar.push(calendar_to_structured(&cal)?);
    }
    #[allow(deprecated)]
    for cal in std::mem::take(&mut spec.exclude_calendar) {
        spec.exclude_structured_calendar
            .push(calendar_to_structured(&cal)?);
    }
    let mut cron_tz: Option<String> = None;
    for cs in std::mem::take(&mut spec.cron_string) {
        let (part, tz) = parse_cron_string(&cs)?;
        if cron_tz.as_ref().is_some_and(|t| *t != tz) {
            return Err("conflicting timezone names".into());
        }
        cron_tz = Some(tz);
        match part {
            CronPart::Calendar(c) => spec.structured_calendar.push(c),
            CronPart::Interval(i) => spec.interval.push(i),
        }
    }
    if let Some(tz) = cron_tz.filter(|t| !t.is_empty()) {
        if (!spec.timezone_name.is_empty() && spec.timezone_name != tz)
            || !spec.timezone_data.is_empty()
        {
            return Err("conflicting timezone names".into());
        } else if spec.timezone_name.is_empty() {
            spec.timezone_name = tz;
        }
    }
    for c in &spec.structured_calendar {
        validate_structured(c)?;
    }
    for i in &spec.interval {
        validate_interval(i)?;
    }
    load_tz(&spec.timezone_name)?;
    Ok(spec)
}

fn load_tz(name: &str) -> Result<Tz, String> {
    if name.is_empty() || name == "UTC" {
        return Ok(Tz::UTC);
    }
    name.parse::<Tz>()
        .map_err(|_| format!("unknown time zone {name}"))
}

struct Calendar {
    year: Vec<i32>,
    month: u64,
    dom: u64,
    dow: u64,
    hour: u64,
    minute: u64,
    second: u64,
}

fn bits(ranges: &[Range]) -> u64 {
    let mut b = 0u64;
    for r in ranges {
        let step = if r.step <= 0 { 1 } else { r.step };
        let end = r.end.max(r.start);
        let mut v = r.start;
        while v <= end {
            if (0..64).contains(&v) {
                b |= 1 << v;
            }
            v = v.saturating_add(step);
        }
    }
    b
}

fn years(ranges: &[Range]) -> Vec<i32> {
    let mut out = Vec::new();
    for r in ranges {
        let step = if r.step <= 0 { 1 } else { r.step };
        let end = r.end.max(r.start).min(MAX_YEAR);
        let mut v = r.start;
        while v <= end {
            out.push(v);
            v = v.saturating_add(step);
        }
    }
    out
}

fn has(bits: u64, v: u32) -> bool {
    v < 64 && bits & (1 << v) != 0
}

impl Calendar {
    fn new(c: &StructuredCalendarSpec) -> Self {
        Self {
            year: years(&c.year),
            month: bits(&c.month),
            dom: bits(&c.day_of_month),
            dow: bits(&c.day_of_week),
            hour: bits(&c.hour),
            minute: bits(&c.minute),
            second: bits(&c.second),
        }
    }

    fn year_ok(&self, y: i32) -> bool {
        self.year.is_empty() || self.year.contains(&y)
    }

    fn day_ok(&self, d: NaiveDate) -> bool {
        has(self.month, d.month())
            && has(self.dom, d.day())
            && has(self.dow, d.weekday().num_days_from_sunday())
            && self.year_ok(d.year())
    }

    fn matches(&self, tz: Tz, at_ms: i64) -> bool {
        let Some(t) = tz.timestamp_millis_opt(at_ms).single() else {
            return false;
        };
        let t = t.naive_local();
        self.day_ok(t.date())
            && has(self.hour, t.hour())
            && has(self.minute, t.minute())
            && has(self.second, t.second())
    }

    /// The first matching second strictly after `after_ms`.
    fn next(&self, tz: Tz, after_ms: i64) -> Option<i64> {
        let after_s = after_ms.div_euclid(1000);
        let local = tz.timestamp_opt(after_s, 0).single()?.naive_local();
        let mut day = local.date();
        // Days from the one of `after` on, up to the last calendar year.
        loop {
            if day.year() > MAX_YEAR {
                return None;
            }
            if !self.year_ok(day.year()) {
                day = NaiveDate::from_ymd_opt(day.year() + 1, 1, 1)?;
                continue;
            }
            if !has(self.month, day.month()) {
                let (y, m) = if day.month() == 12 {
                    (day.year() + 1, 1)
                } else {
                    (day.year(), day.month() + 1)
                };
                day = NaiveDate::from_ymd_opt(y, m, 1)?;
                continue;
            }
            if self.day_ok(day) {
                for h in (0..24).filter(|h| has(self.hour, *h)) {
                    for m in (0..60).filter(|m| has(self.minute, *m)) {
                        for s in (0..60).filter(|s| has(self.second, *s)) {
                            let naive = day.and_hms_opt(h, m, s)?;
                            // A time a DST change skips does not happen; a repeated one
                            // happens at its first occurrence.
                            if let Some(at) = tz.from_local_datetime(&naive).earliest() {
                                let at_s = at.timestamp();
                                if at_s > after_s {
                                    return Some(at_s.saturating_mul(1000));
                                }
                            }
                        }
                    }
                }
            }
            day = day.succ_opt()?;
        }
    }
}

/// A compiled spec: `next` gives the schedule's times.
pub struct CompiledSpec {
    tz: Tz,
    calendars: Vec<Calendar>,
    excludes: Vec<Calendar>,
    intervals: Vec<(i64, i64)>,
    start_ms: Option<i64>,
    end_ms: Option<i64>,
    jitter_ms: i64,
}

/// One schedule time: `nominal` from the spec, `actual` with jitter added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextTime {
    pub nominal: i64,
    pub actual: i64,
}

/// A deterministic hash (FNV-1a, 64 bits).
fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl CompiledSpec {
    /// Compiles a spec in canonical form (see [`canonicalize`]).
    pub fn new(spec: &ScheduleSpec) -> Result<Self, String> {
        Ok(Self {
            tz: load_tz(&spec.timezone_name)?,
            calendars: spec.structured_calendar.iter().map(Calendar::new).collect(),
            excludes: spec
                .exclude_structured_calendar
                .iter()
                .map(Calendar::new)
                .collect(),
            intervals: spec
                .interval
                .iter()
                .map(|i| {
                    (
                        (dur_ms(i.interval.as_ref()) / 1000).max(1),
                        (dur_ms(i.phase.as_ref()) / 1000).max(0),
                    )
                })
                .collect(),
            start_ms: ts_ms(spec.start_time.as_ref()),
            end_ms: ts_ms(spec.end_time.as_ref()),
            jitter_ms: dur_ms(spec.jitter.as_ref()).max(0),
        })
    }

    fn raw_next(&self, after_ms: i64) -> Option<i64> {
        let mut best: Option<i64> = None;
        for c in &self.calendars {
            if let Some(n) = c.next(self.tz, after_ms) {
                best = Some(best.map_or(n, |b| b.min(n)));
            }
        }
        let ts = after_ms.div_euclid(1000);
        for (interval, phase) in &self.intervals {
            let k = (ts.saturating_sub(*phase))
                .div_euclid(*interval)
                .saturating_add(1);
            let n = k
                .saturating_mul(*interval)
                .saturating_add(*phase)
                .saturating_mul(1000);
            best = Some(best.map_or(n, |b| b.min(n)));
        }
        best
    }

    fn excluded(&self, at_ms: i64) -> bool {
        self.excludes.iter().any(|c| c.matches(self.tz, at_ms))
    }

    /// The first schedule time whose nominal time is after `after_ms`: within start and end
    /// time, not excluded, with the jitter that `seed` and the time derive.
    pub fn next(&self, seed: &str, after_ms: i64) -> Option<NextTime> {
        let mut after = after_ms;
        if let Some(start) = self.start_ms {
            after = after.max(start.saturating_sub(1000));
        }
        let mut nominal;
        let mut iterations = 0u32;
        loop {
            iterations += 1;
            if iterations > 100_000 {
                return None;
            }
            nominal = self.raw_next(after)?;
            if self.end_ms.is_some_and(|end| nominal > end)
                || chrono::DateTime::from_timestamp_millis(nominal)
                    .is_none_or(|t| t.year() > MAX_YEAR)
            {
                return None;
            }
            if !self.excluded(nominal) {
                break;
            }
            after = nominal;
        }
        let mut max_jitter = self.jitter_ms;
        if let Some(following) = self.raw_next(nominal) {
            max_jitter = max_jitter.min(following.saturating_sub(nominal));
        }
        let jitter = if max_jitter > 0 {
            let mut bytes = nominal.to_be_bytes().to_vec();
            bytes.extend_from_slice(seed.as_bytes());
            let fp = fnv(&bytes) >> 32;
            ((fp * (max_jitter.min(u32::MAX as i64) as u64)) >> 32) as i64
        } else {
            0
        };
        Some(NextTime {
            nominal,
            actual: nominal.saturating_add(jitter),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    fn fmt(ms: i64) -> String {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    fn times(spec: ScheduleSpec, from: &str, n: usize) -> Vec<String> {
        let c = CompiledSpec::new(&canonicalize(&spec).unwrap()).unwrap();
        let mut t = ms(from);
        let mut out = Vec::new();
        for _ in 0..n {
            let Some(next) = c.next("seed", t) else { break };
            out.push(fmt(next.actual));
            t = next.actual;
        }
        out
    }

    fn secs(s: i64) -> Option<Duration> {
        Some(Duration {
            seconds: s,
            nanos: 0,
        })
    }

    #[test]
    fn intervals_with_phase() {
        let spec = ScheduleSpec {
            interval: vec![IntervalSpec {
                interval: secs(3600),
                phase: secs(900),
            }],
            ..Default::default()
        };
        assert_eq!(
            times(spec, "2024-01-01T00:20:00Z", 2),
            ["2024-01-01T01:15:00Z", "2024-01-01T02:15:00Z"]
        );
    }

    #[test]
    fn cron_strings_and_calendars() {
        let spec = ScheduleSpec {
            cron_string: vec!["30 9 * * mon-fri".into()],
            ..Default::default()
        };
        assert_eq!(
            times(spec, "2024-01-05T10:00:00Z", 2),
            ["2024-01-08T09:30:00Z", "2024-01-09T09:30:00Z"]
        );
        let spec = ScheduleSpec {
            calendar: vec![CalendarSpec {
                hour: "12".into(),
                day_of_month: "1".into(),
                day_of_week: "*".into(),
                ..Default::default()
            }],
            timezone_name: "America/New_York".into(),
            ..Default::default()
        };
        assert_eq!(
            times(spec, "2024-01-05T00:00:00Z", 2),
            ["2024-02-01T17:00:00Z", "2024-03-01T17:00:00Z"]
        );
        // Seconds and @every with a phase.
        let spec = ScheduleSpec {
            cron_string: vec!["*/20 * * * * * *".into(), "@every 1h/5m".into()],
            ..Default::default()
        };
        assert_eq!(
            times(spec, "2024-01-01T00:04:30Z", 3),
            [
                "2024-01-01T00:04:40Z",
                "2024-01-01T00:05:00Z",
                "2024-01-01T00:05:20Z"
            ]
        );
    }

    #[test]
    fn canonical_form() {
        let spec = canonicalize(&ScheduleSpec {
            cron_string: vec!["CRON_TZ=Asia/Tokyo 0 12 * * 1-5 # lunch".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(spec.cron_string.is_empty());
        assert_eq!(spec.timezone_name, "Asia/Tokyo");
        let cal = &spec.structured_calendar[0];
        assert_eq!(cal.comment, "lunch");
        assert_eq!(
            cal.hour,
            vec![Range {
                start: 12,
                end: 0,
                step: 0
            }]
        );
        assert_eq!(
            cal.day_of_week,
            vec![Range {
                start: 1,
                end: 5,
                step: 0
            }]
        );
        assert!(
            canonicalize(&ScheduleSpec {
                cron_string: vec!["61 * * * *".into()],
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            canonicalize(&ScheduleSpec {
                interval: vec![IntervalSpec {
                    interval: secs(10),
                    phase: secs(10)
                }],
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            canonicalize(&ScheduleSpec {
                timezone_name: "Nowhere/Land".into(),
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn excludes_start_end_and_jitter() {
        let spec = ScheduleSpec {
            interval: vec![IntervalSpec {
                interval: secs(3600),
                phase: None,
            }],
            exclude_structured_calendar: vec![
                calendar_to_structured(&CalendarSpec {
                    hour: "2".into(),
                    minute: "*".into(),
                    second: "*".into(),
                    ..Default::default()
                })
                .unwrap(),
            ],
            start_time: Some(chronicle_proto::wkt::Timestamp {
                seconds: ms("2024-01-01T01:00:00Z") / 1000,
                nanos: 0,
            }),
            end_time: Some(chronicle_proto::wkt::Timestamp {
                seconds: ms("2024-01-01T04:00:00Z") / 1000,
                nanos: 0,
            }),
            ..Default::default()
        };
        assert_eq!(
            times(spec.clone(), "2023-12-31T00:00:00Z", 5),
            [
                "2024-01-01T01:00:00Z",
                "2024-01-01T03:00:00Z",
                "2024-01-01T04:00:00Z"
            ]
        );
        let mut jittered = spec;
        jittered.jitter = secs(600);
        let c = CompiledSpec::new(&canonicalize(&jittered).unwrap()).unwrap();
        let n = c.next("a", ms("2023-12-31T00:00:00Z")).unwrap();
        assert_eq!(n.nominal, ms("2024-01-01T01:00:00Z"));
        assert!(n.actual >= n.nominal && n.actual < n.nominal + 600_000);
        assert_eq!(c.next("a", ms("2023-12-31T00:00:00Z")), Some(n));
    }
}
