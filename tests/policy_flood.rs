//! Hash flooding through the catalog: 12,000 route paths that share one FxHash
//! (`tests/fixtures/flood/fx_colliding_paths.txt`, from `examples/fx_collisions.rs`)
//! spread over 10 ordinary Components. With the unkeyed FxHash the route table used
//! until issue 11, building them was quadratic (20,000: 5.3 s against 0.19 s) and a
//! crafted request path took 12 ms instead of 0.05 ms. The table's hasher is now
//! seeded at random per process (foldhash), so no path set can be precomputed to
//! collide: the crafted paths cost what random paths of the same shape cost. Only an
//! order of magnitude is asserted (machines are shared and noisy); the figures are in
//! BENCHMARKS.md.

mod policy_support;

use std::time::{Duration, Instant};

use policy_support::{component, ident};
use stagedoor::catalog::Entity;
use stagedoor::policy::{Policy, Request, Unmatched};

fn colliding() -> Vec<String> {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/flood/fx_colliding_paths.txt"),
    )
    .unwrap();
    text.lines().map(str::to_owned).collect()
}

/// Random paths of the same shape: `/` and 23 characters of the same alphabet.
fn random_like(n: usize) -> Vec<String> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()+,=:@";
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    (0..n)
        .map(|_| {
            let mut p = String::from("/");
            for _ in 0..23 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                p.push(ALPHABET[(seed % ALPHABET.len() as u64) as usize] as char);
            }
            p
        })
        .collect()
}

fn catalog(paths: &[String]) -> Vec<Entity> {
    paths
        .chunks(paths.len().div_ceil(10))
        .enumerate()
        .map(|(i, chunk)| {
            let routes: Vec<String> = chunk.iter().map(|p| format!("GET {p} s")).collect();
            component(
                &format!("svc-{i}"),
                &[("stagedoor.io/routes", &routes.join("\n"))],
            )
        })
        .collect()
}

fn median(mut f: impl FnMut()) -> Duration {
    let mut v: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    v.sort();
    v[2]
}

#[test]
fn colliding_paths_cost_what_random_paths_cost() {
    let flood = colliding();
    assert_eq!(flood.len(), 12_000);
    let random = random_like(flood.len());
    let (flood_cat, random_cat) = (catalog(&flood), catalog(&random));
    let p = Policy::build(&flood_cat, Unmatched::Deny);
    assert!(p.errors().is_empty(), "{:?}", &p.errors()[..1]);
    assert_eq!(p.route_count(), 12_000);
    let t_flood = median(|| {
        Policy::build(&flood_cat, Unmatched::Deny);
    });
    let t_random = median(|| {
        Policy::build(&random_cat, Unmatched::Deny);
    });
    eprintln!("build: flood {t_flood:?}, random {t_random:?}");
    assert!(
        t_flood < t_random * 10,
        "build: flood {t_flood:?}, random {t_random:?}"
    );
    // A request for a crafted path that is not a route probes the same bucket.
    let q = random_like(1)[0].clone();
    let id = ident(&["s"], &[]);
    let probe = |p: &Policy, path: &str| {
        median(|| {
            for _ in 0..200 {
                std::hint::black_box(p.decide(
                    &Request {
                        method: "GET",
                        host: "h",
                        path,
                    },
                    Ok(&id),
                ));
            }
        })
    };
    let random_policy = Policy::build(&random_cat, Unmatched::Deny);
    let t_hit = probe(&p, &flood[17]);
    let t_base = probe(&random_policy, &random[17]);
    assert!(
        t_hit < t_base * 10 + Duration::from_millis(1),
        "decide: flood {t_hit:?}, random {t_base:?}"
    );
    let t_miss = probe(&p, &q);
    eprintln!("200 decisions: flood hit {t_hit:?}, flood miss {t_miss:?}, random {t_base:?}");
    assert!(
        t_miss < t_base * 10 + Duration::from_millis(1),
        "decide miss: {t_miss:?}, random {t_base:?}"
    );
}
