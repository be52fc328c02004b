//! Conversions between protobuf timestamps/durations and milliseconds.

use chronicle_proto::wkt::{Duration, Timestamp};

pub fn now_timestamp() -> Timestamp {
    from_millis(now_millis())
}

pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn millis(ts: &Timestamp) -> i64 {
    ts.seconds * 1000 + i64::from(ts.nanos) / 1_000_000
}

pub fn from_millis(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn duration_millis(d: &Duration) -> i64 {
    d.seconds * 1000 + i64::from(d.nanos) / 1_000_000
}

pub fn opt_duration_millis(d: Option<&Duration>) -> i64 {
    d.map(duration_millis).unwrap_or(0)
}

pub fn duration_from_millis(ms: i64) -> Duration {
    Duration {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
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
