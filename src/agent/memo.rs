//! Policy and actions stages, for a caller repeating a request: this worker thread's
//! last decisions for a verified caller, with their encoded variables. A client that
//! sends the same method, host and path with the same token gets the decision and the
//! ACK's actions computed the first time, instead of the path's normalization, the
//! route lookup, the membership checks and the variables' encoding again (together a
//! third of a warm decision's handler time; BENCHMARKS.md, "Issue 14: the warm path,
//! fifth pass").
//!
//! Exact, not approximate: [`Policy::decide`] is pure in the policy snapshot, the
//! request's method, host and path, and the verified identity, and [`actions_for`]
//! is pure in the outcome and the realm. An entry answers only for the very same
//! snapshot and identity (compared by address; the entry keeps both allocations
//! alive, so neither address can be reused by another while it is there), the same
//! three strings byte for byte, and the same shadow mode and realm. The token is
//! still verified on every request (`exp`, the signing key) before this is asked:
//! only an identity the verifier vouches for now can hit. Requests with browser
//! arguments that change the outcome (`[sso]` with a Cookie header) never come here.
//!
//! Per worker thread (`thread_local!`): no lock and no shared line. A small table,
//! direct-mapped by the identity and the path: a few callers interleaving on one
//! thread keep their entries. Bounded: 16 entries a thread, each at most
//! [`MAX_KEY_BYTES`] of request text, one identity and one route alive.
//!
//! [`actions_for`]: super::actions_for

use std::cell::RefCell;
use std::sync::{Arc, Weak};

use crate::identity::Identity;
use crate::policy::{Decision, Policy, Request};
use crate::spop::Actions;

/// Entries per worker thread.
const SLOTS: usize = 16;
/// Method, host and path together beyond this are decided every time.
pub(super) const MAX_KEY_BYTES: usize = 1024;

struct Entry {
    /// Held only to keep the snapshot's address from being reused while the entry
    /// names it; the snapshot itself is freed when replaced.
    policy: Weak<Policy>,
    identity: Arc<Identity>,
    shadow: bool,
    realm: Box<str>,
    /// The method, host and path, back to back.
    text: String,
    method_len: usize,
    host_len: usize,
    decision: Decision,
    actions: Actions,
}

impl Entry {
    fn is_for(&self, policy: &Arc<Policy>, identity: &Arc<Identity>, key: &Key<'_>) -> bool {
        std::ptr::eq(self.policy.as_ptr(), Arc::as_ptr(policy))
            && Arc::ptr_eq(&self.identity, identity)
            && self.shadow == key.shadow
            && self.method_len == key.req.method.len()
            && self.host_len == key.req.host.len()
            && self.text.len() == key.len()
            && self.text[..self.method_len] == *key.req.method
            && self.text[self.method_len..self.method_len + self.host_len] == *key.req.host
            && self.text[self.method_len + self.host_len..] == *key.req.path
            && *self.realm == *key.realm
    }
}

/// What a decision and its actions depend on besides the snapshot and the identity.
pub(super) struct Key<'a> {
    pub(super) req: &'a Request<'a>,
    pub(super) shadow: bool,
    pub(super) realm: &'a str,
}

impl Key<'_> {
    fn len(&self) -> usize {
        self.req.method.len() + self.req.host.len() + self.req.path.len()
    }
}

thread_local! {
    static TABLE: RefCell<[Option<Entry>; SLOTS]> = const { RefCell::new([const { None }; SLOTS]) };
}

/// Entries this thread holds (for tests: whether a request was remembered).
pub(super) fn entries_here() -> usize {
    TABLE
        .try_with(|t| t.try_borrow().map_or(0, |t| t.iter().flatten().count()))
        .unwrap_or(0)
}

/// The slot of an identity and path: the identity's address and the path's length
/// and last byte, mixed by a multiplication (top 4 bits: one of the 16).
fn slot(identity: &Arc<Identity>, path: &str) -> usize {
    let last = path.as_bytes().last().copied().unwrap_or(0);
    let word = (Arc::as_ptr(identity) as usize as u64 >> 4)
        ^ ((path.len() as u64) << 40)
        ^ (u64::from(last) << 52);
    (word.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60) as usize
}

/// The decision and actions remembered for exactly this snapshot, identity and key.
pub(super) fn find(
    policy: &Arc<Policy>,
    identity: &Arc<Identity>,
    key: &Key<'_>,
) -> Option<(Decision, Actions)> {
    let i = slot(identity, key.req.path);
    TABLE
        .try_with(|t| {
            let t = t.try_borrow().ok()?;
            let e = t[i].as_ref().filter(|e| e.is_for(policy, identity, key))?;
            Some((e.decision.clone(), e.actions.clone()))
        })
        .ok()
        .flatten()
}

