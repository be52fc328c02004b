//! Properties of cron strings and schedule specs: parsing never panics, the next time is after
//! the given one and matches, nothing matches in between, and jitter stays in its bounds.

use chronicle_cron::cron::{CronSchedule, parse};
use chronicle_cron::spec::{CompiledSpec, canonicalize};
use chronicle_proto::temporal::api::schedule::v1::{IntervalSpec, ScheduleSpec};
use chrono::{DateTime, Datelike, Timelike, Utc};
use proptest::prelude::*;

/// 2000-01-01 .. 2090-01-01 in ms.
fn any_time() -> impl Strategy<Value = i64> {
    946_684_800_000i64..3_786_912_000_000i64
}

fn field(max: u32, min: u32) -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        (min..=max).prop_map(|v| v.to_string()),
        (min..=max, min..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        (1u32..=max.max(1)).prop_map(|s| format!("*/{s}")),
        (min..=max, min..=max).prop_map(|(a, b)| format!("{a},{b}")),
    ]
}

fn cron_fields() -> impl Strategy<Value = String> {
    (
        field(59, 0),
        field(23, 0),
        field(31, 1),
        field(12, 1),
        field(6, 0),
    )
        .prop_map(|(a, b, c, d, e)| format!("{a} {b} {c} {d} {e}"))
}

fn matches(s: &CronSchedule, t: DateTime<Utc>) -> bool {
    let CronSchedule::Spec(f) = s else {
        return true;
    };
    let has = |bits: u64, v: u32| bits & (1 << v) != 0;
    let dom = has(f.dom, t.day());
    let dow = has(f.dow, t.weekday().num_days_from_sunday());
    let day = if f.dom_star || f.dow_star {
        dom && dow
    } else {
        dom || dow
    };
    t.second() == 0
        && has(f.minute, t.minute())
        && has(f.hour, t.hour())
        && has(f.month, t.month())
        && day
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn parsing_never_panics(s in "\\PC{0,40}") {
        let _ = parse(&s);
        let _ = chronicle_cron::validate(&s, 0);
        let _ = canonicalize(&ScheduleSpec { cron_string: vec![s], ..Default::default() });
    }

    #[test]
    fn next_cron_time_is_the_first_match_after(spec in cron_fields(), t in any_time()) {
        let sched = parse(&spec).expect("generated specs parse");
        if let Some(next) = sched.next(t) {
            prop_assert!(next > t);
            let at = DateTime::<Utc>::from_timestamp_millis(next).unwrap();
            prop_assert!(matches(&sched, at), "{spec} at {at}");
            // No matching minute in between (checked over at most two days).
            let mut m = (t.div_euclid(60_000) + 1) * 60_000;
            let mut steps = 0;
            while m < next && steps < 2 * 24 * 60 {
                let mt = DateTime::<Utc>::from_timestamp_millis(m).unwrap();
                prop_assert!(!matches(&sched, mt), "{spec}: {mt} matches before {at}");
                m += 60_000;
                steps += 1;
            }
        }
    }

    #[test]
    fn cron_backoff_is_whole_seconds_and_not_negative(spec in cron_fields(), t in any_time(), d in 0i64..10_000_000) {
        if let Some(b) = chronicle_cron::backoff_ms(&spec, t, t + d) {
            prop_assert!(b >= 0);
            prop_assert_eq!(b % 1000, 0);
        }
    }

    #[test]
    fn interval_times_are_on_the_grid_and_jitter_bounded(
        every in 1i64..100_000,
        phase_frac in 0.0f64..1.0,
        jitter in 0i64..200_000,
        t in any_time(),
        seed in "[a-z]{0,8}",
    ) {
        let phase = ((every as f64) * phase_frac) as i64;
        let spec = canonicalize(&ScheduleSpec {
            interval: vec![IntervalSpec {
                interval: Some(chronicle_proto::wkt::Duration { seconds: every, nanos: 0 }),
                phase: Some(chronicle_proto::wkt::Duration { seconds: phase, nanos: 0 }),
            }],
            jitter: Some(chronicle_proto::wkt::Duration { seconds: jitter / 1000, nanos: 0 }),
            ..Default::default()
        }).expect("valid");
        let c = CompiledSpec::new(&spec).unwrap();
        let n = c.next(&seed, t).expect("intervals never end");
        prop_assert!(n.nominal > t.div_euclid(1000) * 1000);
        prop_assert_eq!((n.nominal / 1000 - phase).rem_euclid(every), 0);
        prop_assert!(n.nominal - t <= every * 1000 + 1000);
        let max = (jitter / 1000 * 1000).min(every * 1000);
        prop_assert!(n.actual >= n.nominal && (n.actual - n.nominal) <= max);
        prop_assert_eq!(c.next(&seed, t), Some(n));
    }
}
