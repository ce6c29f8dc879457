//! Registry client tests without a registry: the rate rule, challenges,
//! credentials.

use super::*;

/// Feeds `bytes_at(second)` bytes each second for `secs` seconds,
/// checking the rule every second; the second it fails, if it does.
fn run_rate(
    window: u64,
    min_rate: u64,
    secs: u64,
    bytes_at: impl Fn(u64) -> u64,
) -> (Option<u64>, usize) {
    let t0 = Instant::now();
    let mut r = RateWindow::new(Duration::from_secs(window), min_rate, t0);
    let mut most_slots = 0;
    for s in 0..secs {
        let now = t0 + Duration::from_secs(s);
        let n = bytes_at(s);
        if n > 0 {
            r.record(now, n);
        }
        most_slots = most_slots.max(r.slots.len());
        if r.check(now).is_err() {
            return (Some(s), most_slots);
        }
    }
    (None, most_slots)
}

#[test]
fn a_trickle_is_cancelled_within_about_one_window() {
    // One byte a minute (and one every four minutes) against 1 KiB/s
    // over 5 minutes: cancelled when the first window closes.
    let per_minute = |s: u64| u64::from(s.is_multiple_of(60));
    assert_eq!(run_rate(300, 1024, 3600, per_minute).0, Some(300));
    let per_four = |s: u64| u64::from(s.is_multiple_of(240));
    assert_eq!(run_rate(300, 1024, 3600, per_four).0, Some(300));
    // Bursts that beat any per-chunk timeout but average 100 B/s.
    let bursts = |s: u64| if s.is_multiple_of(10) { 1000 } else { 0 };
    assert_eq!(run_rate(300, 1024, 3600, bursts).0, Some(300));
    // A link that turns to a trickle later is cancelled about one
    // window after it slowed down.
    let fades = |s: u64| if s < 1000 { 100_000 } else { 1 };
    let (at, _) = run_rate(300, 1024, 3600, fades);
    let at = at.expect("cancelled");
    assert!((1000..=1000 + 300 + 300 / 16 + 1).contains(&at), "{at}");
    // Nothing at all: one window.
    assert_eq!(run_rate(60, 0, 600, |_| 0).0, Some(60));
}

#[test]
fn a_slow_but_real_link_is_not_cancelled() {
    // Just above the rate, for an hour.
    assert_eq!(run_rate(300, 1024, 3600, |_| 1100).0, None);
    // 4 KiB/s with a 200 s stall every 10 minutes: every window still
    // averages more than 1 KiB/s.
    let stalls = |s: u64| if s % 600 < 200 { 0 } else { 4096 };
    assert_eq!(run_rate(300, 1024, 3600, stalls).0, None);
    // With rate 0, one byte per window is enough.
    assert_eq!(
        run_rate(60, 0, 3600, |s| u64::from(s.is_multiple_of(59))).0,
        None
    );
}

#[test]
fn the_rate_window_holds_a_bounded_number_of_slots() {
    // Every second for an hour: at most one window of slots (16) and
    // the one that overlaps its start.
    let (_, most) = run_rate(300, 1, 3600, |_| 1 << 20);
    assert!(most <= RateWindow::SLOTS as usize + 2, "{most}");
    // A zero window does not spin: it is raised to a usable tick.
    let r = RateWindow::new(Duration::ZERO, 1, Instant::now());
    assert!(r.tick() >= Duration::from_millis(10));
}

#[test]
fn challenges() {
    match parse_challenge(
        r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
    ) {
        Some(Challenge::Bearer { realm, service }) => {
            assert_eq!(realm, "https://auth.example/token");
            assert_eq!(service, "registry.example");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        parse_challenge(r#"Basic realm="Registry Realm""#),
        Some(Challenge::Basic)
    ));
    assert!(parse_challenge("Negotiate").is_none());
    assert!(
        parse_challenge("Bearer service=x").is_none(),
        "realm is required"
    );
}

#[test]
fn credentials_from_auth() {
    let c = |a: Auth<'_>| Credentials::from_auth(&a);
    assert_eq!(c(Auth::default()).unwrap(), Credentials::Anonymous);
    assert_eq!(
        c(Auth {
            auth: "YWxpY2U6czNjcjN0",
            ..Default::default()
        })
        .unwrap(),
        Credentials::Basic {
            username: "alice".into(),
            password: "s3cr3t".into()
        }
    );
    assert!(
        c(Auth {
            auth: "!!",
            ..Default::default()
        })
        .is_err()
    );
    assert_eq!(
        c(Auth {
            username: "u",
            registry_token: "t",
            ..Default::default()
        })
        .unwrap(),
        Credentials::RegistryToken("t".into())
    );
    assert!(matches!(
        c(Auth {
            identity_token: "r",
            ..Default::default()
        })
        .unwrap(),
        Credentials::IdentityToken { .. }
    ));
    let dbg = format!(
        "{:?}",
        Credentials::Basic {
            username: "alice".into(),
            password: "s3cr3t".into()
        }
    );
    assert!(!dbg.contains("s3cr3t") && !dbg.contains("alice"));
}
