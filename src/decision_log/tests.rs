//! Tests of the decision log: the line format (byte for byte), the queue, the modes.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::line::Queue;
use super::*;
use crate::identity::Identity;
use crate::policy::Decision;
use crate::reason::Reason;

/// A writer into a shared buffer, for the writer thread's output.
#[derive(Clone)]
pub(super) struct Sink(pub(super) Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A `GET` of `path` on host `h`, nothing else known.
pub(super) fn get(path: &str) -> AuthRequest<'_> {
    AuthRequest {
        method: "GET",
        path,
        host: "h",
        token: None,
        src: None,
        request_id: None,
        browser: Default::default(),
    }
}

/// An enforced outcome with no caller and no names: only `reason`.
pub(super) fn bare(reason: Reason) -> Outcome {
    Outcome {
        decision: Decision::bare(reason),
        identity: None,
        credential_error: None,
        shadow: false,
        token_fp: None,
        browser: Default::default(),
    }
}

#[test]
fn fingerprint_is_short_and_stable() {
    assert_eq!(fingerprint("abc"), "ba7816bf8f01");
    assert_eq!(fingerprint("abc").len(), 12);
}

#[test]
fn line_is_valid_json_with_escapes_and_no_token() {
    let token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl";
    let req = AuthRequest {
        method: "GET",
        path: "/a\"b\\c\nd\u{1}",
        host: "h",
        token: Some(token),
        src: Some("10.0.0.1".parse().unwrap()),
        request_id: None,
        browser: Default::default(),
    };
    let outcome = Outcome {
        decision: Decision::bare(Reason::Ok),
        identity: Some(Arc::new(Identity {
            issuer: "iss".into(),
            sub: Some("al\"ice".into()),
            ..Default::default()
        })),
        credential_error: None,
        shadow: true,
        token_fp: Some({
            let d = crate::token::token_digest(token);
            [d[0], d[1], d[2], d[3], d[4], d[5]]
        }),
        browser: Default::default(),
    };
    let line = format_line(
        &req,
        &outcome,
        Duration::from_micros(42),
        SystemTime::UNIX_EPOCH,
    );
    assert!(line.ends_with('\n'));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["path"], "/a\"b\\c\nd\u{1}");
    assert_eq!(v["sub"], "al\"ice");
    assert_eq!(v["enforced"], false);
    assert_eq!(v["latency_us"], 42);
    assert_eq!(v["request_id"], serde_json::Value::Null);
    assert_eq!(v["token_fp"], fingerprint(token));
    assert!(
        !line.contains("c2lnbmF0dXJl") && !line.contains("eyJ"),
        "{line}"
    );
}

/// Lines exactly as the hand-written writer made them before serde_json (issue 12):
/// every escape, both address families, a shadow decision, the fingerprint; plus the
/// caller fields `stagedoor replay` reads, at the end (issue 16).
#[test]
fn lines_are_byte_for_byte_what_they_were() {
    let id = Arc::new(Identity {
        issuer: "https://i\u{2028}x".into(),
        sub: Some("s\u{e9}\"\\\u{8}\u{c}\u{1f}\u{7f}\u{2029}".into()),
        client_id: Some("c".into()),
        ..Default::default()
    });
    let decision = |reason, owner: Option<&str>| {
        Decision::with_names(
            reason,
            Some("component:default/x"),
            owner,
            Some("GET /api x:y"),
            None,
        )
    };
    let first = AuthRequest {
        method: "GET",
        path: "/a\"b\\c\nd\u{1}\r\t",
        host: "h:1",
        token: None,
        src: Some("10.1.2.3".parse().unwrap()),
        request_id: Some("rid\u{0}"),
        browser: Default::default(),
    };
    let shadow_allow = Outcome {
        decision: decision(Reason::Ok, None),
        identity: None,
        credential_error: None,
        shadow: true,
        token_fp: Some([1, 2, 3, 0xab, 0xcd, 0xff]),
        browser: Default::default(),
    };
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let line = format_line(&first, &shadow_allow, Duration::from_micros(1), t0);
    assert_eq!(
        line,
        concat!(
            r#"{"time":"2026-11-18T11:06:40.000Z","event":"decision","request_id":"rid\u0000","src":"10.1.2.3","method":"GET","host":"h:1","path":"/a\"b\\c\nd\u0001\r\t","decision":"allow","enforced":false,"status":200,"reason":"ok","sub":null,"client_id":null,"entity":"component:default/x","owner":null,"route":"GET /api x:y","issuer":null,"latency_us":1,"token_fp":"010203abcdff","caller":null}"#,
            "\n"
        )
    );
    let second = AuthRequest {
        path: "/plain",
        src: Some("2001:db8::1".parse().unwrap()),
        request_id: None,
        browser: Default::default(),
        ..first
    };
    let allow = Outcome {
        decision: decision(Reason::Public, Some("group:default/o")),
        identity: Some(id),
        credential_error: None,
        shadow: false,
        token_fp: None,
        browser: Default::default(),
    };
    let t1 = SystemTime::UNIX_EPOCH + Duration::new(1_795_000_000 + 86_400 * 37, 123_456_789);
    let line = format_line(&second, &allow, Duration::from_micros(8), t1);
    assert_eq!(
        line,
        concat!(
            r#"{"time":"2026-12-25T11:06:40.123Z","event":"decision","request_id":null,"src":"2001:db8::1","method":"GET","host":"h:1","path":"/plain","decision":"allow","enforced":true,"status":200,"reason":"public","sub":"sé\"\\\u0008\u000c\u001f\u2029","client_id":"c","entity":"component:default/x","owner":"group:default/o","route":"GET /api x:y","issuer":"https://i\u2028x","latency_us":8,"token_fp":null,"caller":"verified","email":null,"groups":[],"scopes":[],"user":null}"#,
            "\n"
        )
    );
}

