//! Properties of the time conversions (`chronicle_types::time`): exact in range, saturating
//! beyond it, never panicking, and producing valid protobuf values.

use chronicle_proto::wkt::{Duration, Timestamp};
use chronicle_types::time;
use proptest::prelude::*;

proptest! {
    #[test]
    fn millis_round_trip_through_timestamps_and_durations(ms in any::<i64>()) {
        let ts = time::from_millis(ms);
        prop_assert!((0..1_000_000_000).contains(&ts.nanos));
        prop_assert_eq!(time::millis(&ts), ms);
        let d = time::duration_from_millis(ms);
        prop_assert!(d.seconds == 0 || d.nanos == 0 || (d.seconds < 0) == (d.nanos < 0));
        prop_assert_eq!(time::duration_millis(&d), ms);
    }

    #[test]
    fn any_timestamp_or_duration_converts_exactly_or_saturates(seconds in any::<i64>(), nanos in any::<i32>()) {
        let exact = i128::from(seconds) * 1000 + i128::from(nanos) / 1_000_000;
        let expected = exact.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        prop_assert_eq!(time::millis(&Timestamp { seconds, nanos }), expected);
        prop_assert_eq!(time::duration_millis(&Duration { seconds, nanos }), expected);
    }

    #[test]
    fn checked_durations_refuse_negatives_and_mixed_signs(seconds in any::<i64>(), nanos in any::<i32>()) {
        let d = Duration { seconds, nanos };
        match time::checked_duration_millis(Some(&d)) {
            Ok(ms) => {
                prop_assert!(seconds >= 0 && nanos >= 0);
                prop_assert!(ms >= 0);
                prop_assert_eq!(ms, time::duration_millis(&d));
            }
            Err(_) => prop_assert!(seconds < 0 || nanos < 0),
        }
    }

    #[test]
    fn float_millis_clamp_and_keep_order(a in any::<f64>(), b in any::<f64>()) {
        let (x, y) = (time::millis_from_f64(a), time::millis_from_f64(b));
        if a.is_nan() { prop_assert_eq!(x, 0); }
        if !a.is_nan() && !b.is_nan() && a <= b { prop_assert!(x <= y); }
    }

    #[test]
    fn deadline_arithmetic_on_converted_values_saturates(now in any::<i64>(), seconds in any::<i64>(), nanos in any::<i32>()) {
        // The pattern apply uses: now + a client's duration, saturating, never below now for a
        // non-negative duration.
        let d = time::duration_millis(&Duration { seconds, nanos });
        let deadline = now.saturating_add(d);
        if d >= 0 { prop_assert!(deadline >= now); } else { prop_assert!(deadline <= now); }
        let ts = time::from_millis(deadline);
        prop_assert_eq!(time::millis(&ts), deadline);
    }
}