/// Remembers `decision` and `actions`, computed from exactly these inputs.
pub(super) fn keep(
    policy: &Arc<Policy>,
    identity: &Arc<Identity>,
    key: &Key<'_>,
    decision: &Decision,
    actions: &Actions,
) {
    if key.len() > MAX_KEY_BYTES {
        return;
    }
    let i = slot(identity, key.req.path);
    let _ = TABLE.try_with(|t| {
        let Ok(mut t) = t.try_borrow_mut() else {
            return;
        };
        // A caller asking for many paths replaces entries often: a slot's buffers are
        // reused, and its references kept when they are the same.
        let e = t[i].get_or_insert_with(|| Entry {
            policy: Arc::downgrade(policy),
            identity: identity.clone(),
            shadow: key.shadow,
            realm: key.realm.into(),
            text: String::with_capacity(key.len()),
            method_len: 0,
            host_len: 0,
            decision: decision.clone(),
            actions: Actions::default(),
        });
        if !std::ptr::eq(e.policy.as_ptr(), Arc::as_ptr(policy)) {
            e.policy = Arc::downgrade(policy);
        }
        if !Arc::ptr_eq(&e.identity, identity) {
            e.identity = identity.clone();
        }
        if *e.realm != *key.realm {
            e.realm = key.realm.into();
        }
        e.shadow = key.shadow;
        e.text.clear();
        e.text.push_str(key.req.method);
        e.text.push_str(key.req.host);
        e.text.push_str(key.req.path);
        e.method_len = key.req.method.len();
        e.host_len = key.req.host.len();
        e.decision = decision.clone();
        e.actions.clone_from(actions);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reason::Reason;

    fn key<'a>(req: &'a Request<'a>, shadow: bool, realm: &'a str) -> Key<'a> {
        Key { req, shadow, realm }
    }

    #[test]
    fn an_entry_answers_for_its_own_inputs_only() {
        let (policy, other_policy) = (Arc::new(Policy::empty()), Arc::new(Policy::empty()));
        let (alice, bob) = (Arc::new(Identity::default()), Arc::new(Identity::default()));
        let req = Request {
            method: "GET",
            host: "h",
            path: "/a",
        };
        let decision = Decision::bare(Reason::Ok);
        let mut actions = Actions::with_capacity(8);
        actions.set(
            crate::spop::Scope::Txn,
            "x",
            &crate::spop::TypedData::Bool(true),
        );
        keep(&policy, &alice, &key(&req, false, "r"), &decision, &actions);
        let hit = find(&policy, &alice, &key(&req, false, "r"));
        assert_eq!(hit, Some((decision, actions.clone())));
        let cases = [
            (&other_policy, &alice, req, false, "r"),
            (&policy, &bob, req, false, "r"),
            (&policy, &alice, req, true, "r"),
            (&policy, &alice, req, false, "realm"),
            (
                &policy,
                &alice,
                Request {
                    method: "POST",
                    ..req
                },
                false,
                "r",
            ),
            (&policy, &alice, Request { host: "H", ..req }, false, "r"),
            (&policy, &alice, Request { path: "/A", ..req }, false, "r"),
            (
                &policy,
                &alice,
                Request {
                    method: "GETh",
                    host: "",
                    ..req
                },
                false,
                "r",
            ),
        ];
        for (p, id, req, shadow, realm) in cases {
            assert!(find(p, id, &key(&req, shadow, realm)).is_none());
        }
        // A slot taken over (same identity and path: same slot) answers for its new
        // inputs only, whichever of them changed.
        let other = Request {
            host: "other",
            ..req
        };
        let mut denied = Actions::with_capacity(8);
        denied.set(
            crate::spop::Scope::Txn,
            "x",
            &crate::spop::TypedData::Bool(false),
        );
        let no = Decision::bare(Reason::NoRoute);
        keep(
            &other_policy,
            &alice,
            &key(&other, true, "realm"),
            &no,
            &denied,
        );
        assert!(find(&policy, &alice, &key(&req, false, "r")).is_none());
        assert!(find(&policy, &alice, &key(&other, true, "realm")).is_none());
        assert!(find(&other_policy, &alice, &key(&other, false, "realm")).is_none());
        assert!(find(&other_policy, &alice, &key(&other, true, "r")).is_none());
        let got = find(&other_policy, &alice, &key(&other, true, "realm"));
        assert_eq!(got, Some((no.clone(), denied.clone())));
        // Another caller's entry (in its own slot, or in this one) never answers for
        // alice, and answers for its own caller.
        keep(&policy, &bob, &key(&other, true, "realm"), &no, &denied);
        assert!(find(&policy, &alice, &key(&other, true, "realm")).is_none());
        assert!(find(&policy, &bob, &key(&other, true, "realm")).is_some());
        // Beyond the bound nothing is kept.
        let long = format!("/{}", "a".repeat(MAX_KEY_BYTES));
        let req = Request { path: &long, ..req };
        keep(
            &policy,
            &alice,
            &key(&req, false, "r"),
            &Decision::bare(Reason::Ok),
            &actions,
        );
        assert!(find(&policy, &alice, &key(&req, false, "r")).is_none());
    }
}
