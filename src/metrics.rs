//! Decisions and state → numbers: the Prometheus text behind `GET /metrics`.
//! Decisions are counted on the request path (one labelled counter and one
//! histogram observation); everything else is read from the engine, verifier and
//! catalog state by a [`Collector`] as the scrape encodes it, so the request path
//! pays nothing for it and no copy of those numbers is kept here.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::catalog::backstage::SkipReason;
use crate::catalog::source::{CatalogStatus, Origin};
use crate::connection::EngineStats;
use crate::policy::Policy;
use crate::reason::Reason;
use crate::spop::Status;
use crate::token::{Verifier, VerifierStatus};

mod latency;
use latency::Latency;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub decision: &'static str,
    pub reason: &'static str,
    pub enforced: &'static str,
}

/// Where scrape-time values come from.
pub struct Sources {
    pub engine: Arc<EngineStats>,
    pub verifier: Verifier,
    pub catalog: Option<watch::Receiver<CatalogStatus>>,
    pub policy: Arc<ArcSwapOption<Policy>>,
    pub log_dropped: Arc<AtomicU64>,
}

/// The request-path metrics; the rest is read per scrape (see [`Metrics::render`]).
pub struct Metrics {
    decisions: Arc<Decisions>,
    latency: Arc<Latency>,
}

/// `decisions_total`, one count per reason (indexed by `Reason as usize`) for
/// enforced decisions and for shadow ones: no lock, no label lookup, and each worker
/// thread adds on its own cache line ([`crate::counter`]).
struct Decisions {
    enforced: Box<[crate::counter::Counter]>,
    shadow: Box<[crate::counter::Counter]>,
}

impl Decisions {
    /// The series as they are read: every reason enforced (zeros too, so dashboards
    /// see no gaps), then the shadow reasons seen at least once.
    fn series(&self) -> Vec<(DecisionLabels, u64)> {
        let enforced = Reason::ALL
            .iter()
            .map(|&r| (labels(r, true), self.enforced[r as usize].get()));
        let shadow = Reason::ALL
            .iter()
            .map(|&r| (labels(r, false), self.shadow[r as usize].get()))
            .filter(|(_, n)| *n > 0);
        enforced.chain(shadow).collect()
    }
}

fn labels(reason: Reason, enforced: bool) -> DecisionLabels {
    DecisionLabels {
        decision: if reason.is_allow() { "allow" } else { "deny" },
        reason: reason.as_str(),
        enforced: if enforced { "true" } else { "false" },
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        for (i, &reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(reason as usize, i, "Reason::ALL is in declaration order");
        }
        let per_reason = || Reason::ALL.iter().map(|_| Default::default()).collect();
        Metrics {
            decisions: Arc::new(Decisions {
                enforced: per_reason(),
                shadow: per_reason(),
            }),
            latency: Arc::default(),
        }
    }

    /// Counts one decision (request path).
    pub fn record_decision(&self, reason: Reason, enforced: bool, latency: Duration) {
        let per_reason = if enforced {
            &self.decisions.enforced
        } else {
            &self.decisions.shadow
        };
        per_reason[reason as usize].inc();
        self.latency.observe(latency);
    }

    /// Reads the state sources and renders the Prometheus text format. Scrapes may
    /// run at once: each reads the sources itself and shares nothing but the
    /// request-path metrics.
    pub fn render(&self, s: &Sources, now_unix: i64) -> String {
        let mut registry = Registry::with_prefix("stagedoor");
        registry.register_collector(Box::new(Scrape {
            decisions: self.decisions.clone(),
            latency: self.latency.clone(),
            engine: s.engine.clone(),
            log_dropped: s.log_dropped.clone(),
            verifier: s.verifier.status(),
            policy: s.policy.load_full(),
            catalog: s.catalog.as_ref().map(|rx| rx.borrow().clone()),
            now_unix,
        }));
        let mut out = String::new();
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }
}

/// One scrape: the request-path metrics (shared handles) and the state, each
/// encoded as read, in a fixed order (every name, label, type and help text is
/// part of the contract with dashboards and alerts).
struct Scrape {
    decisions: Arc<Decisions>,
    latency: Arc<Latency>,
    engine: Arc<EngineStats>,
    log_dropped: Arc<AtomicU64>,
    verifier: VerifierStatus,
    policy: Option<Arc<Policy>>,
    catalog: Option<CatalogStatus>,
    now_unix: i64,
}

