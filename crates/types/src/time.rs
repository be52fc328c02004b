//! Conversions between protobuf timestamps/durations and milliseconds.
//!
//! Timestamps and durations come from clients and end up in log entries that every replica
//! applies, again on every replay: the conversions saturate at `i64::MIN`/`i64::MAX` rather than
//! wrap (release builds) or panic (debug builds), and deadline arithmetic on their results must
//! saturate too (`saturating_add`). The frontend refuses values outside Temporal's ranges.

use chronicle_proto::wkt::{Duration, Timestamp};

pub fn now_timestamp() -> Timestamp {
    from_millis(now_millis())
}

pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Milliseconds since the epoch, saturating.
pub fn millis(ts: &Timestamp) -> i64 {
    seconds_nanos_millis(ts.seconds, ts.nanos)
}

pub fn from_millis(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// Milliseconds of a duration, saturating.
pub fn duration_millis(d: &Duration) -> i64 {
    seconds_nanos_millis(d.seconds, d.nanos)
}

fn seconds_nanos_millis(seconds: i64, nanos: i32) -> i64 {
    // Exact in i128 (the product cannot overflow there), then clamped to i64.
    let ms = i128::from(seconds) * 1000 + i128::from(nanos) / 1_000_000;
    i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
}

pub fn opt_duration_millis(d: Option<&Duration>) -> i64 {
    d.map(duration_millis).unwrap_or(0)
}

/// A valid `google.protobuf.Duration`: seconds and nanos of the same sign (a negative
/// duration, e.g. the execution duration of a run closed before its delayed first task, must
/// not come out as -1 s + 491 ms, which protojson refuses).
pub fn duration_from_millis(ms: i64) -> Duration {
    Duration {
        seconds: ms / 1000,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// A duration field as Temporal's command checks read it: absent is zero, seconds and nanos of
/// opposite signs or a negative value are refused (zero is valid).
pub fn checked_duration_millis(d: Option<&Duration>) -> Result<i64, &'static str> {
    let Some(d) = d else { return Ok(0) };
    if (d.seconds > 0 && d.nanos < 0) || (d.seconds < 0 && d.nanos > 0) {
        return Err("duration has seconds and nanos of opposite signs");
    }
    if d.seconds < 0 || d.nanos < 0 {
        return Err("negative duration");
    }
    Ok(duration_millis(d))
}

/// Milliseconds as a float (e.g. a backoff computed with a coefficient) back to `i64`: NaN is 0,
/// and values beyond `i64`'s range clamp to it (`as` saturates; this names the intent).
pub fn millis_from_f64(ms: f64) -> i64 {
    if ms.is_nan() {
        0
    } else {
        ms.clamp(i64::MIN as f64, i64::MAX as f64) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_saturate_at_the_extremes() {
        let ts = |seconds, nanos| Timestamp { seconds, nanos };
        let d = |seconds, nanos| Duration { seconds, nanos };
        assert_eq!(millis(&ts(i64::MAX, 999_999_999)), i64::MAX);
        assert_eq!(millis(&ts(i64::MAX / 1000 + 1, 0)), i64::MAX);
        assert_eq!(millis(&ts(i64::MIN, -999_999_999)), i64::MIN);
        assert_eq!(millis(&ts(i64::MIN / 1000 - 1, 0)), i64::MIN);
        assert_eq!(duration_millis(&d(i64::MAX, i32::MAX)), i64::MAX);
        assert_eq!(duration_millis(&d(i64::MIN, i32::MIN)), i64::MIN);
        // Out-of-range nanos still count, without overflow.
        assert_eq!(duration_millis(&d(1, i32::MAX)), 1000 + 2147);
        assert_eq!(duration_millis(&d(0, i32::MIN)), -2147);
        assert_eq!(opt_duration_millis(None), 0);
        // In range, exact.
        assert_eq!(millis(&ts(1_700_000_000, 123_456_789)), 1_700_000_000_123);
        assert_eq!(duration_millis(&d(-1, 0)), -1000);
        // Negative durations keep seconds and nanos of one sign.
        assert_eq!(duration_from_millis(-509), d(0, -509_000_000));
        assert_eq!(duration_from_millis(-1509), d(-1, -509_000_000));
    }

    #[test]
    fn millis_round_trip_at_the_extremes() {
        for ms in [
            i64::MIN,
            i64::MIN + 1,
            -1,
            0,
            1,
            999,
            1000,
            i64::MAX - 1,
            i64::MAX,
        ] {
            assert_eq!(millis(&from_millis(ms)), ms, "{ms}");
            assert_eq!(duration_millis(&duration_from_millis(ms)), ms, "{ms}");
            let ts = from_millis(ms);
            assert!((0..1_000_000_000).contains(&ts.nanos));
        }
    }

    #[test]
    fn float_millis_clamp() {
        assert_eq!(millis_from_f64(f64::NAN), 0);
        assert_eq!(millis_from_f64(f64::INFINITY), i64::MAX);
        assert_eq!(millis_from_f64(f64::NEG_INFINITY), i64::MIN);
        assert_eq!(millis_from_f64(1e300), i64::MAX);
        assert_eq!(millis_from_f64(1234.9), 1234);
    }
}