#[test]
fn queued_entries_format_like_single_lines_and_keep_their_reason() {
    let id = Arc::new(Identity {
        issuer: "https://i".into(),
        sub: Some("s\u{e9}".into()),
        client_id: Some("c".into()),
        ..Default::default()
    });
    let mut q = Queue::default();
    let mut want = String::new();
    for (i, reason) in Reason::ALL.into_iter().enumerate() {
        let req = AuthRequest {
            method: "PATCH",
            path: "/p\"",
            host: "h:1",
            token: None,
            src: [
                None,
                Some("::1".parse().unwrap()),
                Some("10.0.0.1".parse().unwrap()),
            ][i % 3],
            request_id: [None, Some(""), Some("rid")][i % 3],
            browser: Default::default(),
        };
        let outcome = Outcome {
            decision: Decision::bare(reason),
            identity: (i % 2 == 0).then(|| id.clone()),
            credential_error: None,
            shadow: i % 4 == 0,
            token_fp: (i % 3 == 0).then_some([1, 2, 3, 4, 5, 255]),
            browser: Default::default(),
        };
        let now = SystemTime::UNIX_EPOCH + Duration::new(1_795_000_000, 123_456_789);
        let latency = Duration::from_micros(7);
        q.push(&req, &outcome, latency, now, true);
        let line = format_line(&req, &outcome, latency, now);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["reason"], reason.as_str(), "{line}");
        want.push_str(&line);
    }
    let mut got = Vec::new();
    q.format(&mut got);
    assert_eq!(String::from_utf8(got).unwrap(), want);
    assert!(q.bytes() > 0);
    q.clear();
    assert!(q.is_empty() && q.bytes() == 0);
}

#[test]
fn modes_and_sampling() {
    let out = Arc::new(Mutex::new(Vec::<u8>::new()));
    let req = AuthRequest {
        method: "GET",
        path: "/",
        host: "",
        token: None,
        src: None,
        request_id: None,
        browser: Default::default(),
    };
    let allow = bare(Reason::Public);
    let deny = bare(Reason::NoRoute);
    let log = DecisionLog::new(DecisionLogs::All, 0.25, Box::new(Sink(out.clone())));
    for _ in 0..8 {
        log.record(&req, &allow, Duration::ZERO, SystemTime::now());
    }
    log.record(&req, &deny, Duration::ZERO, SystemTime::now());
    log.flush();
    let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
    assert_eq!(
        text.lines().filter(|l| l.contains("\"allow\"")).count(),
        2,
        "1 in 4 allows"
    );
    assert_eq!(
        text.lines().filter(|l| l.contains("\"no_route\"")).count(),
        1,
        "every deny"
    );
    let out2 = Arc::new(Mutex::new(Vec::<u8>::new()));
    let log = DecisionLog::new(DecisionLogs::Deny, 1.0, Box::new(Sink(out2.clone())));
    log.record(&req, &allow, Duration::ZERO, SystemTime::now());
    log.record(&req, &deny, Duration::ZERO, SystemTime::now());
    log.flush();
    assert_eq!(
        String::from_utf8(out2.lock().unwrap().clone())
            .unwrap()
            .lines()
            .count(),
        1
    );
}