impl fmt::Debug for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrape").finish_non_exhaustive()
    }
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let e = &mut e;
        let help = "Authorization decisions by decision, reason and enforcement";
        counters(e, "decisions", help, &self.decisions.series())?;
        let help = "Time from message to decision";
        let name = "decision_latency_seconds";
        self.latency
            .encode(describe(e, name, help, MetricType::Histogram)?)?;
        let help = "Decision log lines dropped because the writer fell behind";
        counter(e, "decision_log_dropped", help, load(&self.log_dropped))?;
        self.encode_engine(e)?;
        self.encode_verifier(e)?;
        self.encode_catalog(e)?;
        let build = Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]);
        let m = describe(e, "build", "Build information", MetricType::Info)?;
        build.encode(m)
    }
}

/// A metric's `# HELP` and `# TYPE` lines. The help text gets the full stop that
/// `Registry::register` adds, so the text stays what it was when these metrics were
/// registered.
fn describe<'e>(
    e: &'e mut DescriptorEncoder,
    name: &'e str,
    help: &str,
    metric_type: MetricType,
) -> Result<MetricEncoder<'e>, fmt::Error> {
    e.encode_descriptor(name, &format!("{help}."), None, metric_type)
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    ConstCounter::new(value).encode(describe(e, name, help, MetricType::Counter)?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> fmt::Result {
    ConstGauge::new(value).encode(describe(e, name, help, MetricType::Gauge)?)
}

/// A labelled counter family; with no series it is left out, as the registry
/// leaves out an empty `Family`.
fn counters<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(L, u64)],
) -> fmt::Result {
    if series.is_empty() {
        return Ok(());
    }
    let mut m = describe(e, name, help, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(*value).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// A labelled gauge family; left out with no series, like [`counters`].
fn gauges<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(L, i64)],
) -> fmt::Result {
    if series.is_empty() {
        return Ok(());
    }
    let mut m = describe(e, name, help, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(*value).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// Seconds since `t`, or -1 for never.
fn age(t: Option<i64>, now_unix: i64) -> i64 {
    t.map_or(-1, |t| (now_unix - t).max(0))
}

impl Scrape {
    fn encode_engine(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let s = &self.engine;
        let open = gauge_value(load(&s.connections_open));
        gauge(e, "spop_connections_open", "Open SPOP connections", open)?;
        let accepted = load(&s.connections_total);
        counter(e, "spop_connections", "SPOP connections accepted", accepted)?;
        let help = "SPOP connections closed at once (AGENT-DISCONNECT 13), by the limit \
                    reached: max_connections or buffer_budget";
        let rejected = [
            ("max_connections", load(&s.connections_rejected)),
            ("buffer_budget", load(&s.connections_over_budget)),
        ]
        .map(|(r, v)| ([("reason", r)], v));
        counters(e, "spop_connections_rejected", help, &rejected)?;
        let held = gauge_value(s.buffers.held() as u64);
        let help =
            "Bytes held by SPOP read buffers and NOTIFYs in flight (at most buffer_budget_bytes)";
        gauge(e, "spop_buffer_bytes", help, held)?;
        let hellos = load(&s.hellos);
        let frames = [
            ("haproxy_hello", hellos),
            ("agent_hello", hellos),
            ("notify", load(&s.notify_total)),
            ("ack", load(&s.acks_total)),
            ("haproxy_disconnect", load(&s.disconnects_received)),
            (
                "agent_disconnect",
                s.disconnects_sent.iter().map(load).sum(),
            ),
        ]
        .map(|(t, v)| ([("type", t)], v));
        counters(e, "spop_frames", "SPOP frames by type", &frames)?;
        // Index 14 holds status 99; a status that was never sent has no series.
        let errors: Vec<([(&str, String); 1], u64)> = (0u32..)
            .zip(&s.disconnects_sent)
            .map(|(i, n)| (if i == 14 { 99 } else { i }, load(n)))
            .filter(|&(code, n)| {
                let benign = matches!(
                    Status::from_code(code),
                    Some(Status::Normal | Status::Io | Status::Timeout)
                );
                !benign && n > 0
            })
            .map(|(code, n)| ([("status", code.to_string())], n))
            .collect();
        let help = "AGENT-DISCONNECT frames sent for protocol errors, by SPOP status code";
        counters(e, "spop_protocol_errors", help, &errors)?;
        let in_flight = gauge_value(load(&s.notify_in_flight));
        gauge(
            e,
            "spop_notify_in_flight",
            "NOTIFY frames being handled",
            in_flight,
        )?;
        let help = "NOTIFYs answered with only the error variable";
        counter(e, "spop_handler_failures", help, load(&s.handler_failures))
    }

    fn encode_verifier(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let v = &self.verifier;
        let hits = v.issuers.iter().map(|i| i.cache_hits).sum();
        counter(e, "token_cache_hits", "Verified-token cache hits", hits)?;
        let misses = v.issuers.iter().map(|i| i.cache_misses).sum();
        counter(
            e,
            "token_cache_misses",
            "Verified-token cache misses",
            misses,
        )?;
        let entries = gauge_value(v.cache_entries);
        gauge(
            e,
            "token_cache_entries",
            "Verified-token cache entries",
            entries,
        )?;
        gauge(
            e,
            "token_cache_weight_bytes",
            "Verified-token cache weight: estimated bytes, each entry at least cache_bytes/cache_entries",
            gauge_value(v.cache_weight),
        )?;
        let (mut refreshes, mut refetches, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
        let (mut suppressed, mut keys, mut ages, mut skews) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in &v.issuers {
            let issuer = i.issuer.as_str();
            for (result, n) in [("ok", i.refresh_ok), ("error", i.refresh_errors)] {
                refreshes.push(([("issuer", issuer), ("result", result)], n));
            }
            for (result, n) in [
                ("changed", i.refetches_changed),
                ("unchanged", i.refetches_unchanged),
                ("error", i.refetch_errors),
            ] {
                refetches.push(([("issuer", issuer), ("result", result)], n));
            }
            for (reason, n) in &i.keys_skipped_total {
                skipped.push(([("issuer", issuer), ("reason", reason.as_str())], *n));
            }
            suppressed.push(([("issuer", issuer)], i.refetches_suppressed));
            keys.push(([("issuer", issuer)], gauge_value(i.keys_loaded as u64)));
            let age = age(i.last_good_refresh_unix, self.now_unix);
            ages.push(([("issuer", issuer)], age));
            skews.push(([("issuer", issuer)], i.clock_skew_seconds.unwrap_or(0)));
        }
        let help = "Key-set fetches by issuer and result";
        counters(e, "jwks_refreshes", help, &refreshes)?;
        let help = "Unknown-kid key-set refetches by issuer and result (changed, unchanged, error)";
        counters(e, "jwks_refetches", help, &refetches)?;
        let help = "Unknown kids that got no refetch: inside the cooldown, no fetch running";
        counters(e, "jwks_refetches_suppressed", help, &suppressed)?;
        let help = "JWKs left out of a parsed key set, by issuer and reason (once per document)";
        counters(e, "jwks_keys_skipped", help, &skipped)?;
        gauges(e, "jwks_keys", "Keys loaded per issuer", &keys)?;
        let help = "Seconds since the issuer's last good key-set fetch (-1: never)";
        gauges(e, "jwks_last_good_refresh_age_seconds", help, &ages)?;
        let help = "Provider Date header minus local clock at the last fetch";
        gauges(e, "jwks_clock_skew_seconds", help, &skews)
    }

    /// Without a catalog source (tests, the bench) the catalog numbers read 0 and
    /// the per-source and per-result families are left out.
    fn encode_catalog(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let catalog = self.catalog.as_ref();
        let entities = catalog.map_or(0, |c| gauge_value(c.entities as u64));
        let help = "Entities in the current catalog snapshot";
        gauge(e, "catalog_entities", help, entities)?;
        let policy = self.policy.as_deref();
        let count = |f: fn(&Policy) -> usize| policy.map_or(0, |p| gauge_value(f(p) as u64));
        let help = "Routes in the current policy";
        gauge(e, "catalog_routes", help, count(Policy::route_count))?;
        let help = "Annotation errors in the current catalog";
        gauge(
            e,
            "catalog_annotation_errors",
            help,
            count(|p| p.errors().len()),
        )?;
        let help = "Route conflicts in the current catalog";
        gauge(e, "catalog_conflicts", help, count(|p| p.conflicts().len()))?;
        let help = "Principals named by routes that are no Group or User in the current catalog";
        let unknown = count(|p| p.unknown_principals().len());
        gauge(e, "catalog_unknown_principals", help, unknown)?;
        let help = "Seconds since the catalog was last confirmed by its source (-1: never)";
        let sync_age = catalog.map_or(0, |c| age(c.last_good_sync_unix, self.now_unix));
        gauge(e, "catalog_last_good_sync_age_seconds", help, sync_age)?;
        let (mut sources, mut syncs) = (Vec::new(), Vec::new());
        if let Some(c) = catalog {
            for (name, origin) in [
                ("file", Origin::File),
                ("live", Origin::Live),
                ("snapshot", Origin::Snapshot),
            ] {
                sources.push(([("source", name)], i64::from(c.origin == Some(origin))));
            }
            let s = &c.syncs;
            for (result, n) in [
                ("applied", s.applied),
                ("unchanged", s.unchanged),
                ("held", s.held),
                ("failed", s.failed),
            ] {
                syncs.push(([("result", result)], n));
            }
        }
        let help = "Where the current catalog came from (1 for the active source)";
        gauges(e, "catalog_source", help, &sources)?;
        counters(e, "catalog_syncs", "Catalog syncs by result", &syncs)?;
        let skipped = SkipReason::ALL.map(|reason| {
            let n = catalog.map_or(0, |c| c.entities_skipped.get(reason));
            ([("reason", reason.as_str())], n)
        });
        let help =
            "Backstage entities left at their last good version (or out) by a sync, by reason";
        counters(e, "catalog_entities_skipped", help, &skipped)?;
        let help = "Backstage entities whose by-refs etag differed from the listing's";
        let mismatches = catalog.map_or(0, |c| c.etag_mismatches);
        counter(e, "catalog_etag_mismatches", help, mismatches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::source::{SkipCounts, SyncCounts};
    use crate::token::TokenConfig;

    fn sources(catalog: Option<watch::Receiver<CatalogStatus>>) -> Sources {
        Sources {
            engine: Default::default(),
            verifier: Verifier::with_key_sets(vec![], TokenConfig::default()),
            catalog,
            policy: Default::default(),
            log_dropped: Default::default(),
        }
    }

    fn text(m: &Metrics) -> String {
        m.render(&sources(None), 0)
    }

    fn count(text: &str, reason: &str, enforced: &str) -> Option<u64> {
        let want = format!("reason=\"{reason}\",enforced=\"{enforced}\"}}");
        text.lines()
            .find(|l| l.starts_with("stagedoor_decisions_total{") && l.contains(&want))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
    }

    #[test]
    fn catalog_skips_and_etag_mismatches_are_counted() {
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
        let (_tx, rx) = watch::channel(status);
        let s = sources(Some(rx));
        m.render(&s, 110);
        let t = m.render(&s, 120);
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
        m.record_decision(Reason::Ok, true, Duration::from_micros(10));
        m.record_decision(Reason::Ok, true, Duration::from_micros(10));
        m.record_decision(Reason::InternalError, true, Duration::from_micros(10));
        m.record_decision(Reason::NotMember, false, Duration::from_micros(10));
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

    /// The histogram's series as prometheus-client's `Histogram` wrote them (the same
    /// `le` labels), from every worker thread's shard.
    #[test]
    fn latency_buckets_keep_their_labels_and_sum_every_thread() {
        let m = Arc::new(Metrics::new());
        let threads: Vec<_> = [5u64, 15, 200_000, 1_000_000]
            .into_iter()
            .map(|us| {
                let m = m.clone();
                std::thread::spawn(move || {
                    m.record_decision(Reason::Ok, true, Duration::from_micros(us))
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let t = text(&m);
        for line in [
            "stagedoor_decision_latency_seconds_bucket{le=\"1e-05\"} 1",
            "stagedoor_decision_latency_seconds_bucket{le=\"2e-05\"} 2",
            "stagedoor_decision_latency_seconds_bucket{le=\"0.16384\"} 2",
            "stagedoor_decision_latency_seconds_bucket{le=\"+Inf\"} 4",
            "stagedoor_decision_latency_seconds_count 4",
            "stagedoor_decision_latency_seconds_sum 1.20002",
        ] {
            assert!(t.contains(line), "{line}\n{t}");
        }
    }

    /// Counters are read, not accumulated: two scrapes of the same state say the same,
    /// and a scrape says what the atomics hold at that moment.
    #[test]
    fn scrapes_read_the_state_as_it_is() {
        let m = Metrics::new();
        let s = sources(None);
        s.engine.notify_total.store(5, Ordering::Relaxed);
        s.engine.disconnects_sent[3].store(2, Ordering::Relaxed);
        s.engine.disconnects_sent[14].store(1, Ordering::Relaxed);
        s.engine.disconnects_sent[0].store(7, Ordering::Relaxed);
        let first = m.render(&s, 0);
        assert_eq!(first, m.render(&s, 0));
        for line in [
            "stagedoor_spop_frames_total{type=\"notify\"} 5",
            "stagedoor_spop_frames_total{type=\"agent_disconnect\"} 10",
            "stagedoor_spop_protocol_errors_total{status=\"3\"} 2",
            "stagedoor_spop_protocol_errors_total{status=\"99\"} 1",
        ] {
            assert!(first.contains(line), "{line}\n{first}");
        }
        assert!(!first.contains("status=\"0\""), "{first}");
        // Without issuers or a catalog source, their families are left out.
        for absent in ["stagedoor_jwks_refreshes", "stagedoor_catalog_source"] {
            assert!(!first.contains(absent), "{absent}\n{first}");
        }
        s.engine.notify_total.store(9, Ordering::Relaxed);
        let t = m.render(&s, 0);
        assert!(
            t.contains("stagedoor_spop_frames_total{type=\"notify\"} 9"),
            "{t}"
        );
    }
}
