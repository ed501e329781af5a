//! Large group hierarchies: layers of groups joined by hub groups, where every group
//! has thousands of ancestors. The directory stores, per group, only the principals
//! that routes name, so memory stays bounded (it once took 786 MB for 13,000 groups).

mod policy_support;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use policy_support::ident;
use stagedoor::catalog::file;
use stagedoor::identity::Identity;
use stagedoor::policy::{Policy, Request, Unmatched};
use stagedoor::reason::Reason;

/// `layers` layers of `width` groups; every group of layer i has the hub of layer i as
/// parent, and that hub has every group of layer i+1 as parents (each lists it in
/// `spec.children`). 100 users in layer 0.
fn layered_catalog(layers: usize, width: usize) -> String {
    let mut y = String::new();
    // spec.parent names one parent; the hub of layer i is a child of every group of
    // layer i+1 through their spec.children (Backstage derives childOf from both).
    let group = |y: &mut String, name: &str, parent: Option<String>, children: &[String]| {
        let _ = write!(
            y,
            "---\napiVersion: backstage.io/v1alpha1\nkind: Group\nmetadata:\n  name: {name}\nspec:\n  type: team\n  children: [{}]\n",
            children.join(", ")
        );
        if let Some(p) = parent {
            let _ = writeln!(y, "  parent: {p}");
        }
    };
    for l in 0..layers {
        let hub_below = (l > 0).then(|| format!("hub-{}", l - 1));
        for g in 0..width {
            let parent = (l + 1 < layers).then(|| format!("hub-{l}"));
            let children: Vec<String> = hub_below.iter().cloned().collect();
            group(&mut y, &format!("l{l}-g{g}"), parent, &children);
        }
        if l + 1 < layers {
            group(&mut y, &format!("hub-{l}"), None, &[]);
        }
    }
    for u in 0..100 {
        let _ = write!(
            y,
            "---\napiVersion: backstage.io/v1alpha1\nkind: User\nmetadata:\n  name: user-{u}\n  annotations:\n    stagedoor.io/subject: sub-{u}\nspec:\n  memberOf: [l0-g{}]\n",
            u % width
        );
    }
    let top = layers - 1;
    let _ = write!(
        y,
        "---\napiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: svc\n  annotations:\n    stagedoor.io/routes: |\n      GET /top authenticated @l{top}-g0\n      GET /mid authenticated @hub-{}\n      GET /low authenticated @l0-g1\nspec:\n  type: service\n  owner: l{top}-g0\n",
        layers / 2
    );
    y
}

/// Peak resident memory of a child process, in bytes, sampled from /proc until it exits.
fn run_measuring(cmd: &mut std::process::Command) -> (std::process::ExitStatus, u64, Duration) {
    let start = Instant::now();
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kb * 1024);
        }
        if let Some(status) = child.try_wait().unwrap() {
            return (status, peak, start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_13000_group_layered_hierarchy_stays_under_100_mb() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = layered_catalog(10, 1_320);
    std::fs::write(dir.path().join("catalog.yaml"), &yaml).unwrap();
    std::fs::write(
        dir.path().join("stagedoor.toml"),
        "[[issuers]]\nissuer = \"https://idp.example\"\naudiences = [\"a\"]\njwks_file = \"jwks.json\"\n\n[catalog]\nsource = \"file\"\nfiles = [\"catalog.yaml\"]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("jwks.json"), "{\"keys\":[]}").unwrap();
    // For BENCHMARKS.md: the same files, to run other builds on.
    if let Some(out) = std::env::var_os("STAGEDOOR_HIERARCHY_OUT") {
        for f in ["catalog.yaml", "stagedoor.toml", "jwks.json"] {
            std::fs::copy(dir.path().join(f), std::path::Path::new(&out).join(f)).unwrap();
        }
    }
    let (status, peak, took) = run_measuring(
        std::process::Command::new(env!("CARGO_BIN_EXE_stagedoor"))
            .args(["policy", "show", "--config"])
            .arg(dir.path().join("stagedoor.toml")),
    );
    eprintln!(
        "policy show: {} groups, {} KB of YAML, peak RSS {} MB, {:?}",
        10 * 1_320 + 9,
        yaml.len() / 1024,
        peak / (1 << 20),
        took
    );
    assert!(status.success(), "{status}");
    assert!(peak > 0, "no sample of the process");
    assert!(peak < 100 << 20, "peak RSS {} MB", peak / (1 << 20));
}

#[test]
fn membership_is_still_followed_through_the_layers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("catalog.yaml"), layered_catalog(6, 40)).unwrap();
    let entities = file::load(&["catalog.yaml".to_owned()], dir.path()).unwrap();
    let p = Policy::build(&entities, Unmatched::Deny);
    assert!(p.errors().is_empty(), "{:?}", p.errors());
    let user = |sub: &str| Identity {
        sub: Some(sub.into()),
        ..ident(&[], &[])
    };
    let decide = |path: &str, id: &Identity| {
        p.decide(
            &Request {
                method: "GET",
                host: "h",
                path,
            },
            Ok(id),
        )
        .reason
    };
    // user-1 is in l0-g1: below every hub, so below l5-g0 and hub-3
    assert_eq!(decide("/top", &user("sub-1")), Reason::Ok);
    assert_eq!(decide("/mid", &user("sub-1")), Reason::Ok);
    assert_eq!(decide("/low", &user("sub-1")), Reason::Ok);
    assert_eq!(decide("/low", &user("sub-2")), Reason::NotMember);
    // a token group of a top-layer group is below nothing named but itself
    let top = ident(&[], &["l5-g0"]);
    assert_eq!(decide("/top", &top), Reason::Ok);
    assert_eq!(decide("/mid", &top), Reason::NotMember);
    let mid = ident(&[], &["l4-g3"]);
    assert_eq!(decide("/top", &mid), Reason::Ok);
    assert_eq!(decide("/mid", &mid), Reason::NotMember);
    let below_mid = ident(&[], &["l3-g3"]);
    assert_eq!(decide("/mid", &below_mid), Reason::Ok);
}