/// U+2028 and U+2029 are escaped; other non-ASCII text, U+202E included, is not.
#[test]
fn line_separators_are_escaped_other_text_is_kept() {
    let req = AuthRequest {
        method: "GET",
        path: "/\u{2028}\u{2029}\u{202e}\u{e9}\u{2028}",
        host: "h\u{2029}",
        token: None,
        src: None,
        request_id: None,
        browser: Default::default(),
    };
    let outcome = bare(Reason::NoRoute);
    let line = format_line(&req, &outcome, Duration::ZERO, SystemTime::UNIX_EPOCH);
    assert!(
        line.contains("\"host\":\"h\\u2029\",\"path\":\"/\\u2028\\u2029\u{202e}\u{e9}\\u2028\""),
        "{line}"
    );
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["path"], req.path);
}

/// IPv4 sources are written by hand: the same text as `Display`, every octet width.
#[test]
fn ipv4_sources_read_as_display_writes_them() {
    let outcome = bare(Reason::Ok);
    for ip in [
        "0.0.0.0",
        "255.255.255.255",
        "10.0.100.9",
        "1.22.233.4",
        "127.0.0.1",
    ] {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        let req = AuthRequest {
            method: "GET",
            path: "/",
            host: "h",
            token: None,
            src: Some(ip),
            request_id: None,
            browser: Default::default(),
        };
        let line = format_line(&req, &outcome, Duration::ZERO, SystemTime::UNIX_EPOCH);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["src"], ip.to_string(), "{line}");
    }
}

/// Sampling at 1.0 (the shortcut without the counter), 0.5 and 0; denies always;
/// each line carries the time it was given, not the time it was written.
#[test]
fn allow_sampling_rates_and_the_given_time() {
    let req = AuthRequest {
        method: "GET",
        path: "/",
        host: "",
        token: None,
        src: Some("192.0.2.255".parse().unwrap()),
        request_id: None,
        browser: Default::default(),
    };
    let outcome = |r| bare(r);
    let (allow, deny) = (outcome(Reason::Public), outcome(Reason::NoRoute));
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
    for (rate, allows) in [(1.0, 10), (0.5, 5), (0.0, 0), (-1.0, 0), (0.9, 10)] {
        let out = Sink(Arc::new(Mutex::new(Vec::new())));
        let log = DecisionLog::new(DecisionLogs::All, rate, Box::new(out.clone()));
        for _ in 0..10 {
            log.record(&req, &allow, Duration::ZERO, at);
        }
        log.record(&req, &deny, Duration::ZERO, at);
        log.flush();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let n = |d: &str| lines.iter().filter(|v| v["decision"] == d).count();
        assert_eq!((n("allow"), n("deny")), (allows, 1), "rate {rate}");
        for v in &lines {
            assert_eq!(v["time"], "2026-11-18T11:06:40.123Z");
            assert_eq!(v["src"], "192.0.2.255");
        }
    }
}

/// Each worker thread queues its own lines; the writer puts them out together in
/// time order, none lost, whichever threads queued them.
#[test]
fn lines_from_many_threads_come_out_in_time_order() {
    let out = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::new(DecisionLog::new(
        DecisionLogs::All,
        1.0,
        Box::new(Sink(out.clone())),
    ));
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    // Thread k logs times k, k + 12, k + 24, ... (ms): interleaved across threads.
    let threads: Vec<_> = (0..12u64)
        .map(|k| {
            let log = log.clone();
            std::thread::spawn(move || {
                let outcome = bare(Reason::Public);
                for n in 0..50u64 {
                    let ms = k + 12 * n;
                    let path = format!("/{ms}");
                    let req = get(&path);
                    let at = t0 + Duration::from_millis(ms);
                    log.record(&req, &outcome, Duration::ZERO, at);
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    log.flush();
    let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
    let paths: Vec<u64> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["path"].as_str().unwrap()[1..].parse().unwrap()
        })
        .collect();
    assert_eq!(paths.len(), 600, "every line, once");
    let mut sorted = paths.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..600).collect::<Vec<_>>());
}

/// The writer merges the queues by time: lines of several queues, each in its own
/// order, come out as one sequence in time order (ties keep their queue's order).
#[test]
fn queues_are_formatted_as_one_in_time_order() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let outcome = bare(Reason::Public);
    let mut queues: Vec<Queue> = (0..3).map(|_| Queue::default()).collect();
    for (q, times) in [(0, [5, 1, 9, 9]), (1, [2, 9, 3, 0]), (2, [7, 4, 6, 8])] {
        for (n, ms) in times.into_iter().enumerate() {
            let path = format!("/{ms}-{q}{n}");
            let req = get(&path);
            let at = t0 + Duration::from_millis(ms);
            queues[q].push(&req, &outcome, Duration::ZERO, at, true);
        }
    }
    let mut out = Vec::new();
    super::line::format_all(&queues, &mut out);
    let paths: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["path"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        paths,
        [
            "/0-13", "/1-01", "/2-10", "/3-12", "/4-21", "/5-00", "/6-22", "/7-20", "/8-23",
            "/9-02", "/9-03", "/9-11"
        ]
    );
}

