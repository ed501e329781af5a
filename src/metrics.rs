//! Decisions and state → numbers: the Prometheus registry behind `GET /metrics`.
//! Decisions are counted on the request path (one labelled counter and one
//! histogram observation); everything else is read from the engine, verifier and
//! catalog state at scrape time, so the request path pays nothing for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwapOption;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::catalog::source::{CatalogStatus, Origin};
use crate::connection::EngineStats;
use crate::policy::Policy;
use crate::reason::Reason;
use crate::spop::Status;
use crate::token::Verifier;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub decision: &'static str,
    pub reason: &'static str,
    pub enforced: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerLabel {
    issuer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerResult {
    issuer: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerReason {
    issuer: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

/// Where scrape-time values come from.
pub struct Sources {
    pub engine: Arc<EngineStats>,
    pub verifier: Verifier,
    pub catalog: Option<watch::Receiver<CatalogStatus>>,
    pub policy: Arc<ArcSwapOption<Policy>>,
    pub log_dropped: Arc<AtomicU64>,
}

pub struct Metrics {
    registry: Registry,
    /// Scrapes sync counters by difference: one at a time, or two could add twice.
    scrape: std::sync::Mutex<()>,
    decisions: Family<DecisionLabels, Counter>,
    /// `decisions` for enforced decisions, one handle per reason (indexed by
    /// `Reason as usize`), resolved once: the request path takes no lock for them.
    enforced: Vec<Counter>,
    latency: Histogram,
    log_dropped: Counter,
    connections_open: Gauge,
    connections: Counter,
    connections_rejected: Counter,
    frames: Family<TypeLabel, Counter>,
    protocol_errors: Family<StatusLabel, Counter>,
    notify_in_flight: Gauge,
    handler_failures: Counter,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_size: Gauge,
    key_refreshes: Family<IssuerResult, Counter>,
    refetches: Family<IssuerResult, Counter>,
    refetches_suppressed: Family<IssuerLabel, Counter>,
    keys_skipped: Family<IssuerReason, Counter>,
    keys_loaded: Family<IssuerLabel, Gauge>,
    key_age: Family<IssuerLabel, Gauge>,
    clock_skew: Family<IssuerLabel, Gauge>,
    entities: Gauge,
    routes: Gauge,
    annotation_errors: Gauge,
    conflicts: Gauge,
    unknown_principals: Gauge,
    catalog_age: Gauge,
    catalog_source: Family<SourceLabel, Gauge>,
    catalog_syncs: Family<ResultLabel, Counter>,
    entities_skipped: Family<ReasonLabel, Counter>,
    etag_mismatches: Counter,
}

fn labels(reason: Reason, enforced: bool) -> DecisionLabels {
    DecisionLabels {
        decision: if reason.is_allow() { "allow" } else { "deny" },
        reason: reason.as_str(),
        enforced: if enforced { "true" } else { "false" },
    }
}

fn sync_counter(c: &Counter, value: u64) {
    let cur = c.get();
    if value > cur {
        c.inc_by(value - cur);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("stagedoor");
        let m = Metrics {
            decisions: Family::default(),
            enforced: Vec::new(),
            // 10 µs .. ~160 ms: cache hits sit in the first buckets, JWKS refetch waits in the last.
            latency: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                1e-5, 2.0, 15,
            )),
            log_dropped: Counter::default(),
            connections_open: Gauge::default(),
            connections: Counter::default(),
            connections_rejected: Counter::default(),
            frames: Family::default(),
            protocol_errors: Family::default(),
            notify_in_flight: Gauge::default(),
            handler_failures: Counter::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_size: Gauge::default(),
            key_refreshes: Family::default(),
            refetches: Family::default(),
            refetches_suppressed: Family::default(),
            keys_skipped: Family::default(),
            keys_loaded: Family::default(),
            key_age: Family::default(),
            clock_skew: Family::default(),
            entities: Gauge::default(),
            routes: Gauge::default(),
            annotation_errors: Gauge::default(),
            conflicts: Gauge::default(),
            unknown_principals: Gauge::default(),
            catalog_age: Gauge::default(),
            catalog_source: Family::default(),
            catalog_syncs: Family::default(),
            entities_skipped: Family::default(),
            etag_mismatches: Counter::default(),
            registry: Registry::default(),
            scrape: std::sync::Mutex::new(()),
        };
        r.register(
            "decisions",
            "Authorization decisions by decision, reason and enforcement",
            m.decisions.clone(),
        );
        r.register(
            "decision_latency_seconds",
            "Time from message to decision",
            m.latency.clone(),
        );
        r.register(
            "decision_log_dropped",
            "Decision log lines dropped because the writer fell behind",
            m.log_dropped.clone(),
        );
        r.register(
            "spop_connections_open",
            "Open SPOP connections",
            m.connections_open.clone(),
        );
        r.register(
            "spop_connections",
            "SPOP connections accepted",
            m.connections.clone(),
        );
        r.register(
            "spop_connections_rejected",
            "SPOP connections closed at once over max_connections",
            m.connections_rejected.clone(),
        );
        r.register("spop_frames", "SPOP frames by type", m.frames.clone());
        r.register(
            "spop_protocol_errors",
            "AGENT-DISCONNECT frames sent for protocol errors, by SPOP status code",
            m.protocol_errors.clone(),
        );
        r.register(
            "spop_notify_in_flight",
            "NOTIFY frames being handled",
            m.notify_in_flight.clone(),
        );
        r.register(
            "spop_handler_failures",
            "NOTIFYs answered with only the error variable",
            m.handler_failures.clone(),
        );
        r.register(
            "token_cache_hits",
            "Verified-token cache hits",
            m.cache_hits.clone(),
        );
        r.register(
            "token_cache_misses",
            "Verified-token cache misses",
            m.cache_misses.clone(),
        );
        r.register(
            "token_cache_entries",
            "Verified-token cache entries",
            m.cache_size.clone(),
        );
        r.register(
            "jwks_refreshes",
            "Key-set fetches by issuer and result",
            m.key_refreshes.clone(),
        );
        r.register(
            "jwks_refetches",
            "Unknown-kid key-set refetches by issuer and result (changed, unchanged, error)",
            m.refetches.clone(),
        );
        r.register(
            "jwks_refetches_suppressed",
            "Unknown kids that got no refetch: inside the cooldown, no fetch running",
            m.refetches_suppressed.clone(),
        );
        r.register(
            "jwks_keys_skipped",
            "JWKs left out of a parsed key set, by issuer and reason (once per document)",
            m.keys_skipped.clone(),
        );
        r.register("jwks_keys", "Keys loaded per issuer", m.keys_loaded.clone());
        r.register(
            "jwks_last_good_refresh_age_seconds",
            "Seconds since the issuer's last good key-set fetch (-1: never)",
            m.key_age.clone(),
        );
        r.register(
            "jwks_clock_skew_seconds",
            "Provider Date header minus local clock at the last fetch",
            m.clock_skew.clone(),
        );
        r.register(
            "catalog_entities",
            "Entities in the current catalog snapshot",
            m.entities.clone(),
        );
        r.register(
            "catalog_routes",
            "Routes in the current policy",
            m.routes.clone(),
        );
        r.register(
            "catalog_annotation_errors",
            "Annotation errors in the current catalog",
            m.annotation_errors.clone(),
        );
        r.register(
            "catalog_conflicts",
            "Route conflicts in the current catalog",
            m.conflicts.clone(),
        );
        r.register(
            "catalog_unknown_principals",
            "Principals named by routes that are no Group or User in the current catalog",
            m.unknown_principals.clone(),
        );
        r.register(
            "catalog_last_good_sync_age_seconds",
            "Seconds since the catalog was last confirmed by its source (-1: never)",
            m.catalog_age.clone(),
        );
        r.register(
            "catalog_source",
            "Where the current catalog came from (1 for the active source)",
            m.catalog_source.clone(),
        );
        r.register(
            "catalog_syncs",
            "Catalog syncs by result",
            m.catalog_syncs.clone(),
        );
        r.register(
            "catalog_entities_skipped",
            "Backstage entities left at their last good version (or out) by a sync, by reason",
            m.entities_skipped.clone(),
        );
        r.register(
            "catalog_etag_mismatches",
            "Backstage entities whose by-refs etag differed from the listing's",
            m.etag_mismatches.clone(),
        );
        r.register(
            "build",
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        for reason in crate::catalog::backstage::SkipReason::ALL {
            drop(m.entities_skipped.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            }));
        }
        // Pre-create every reason so dashboards see zeros, not gaps; keep the handles
        // (a clone shares the registered counter).
        let enforced = Reason::ALL
            .iter()
            .enumerate()
            .map(|(i, &reason)| {
                assert_eq!(reason as usize, i, "Reason::ALL is in declaration order");
                m.decisions.get_or_create(&labels(reason, true)).clone()
            })
            .collect();
        Metrics {
            registry: r,
            enforced,
            ..m
        }
    }

    /// Counts one decision (request path).
    pub fn record_decision(&self, reason: Reason, enforced: bool, seconds: f64) {
        if enforced {
            self.enforced[reason as usize].inc();
        } else {
            self.decisions.get_or_create(&labels(reason, false)).inc();
        }
        self.latency.observe(seconds);
    }

    /// Reads the state sources and renders the Prometheus text format.
    pub fn render(&self, s: &Sources, now_unix: i64) -> String {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.sync(s, now_unix);
        let mut out = String::new();
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    fn sync(&self, s: &Sources, now_unix: i64) {
        let e = &s.engine;
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        sync_counter(&self.log_dropped, ld(&s.log_dropped));
        self.connections_open.set(ld(&e.connections_open) as i64);
        sync_counter(&self.connections, ld(&e.connections_total));
        sync_counter(&self.connections_rejected, ld(&e.connections_rejected));
        self.notify_in_flight.set(ld(&e.notify_in_flight) as i64);
        sync_counter(&self.handler_failures, ld(&e.handler_failures));
        let hellos = ld(&e.hellos);
        let sent_disconnects: u64 = e.disconnects_sent.iter().map(ld).sum();
        for (t, v) in [
            ("haproxy_hello", hellos),
            ("agent_hello", hellos),
            ("notify", ld(&e.notify_total)),
            ("ack", ld(&e.acks_total)),
            ("haproxy_disconnect", ld(&e.disconnects_received)),
            ("agent_disconnect", sent_disconnects),
        ] {
            sync_counter(&self.frames.get_or_create(&TypeLabel { r#type: t }), v);
        }
        for (i, a) in e.disconnects_sent.iter().enumerate() {
            let code = if i == 14 { 99 } else { i as u32 };
            let benign = matches!(
                Status::from_code(code),
                Some(Status::Normal | Status::Io | Status::Timeout)
            );
            let v = ld(a);
            if !benign && v > 0 {
                sync_counter(
                    &self.protocol_errors.get_or_create(&StatusLabel {
                        status: code.to_string(),
                    }),
                    v,
                );
            }
        }

        let vs = s.verifier.status();
        self.cache_size.set(vs.cache_entries as i64);
        let (mut hits, mut misses) = (0, 0);
        for st in &vs.issuers {
            hits += st.cache_hits;
            misses += st.cache_misses;
            let issuer = st.issuer.clone();
            let ok = IssuerResult {
                issuer: issuer.clone(),
                result: "ok",
            };
            let err = IssuerResult {
                issuer: issuer.clone(),
                result: "error",
            };
            sync_counter(&self.key_refreshes.get_or_create(&ok), st.refresh_ok);
            sync_counter(&self.key_refreshes.get_or_create(&err), st.refresh_errors);
            for (result, v) in [
                ("changed", st.refetches_changed),
                ("unchanged", st.refetches_unchanged),
                ("error", st.refetch_errors),
            ] {
                let l = IssuerResult {
                    issuer: issuer.clone(),
                    result,
                };
                sync_counter(&self.refetches.get_or_create(&l), v);
            }
            for (reason, v) in &st.keys_skipped_total {
                let l = IssuerReason {
                    issuer: issuer.clone(),
                    reason: reason.as_str(),
                };
                sync_counter(&self.keys_skipped.get_or_create(&l), *v);
            }
            let label = IssuerLabel { issuer };
            sync_counter(
                &self.refetches_suppressed.get_or_create(&label),
                st.refetches_suppressed,
            );
            self.keys_loaded
                .get_or_create(&label)
                .set(st.keys_loaded as i64);
            let age = st
                .last_good_refresh_unix
                .map_or(-1, |t| (now_unix - t).max(0));
            self.key_age.get_or_create(&label).set(age);
            self.clock_skew
                .get_or_create(&label)
                .set(st.clock_skew_seconds.unwrap_or(0));
        }
        sync_counter(&self.cache_hits, hits);
        sync_counter(&self.cache_misses, misses);

        if let Some(p) = s.policy.load().as_deref() {
            self.routes.set(p.route_count() as i64);
            self.annotation_errors.set(p.errors().len() as i64);
            self.conflicts.set(p.conflicts().len() as i64);
            self.unknown_principals
                .set(p.unknown_principals().len() as i64);
        }
        if let Some(rx) = &s.catalog {
            let st = rx.borrow().clone();
            self.sync_catalog(&st, now_unix);
        }
    }

    fn sync_catalog(&self, st: &CatalogStatus, now_unix: i64) {
        self.entities.set(st.entities as i64);
        self.catalog_age
            .set(st.last_good_sync_unix.map_or(-1, |t| (now_unix - t).max(0)));
        for (name, origin) in [
            ("file", Origin::File),
            ("live", Origin::Live),
            ("snapshot", Origin::Snapshot),
        ] {
            let active = i64::from(st.origin == Some(origin));
            self.catalog_source
                .get_or_create(&SourceLabel { source: name })
                .set(active);
        }
        for (result, v) in [
            ("applied", st.syncs.applied),
            ("unchanged", st.syncs.unchanged),
            ("held", st.syncs.held),
            ("failed", st.syncs.failed),
        ] {
            sync_counter(
                &self.catalog_syncs.get_or_create(&ResultLabel { result }),
                v,
            );
        }
        for reason in crate::catalog::backstage::SkipReason::ALL {
            sync_counter(
                &self.entities_skipped.get_or_create(&ReasonLabel {
                    reason: reason.as_str(),
                }),
                st.entities_skipped.get(reason),
            );
        }
        sync_counter(&self.etag_mismatches, st.etag_mismatches);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &Metrics) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &m.registry).unwrap();
        out
    }

    fn count(text: &str, reason: &str, enforced: &str) -> Option<u64> {
        let want = format!("reason=\"{reason}\",enforced=\"{enforced}\"}}");
        text.lines()
            .find(|l| l.starts_with("stagedoor_decisions_total{") && l.contains(&want))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
    }

    #[test]
    fn catalog_skips_and_etag_mismatches_are_counted() {
        use crate::catalog::source::{SkipCounts, SyncCounts};
        let m = Metrics::new();
        let t = text(&m);
        assert!(
            t.contains("stagedoor_catalog_entities_skipped_total{reason=\"unparseable\"} 0"),
            "{t}"
        );
        assert!(
            t.contains("stagedoor_catalog_etag_mismatches_total 0"),
            "{t}"
        );
        let status = CatalogStatus {
            source: crate::catalog::SourceKind::Backstage,
            origin: Some(Origin::Live),
            entities: 3,
            last_good_sync_unix: Some(100),
            consecutive_errors: 0,
            last_error: None,
            skipped_documents: 0,
            skipped: vec![],
            entities_skipped: SkipCounts {
                unparseable: 2,
                too_large: 1,
            },
            etag_mismatches: 3,
            syncs: SyncCounts::default(),
        };
        m.sync_catalog(&status, 110);
        m.sync_catalog(&status, 120);
        let t = text(&m);
        for line in [
            "stagedoor_catalog_entities_skipped_total{reason=\"unparseable\"} 2",
            "stagedoor_catalog_entities_skipped_total{reason=\"too_large\"} 1",
            "stagedoor_catalog_etag_mismatches_total 3",
            "stagedoor_catalog_last_good_sync_age_seconds 20",
        ] {
            assert!(t.contains(line), "{line}\n{t}");
        }
    }

    #[test]
    fn decisions_land_on_their_own_labelled_series() {
        let m = Metrics::new();
        let t = text(&m);
        for reason in Reason::ALL {
            assert_eq!(count(&t, reason.as_str(), "true"), Some(0), "{reason:?}");
            assert_eq!(count(&t, reason.as_str(), "false"), None, "{reason:?}");
        }
        m.record_decision(Reason::Ok, true, 1e-5);
        m.record_decision(Reason::Ok, true, 1e-5);
        m.record_decision(Reason::InternalError, true, 1e-5);
        m.record_decision(Reason::NotMember, false, 1e-5);
        let t = text(&m);
        assert_eq!(count(&t, "ok", "true"), Some(2));
        assert_eq!(count(&t, "internal_error", "true"), Some(1));
        assert_eq!(count(&t, "not_member", "false"), Some(1));
        assert_eq!(count(&t, "not_member", "true"), Some(0));
        assert!(
            t.contains(
                "stagedoor_decisions_total{decision=\"deny\",reason=\"not_member\",enforced=\"false\"} 1"
            ),
            "{t}"
        );
        assert!(
            t.contains("stagedoor_decision_latency_seconds_count 4"),
            "{t}"
        );
    }
}
