//! Property tests: arbitrary annotation text never panics the builder, accepted route
//! lines round-trip through their canonical form, and arbitrary requests never panic
//! the decision nor let a path through that normalises differently twice.

mod policy_support;

use policy_support::{component, ident};
use proptest::prelude::*;
use stagedoor::policy::{Policy, Request, Unmatched, lang, path};
use stagedoor::reason::Reason;

/// Text that looks like the route grammar, so the parser's deeper branches are reached.
fn routeish() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        "[ \t]{0,2}(\\*|[A-Z]{1,6}(, ?[A-Z]{1,4}){0,2}|[a-z]{1,3})[ \t]{1,2}(/[a-z0-9/._~-]{0,12}|/[a-zA-Z0-9/.%*;?~_-]{0,12})([ \t]{1,2}(public|authenticated|@[a-z:/]{0,8}|[a-z:|\"@#]{1,8})){0,3}[ \t]{0,2}",
        0..5,
    )
    .prop_map(|lines| lines.join("\n"))
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "(\\PC|[ \t\n\r,|@*/%.])*", routeish()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_annotations_never_panic(
        routes in any_text(),
        hosts in any_text(),
        groups in any_text(),
        owner in any_text(),
    ) {
        let e = component("x", &[
            ("stagedoor.io/routes", &routes),
            ("stagedoor.io/hosts", &hosts),
            ("stagedoor.io/allowed-groups", &groups),
            ("stagedoor.io/allow-owner", &owner),
            ("stagedoor.io/idp-groups", &groups),
        ]);
        let p = Policy::build(&[e], Unmatched::Deny);
        // idp-groups on a component is always an error, so nothing can be routed
        prop_assert_eq!(p.route_count(), 0);
        prop_assert!(!p.errors().is_empty());
        for err in p.errors() {
            prop_assert!(err.line >= 1 && err.column >= 1);
            prop_assert!(!err.to_string().contains('\n'), "one line: {}", err);
        }
        let _ = p.render_table();
        let _ = lang::parse_idp_groups(&groups);
        let _ = lang::parse_word(&owner);
    }

    #[test]
    fn accepted_route_lines_round_trip(text in routeish()) {
        if let Ok(specs) = lang::parse_routes(&text, "default") {
            prop_assert!(specs.len() <= text.lines().count());
            for s in specs {
                let again = lang::parse_routes(&s.display, "default").unwrap();
                prop_assert_eq!(again.len(), 1);
                prop_assert_eq!(&again[0].display, &s.display);
                prop_assert_eq!(&again[0].requirement, &s.requirement);
                prop_assert_eq!(&again[0].path, &s.path);
            }
        }
    }

    /// Escaping any character a path may hold raw changes nothing: one path, one form.
    #[test]
    fn escaping_raw_path_characters_changes_nothing(
        raw in "(/[a-zA-Z0-9._~!$&'()*+,=:@-]{0,8}){1,5}",
        mask in any::<u64>(),
    ) {
        let escaped: String = raw
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if c != '/' && mask & (1 << (i % 64)) != 0 {
                    format!("%{:02x}", c as u32)
                } else {
                    c.to_string()
                }
            })
            .collect();
        prop_assert_eq!(path::normalize(&raw), path::normalize(&escaped), "{}", escaped);
    }

    #[test]
    fn arbitrary_requests_never_panic_and_paths_are_stable(
        method in prop_oneof![any::<String>(), "[A-Za-z*]{0,8}"],
        host in prop_oneof![any::<String>(), "[a-zA-Z0-9.:\\[\\]-]{0,20}"],
        raw in prop_oneof![
            any::<String>(),
            "/[a-zA-Z0-9/.%;?#\\\\~_ -]{0,40}",
            "(/(\\.|\\.\\.|%2[eEfF]|%5[cC]|%[0-9a-fA-F]{2}|[a-z]{1,3})){0,8}",
            // escapes of `%` and of hex digits, to split a double encoding
            "(/(%25|%3[0-9]|%[46][1-6]|[0-9a-fA-F%]|[a-z]{1,2})){0,10}",
        ],
        with_token in any::<bool>(),
    ) {
        let p = Policy::build(
            &[component("s", &[("stagedoor.io/routes", "GET / s\n* /a/b public\nPOST /a t")])],
            Unmatched::Deny,
        );
        let id = ident(&["s", "t"], &[]);
        let token = if with_token { Ok(&id) } else { Err(Reason::MissingToken) };
        let d = p.decide(&Request { method: &method, host: &host, path: &raw }, token);
        prop_assert_eq!(d.allow(), d.status() == 200);
        match path::normalize(&raw) {
            _ if !raw.starts_with('/') => prop_assert_eq!(d.reason, Reason::BadRequest),
            Err(_) => prop_assert_eq!(d.reason, Reason::BadPath),
            Ok(norm) => {
                // the only other bad_path: upper case folding onto a longer route prefix,
                // or a suffix (`.`, `%20`) that a backend may cut off
                if d.reason == Reason::BadPath {
                    prop_assert!(
                        norm.bytes().any(|b| b.is_ascii_uppercase() || b == b'.')
                            || norm.contains("%20"),
                        "{}",
                        norm
                    );
                }
                // what the policy read is what a second reader would read
                let twice = path::normalize(&norm).unwrap();
                prop_assert_eq!(&twice, &norm);
                prop_assert!(!norm.contains("//"));
                prop_assert!(norm.split('/').all(|s| s != "." && s != ".."));
                prop_assert!(!norm.contains('\\') && !norm.contains(';'));
            }
        }
    }
}