/// With `[log] identity = "minimal"` a verified caller's line names it (sub,
/// client_id, issuer) and leaves out the rest of its identity; the entry holds the
/// identity by reference either way, and the writer decides what it prints.
#[test]
fn a_minimal_identity_line_names_the_caller_and_nothing_more() {
    let id = Arc::new(Identity {
        issuer: "https://i".into(),
        sub: Some("alice".into()),
        client_id: Some("c".into()),
        email: Some("alice@example.com".into()),
        groups: vec!["g".into()],
        scopes: vec!["s".into()],
        ..Default::default()
    });
    let outcome = Outcome {
        decision: Decision::bare(Reason::Ok),
        identity: Some(id),
        credential_error: None,
        shadow: false,
        token_fp: None,
        browser: Default::default(),
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let line = |full: bool| {
        let mut q = Queue::default();
        q.push(&get("/x"), &outcome, Duration::ZERO, now, full);
        let mut out = Vec::new();
        q.format(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        v
    };
    let (minimal, full) = (line(false), line(true));
    for v in [&minimal, &full] {
        assert_eq!(v["sub"], "alice", "{v}");
        assert_eq!(v["client_id"], "c", "{v}");
        assert_eq!(v["issuer"], "https://i", "{v}");
        assert_eq!(v["caller"], CALLER_VERIFIED, "{v}");
    }
    for key in ["email", "groups", "scopes", "user"] {
        assert!(minimal.get(key).is_none(), "{key}: {minimal}");
        assert!(full.get(key).is_some(), "{key}: {full}");
    }
    assert_eq!(full["email"], "alice@example.com");
    assert_eq!(full["groups"], serde_json::json!(["g"]));
}

/// The queue's size for the cap counts the identities its entries keep alive: once
/// for a run of entries sharing one, once each for distinct ones.
#[test]
fn queued_identities_count_toward_the_cap() {
    let big = || {
        Arc::new(Identity {
            issuer: "https://i".into(),
            groups: (0..500).map(|n| format!("group-{n:04}")).collect(),
            ..Default::default()
        })
    };
    let outcome = |id: &Arc<Identity>| Outcome {
        decision: Decision::bare(Reason::Ok),
        identity: Some(id.clone()),
        credential_error: None,
        shadow: false,
        token_fp: None,
        browser: Default::default(),
    };
    let now = SystemTime::UNIX_EPOCH;
    let (shared, size) = (big(), big().approx_bytes());
    assert!(size > 500 * 10);
    let mut same = Queue::default();
    let mut distinct = Queue::default();
    for _ in 0..10 {
        same.push(&get("/x"), &outcome(&shared), Duration::ZERO, now, true);
        distinct.push(&get("/x"), &outcome(&big()), Duration::ZERO, now, true);
    }
    let extra = distinct.bytes() - same.bytes();
    // Each distinct caller also starts a run, with its own held references.
    assert_eq!(
        extra,
        9 * (size + super::line::HELD_BYTES),
        "distinct identities each counted"
    );
    assert!(same.bytes() >= size && same.bytes() < 2 * size);
    distinct.clear();
    assert_eq!(distinct.bytes(), 0);
}

/// A run of lines for the same caller on the same route takes one reference to each,
/// whatever their reasons; a change of either starts a new run.
#[test]
fn a_run_of_lines_holds_its_route_and_caller_once() {
    let (alice, bob) = (
        Arc::new(Identity {
            sub: Some("alice".into()),
            ..Default::default()
        }),
        Arc::new(Identity {
            sub: Some("bob".into()),
            ..Default::default()
        }),
    );
    let route = Decision::with_names(Reason::Ok, Some("component:default/a"), None, None, None);
    let outcome = |id: &Arc<Identity>, d: &Decision| Outcome {
        decision: d.clone(),
        identity: Some(id.clone()),
        credential_error: None,
        shadow: false,
        token_fp: None,
        browser: Default::default(),
    };
    let now = SystemTime::UNIX_EPOCH;
    let mut q = Queue::default();
    let alices = outcome(&alice, &route);
    for _ in 0..10 {
        q.push(&get("/x"), &alices, Duration::ZERO, now, true);
    }
    assert_eq!(q.runs(), 1);
    let bare = [Decision::bare(Reason::Ok), Decision::bare(Reason::NoRoute)];
    for d in &bare {
        q.push(&get("/x"), &outcome(&alice, d), Duration::ZERO, now, true);
    }
    assert_eq!(
        q.runs(),
        2,
        "another route, then the same names with another reason"
    );
    for n in 0..10 {
        let id = if n % 2 == 0 { &alice } else { &bob };
        q.push(
            &get("/x"),
            &outcome(id, &bare[0]),
            Duration::ZERO,
            now,
            true,
        );
    }
    assert_eq!(q.runs(), 11, "alternating callers: a run each");
    let mut out = Vec::new();
    q.format(&mut out);
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 22);
    assert_eq!(lines[9]["entity"], "component:default/a");
    assert_eq!(
        (&lines[10]["reason"], &lines[11]["reason"]),
        (&"ok".into(), &"no_route".into())
    );
    assert!(lines[10]["entity"].is_null());
    let subs: Vec<&str> = lines[12..]
        .iter()
        .map(|l| l["sub"].as_str().unwrap())
        .collect();
    assert_eq!(subs, ["alice", "bob"].repeat(5));
}

/// With nothing to write the writer thread backs off to a wake every
/// `IDLE_DRAIN_EVERY` (each wake costs tens of µs of CPU on a virtual machine: at
/// 10 ms that was 2.7 ms of CPU a second for an idle agent), and a line recorded after
/// a quiet spell is still written.
#[test]
fn an_idle_writer_backs_off_and_still_writes() {
    let out = Arc::new(Mutex::new(Vec::<u8>::new()));
    let log = DecisionLog::new(DecisionLogs::All, 1.0, Box::new(Sink(out.clone())));
    std::thread::sleep(Duration::from_millis(1500));
    // 25 + 50 + 100 + 200 + 400 + 400 + ... ms: 7 or 8 wakes in 1.5 s; 150 at 10 ms.
    let wakes = log.shared.wakes.load(Ordering::Relaxed);
    assert!((1..=10).contains(&wakes), "{wakes} wakes in 1.5 s idle");
    log.record(
        &get("/after-a-quiet-spell"),
        &bare(Reason::NoRoute),
        Duration::ZERO,
        SystemTime::now(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&out.lock().unwrap()).contains("/after-a-quiet-spell") {
        assert!(
            std::time::Instant::now() < deadline,
            "the line was not written"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Written by the writer thread, not by a flush.
    assert!(log.shared.wakes.load(Ordering::Relaxed) > wakes);
}

/// A queue that fills past `WAKE_AT` unparks the writer once (not on every line past
/// it): a burst after a quiet spell is drained before the writer's idle pause ends,
/// instead of meeting the cap.
#[test]
fn a_filling_queue_wakes_the_writer_once() {
    let out = Arc::new(Mutex::new(Vec::<u8>::new()));
    let log = DecisionLog::new(DecisionLogs::All, 1.0, Box::new(Sink(out.clone())));
    let pad = "p".repeat(1000);
    let path = format!("/{pad}");
    let burst = |log: &DecisionLog| {
        let before = log.shared.nudges.load(Ordering::Relaxed);
        let mut n = 0;
        while log.shared.nudges.load(Ordering::Relaxed) == before {
            log.record(
                &get(&path),
                &bare(Reason::NoRoute),
                Duration::ZERO,
                SystemTime::now(),
            );
            n += 1;
            assert!(n * 1000 < MAX_QUEUED, "no nudge below the cap");
        }
        n
    };
    // Held: the writer cannot drain, so the queue only grows.
    let hold = log.shared.draining.lock().unwrap();
    let n = burst(&log);
    assert!(n * 1000 >= WAKE_AT / 2, "{n} lines");
    for _ in 0..n {
        log.record(
            &get(&path),
            &bare(Reason::NoRoute),
            Duration::ZERO,
            SystemTime::now(),
        );
    }
    assert_eq!(
        log.shared.nudges.load(Ordering::Relaxed),
        1,
        "once per crossing"
    );
    drop(hold);
    log.flush();
    assert_eq!(log.dropped.load(Ordering::Relaxed), 0);
    // After a quiet spell (the writer's pause at its longest), right after one of its
    // wakes: the burst wakes it long before the next one was due.
    std::thread::sleep(Duration::from_millis(1500));
    let wakes = log.shared.wakes.load(Ordering::Relaxed);
    while log.shared.wakes.load(Ordering::Relaxed) == wakes {
        std::thread::sleep(Duration::from_millis(1));
    }
    let woke = std::time::Instant::now();
    let seen = log.shared.wakes.load(Ordering::Relaxed);
    burst(&log);
    while log.shared.wakes.load(Ordering::Relaxed) == seen {
        std::thread::sleep(Duration::from_millis(1));
    }
    let waited = woke.elapsed();
    assert!(
        waited < IDLE_DRAIN_EVERY * 3 / 4,
        "the writer slept {waited:?} through a filling queue"
    );
    assert_eq!(log.dropped.load(Ordering::Relaxed), 0);
}

/// A writer dozing after a quiet spell is woken by the first line, not at the end of
/// its pause (up to `IDLE_DRAIN_EVERY`): CI read the log right after a lone request
/// and missed its line. One wake for the spell, however many lines follow it.
#[test]
fn the_first_line_after_a_quiet_spell_wakes_the_writer_once() {
    let out = Arc::new(Mutex::new(Vec::<u8>::new()));
    let log = DecisionLog::new(DecisionLogs::All, 1.0, Box::new(Sink(out.clone())));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !log.shared.dozing.load(Ordering::Relaxed) {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never dozed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Longer than the first pauses: the writer is in a long one (≥ 100 ms) now.
    std::thread::sleep(Duration::from_millis(200));
    for path in ["/first-after-quiet", "/second-after-quiet"] {
        log.record(
            &get(path),
            &bare(Reason::NoRoute),
            Duration::ZERO,
            SystemTime::now(),
        );
    }
    // One, or two when the writer's own timed drain took the empty queue just before
    // the first line and the second landed after the drain that wrote the first (an
    // extra unpark; found by review).
    let rousings = log.shared.rousings.load(Ordering::Relaxed);
    assert!((1..=2).contains(&rousings), "{rousings}");
    while !String::from_utf8_lossy(&out.lock().unwrap()).contains("/second-after-quiet") {
        assert!(
            std::time::Instant::now() < deadline,
            "the lines were not written"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // The flag is back with the writer: it dozes again once the queues stay empty,
    // and no more lines came to take it. (That the wake comes before the writer's
    // own timer: `review4_tests`.)
    while !log.shared.dozing.load(Ordering::Relaxed) {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never dozed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(log.shared.rousings.load(Ordering::Relaxed), rousings);
}

/// The writer formats a caller's and a route's part of a line once per run of lines
/// sharing them (`line::Fragments`): many lines, interleaved callers, names, reasons
/// and identity settings, more kinds than the memo has slots, come out byte for byte
/// as each line formatted alone.
#[test]
fn shared_parts_of_lines_format_as_each_line_alone() {
    let full = Arc::new(Identity {
        issuer: "https://idp.example/\"q\"".into(),
        sub: Some("al\u{2028}ice".into()),
        client_id: Some("cli".into()),
        email: Some("a@example.com".into()),
        groups: vec!["team-a".into(), "b\\c".into()],
        scopes: vec!["orders:read".into()],
        backstage_user: Some("user:default/alice".into()),
        ..Default::default()
    });
    let plain = Arc::new(Identity {
        issuer: "iss".into(),
        sub: Some("bob".into()),
        ..Default::default()
    });
    let other = Arc::new(Identity {
        issuer: "iss".into(),
        sub: Some("bob".into()),
        ..Default::default()
    });
    let identities = [None, Some(full), Some(plain), Some(other)];
    let given = Decision::with_names(
        Reason::Ok,
        Some("component:default/a"),
        Some("group:default/t\"eam"),
        Some("GET /api orders:read"),
        None,
    );
    let decisions = [
        Decision::bare(Reason::NoRoute),
        Decision::bare(Reason::Ok),
        given.clone(),
        given,
        Decision::with_names(
            Reason::NotMember,
            Some("component:default/b"),
            None,
            None,
            None,
        ),
    ];
    let mut outcomes = Vec::new();
    for identity in &identities {
        for decision in &decisions {
            for credential_error in [None, Some(Reason::Expired)] {
                for full_identity in [true, false] {
                    outcomes.push((
                        Outcome {
                            decision: decision.clone(),
                            identity: identity.clone(),
                            credential_error,
                            shadow: false,
                            token_fp: None,
                            browser: Default::default(),
                        },
                        full_identity,
                    ));
                }
            }
        }
    }
    // Three passes in different orders: runs, interleavings and slot collisions.
    let n = outcomes.len();
    let order: Vec<usize> = (0..n)
        .chain((0..n).rev())
        .chain((0..n).map(|i| (i * 7) % n))
        .collect();
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let (mut queue, mut expected) = (Queue::default(), Vec::new());
    for (k, &i) in order.iter().enumerate() {
        let (outcome, full_identity) = &outcomes[i];
        let at = t0 + Duration::from_millis(k as u64);
        let req = get("/p");
        queue.push(&req, outcome, Duration::ZERO, at, *full_identity);
        let mut alone = Queue::default();
        alone.push(&req, outcome, Duration::ZERO, at, *full_identity);
        alone.format(&mut expected);
    }
    let mut out = Vec::new();
    queue.format(&mut out);
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), order.len());
    let (out, expected) = (
        String::from_utf8(out).unwrap(),
        String::from_utf8(expected).unwrap(),
    );
    for (n, (got, want)) in out.lines().zip(expected.lines()).enumerate() {
        assert_eq!(got, want, "line {n}");
    }
    assert_eq!(out, expected);
}

/// Helper attack review: lines of two queues interleaved by time, each queue with its
/// own runs, and a run of caller-less lines with different credential errors: every
/// line shows its own caller, route, reason and caller state, as formatted alone.
#[test]
fn interleaved_queues_and_mixed_runs_keep_each_lines_own_parts() {
    let ids: Vec<Arc<Identity>> = ["alice", "bob", "carol"]
        .iter()
        .map(|s| {
            Arc::new(Identity {
                sub: Some((*s).into()),
                email: Some(format!("{s}@x")),
                ..Default::default()
            })
        })
        .collect();
    let routes: Vec<Decision> = ["component:default/a", "component:default/b"]
        .iter()
        .map(|e| Decision::with_names(Reason::Ok, Some(e), None, Some(e), None))
        .collect();
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut queues = [Queue::default(), Queue::default()];
    let mut alone = Vec::new();
    for n in 0..40u64 {
        let q = (n % 3 == 0) as usize;
        let id = if n % 5 == 4 {
            None
        } else {
            Some(&ids[(n as usize / 2) % 3])
        };
        let d = &routes[(n as usize / 4) % 2];
        let cred = match (id, n % 2) {
            (Some(_), _) => None,
            (None, 0) => Some(Reason::Expired),
            (None, _) => Some(Reason::MissingToken),
        };
        let outcome = Outcome {
            decision: d.clone(),
            identity: id.cloned(),
            credential_error: cred,
            shadow: n % 7 == 0,
            token_fp: None,
            browser: Default::default(),
        };
        let path = format!("/p{n}");
        let at = base + Duration::from_millis(n * 10);
        queues[q].push(&get(&path), &outcome, Duration::ZERO, at, n % 2 == 0);
        let mut single = Queue::default();
        single.push(&get(&path), &outcome, Duration::ZERO, at, n % 2 == 0);
        let mut out = Vec::new();
        single.format(&mut out);
        alone.push(out);
    }
    let mut out = Vec::new();
    super::line::format_all(&queues, &mut out);
    let together: Vec<&[u8]> = out.split_inclusive(|&b| b == b'\n').collect();
    assert_eq!(together.len(), 40);
    for (n, line) in together.iter().enumerate() {
        assert_eq!(*line, &alone[n][..], "line {n}");
    }
}
