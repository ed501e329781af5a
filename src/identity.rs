//! The verified caller: what token verification hands to the policy decision.
//! Built only from a token whose signature and claims were verified; nothing in
//! here ever comes from an unverified token.

/// A caller proven by a verified token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// The issuer the token was verified against (its configured `issuer`).
    pub issuer: String,
    /// `sub` claim.
    pub sub: Option<String>,
    /// `client_id` claim (or `azp`/`cid` where providers put it there).
    pub client_id: Option<String>,
    /// `email` claim, used to match a Backstage User by `spec.profile.email`; present
    /// only when the provider vouched for it (`email_verified: true`, or an issuer with
    /// `trust_unverified_email`).
    pub email: Option<String>,
    /// Granted scopes from `scope` (space-delimited) and `scp` (array or string), deduplicated.
    pub scopes: Vec<String>,
    /// Identity-provider groups from the issuer's configured groups claim.
    pub groups: Vec<String>,
    /// The caller's User entity ref (`user:namespace/name`, canonical), set only by a
    /// `kind = "backstage"` issuer from its token's `sub`. When set, the policy finds
    /// the caller by this ref alone (not by subject, email or groups).
    pub backstage_user: Option<String>,
    /// `exp` claim, unix seconds.
    pub exp: i64,
}

impl Identity {
    /// Bytes this identity holds, its own and on the heap (string lengths, not
    /// capacities; for the verified-token cache's byte bound).
    pub fn approx_bytes(&self) -> usize {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        let list = |v: &Vec<String>| {
            v.iter()
                .map(|s| s.len() + std::mem::size_of::<String>())
                .sum::<usize>()
        };
        std::mem::size_of::<Identity>()
            + self.issuer.len()
            + opt(&self.sub)
            + opt(&self.client_id)
            + opt(&self.email)
            + opt(&self.backstage_user)
            + list(&self.scopes)
            + list(&self.groups)
    }

    /// Whether the token granted `scope` (whole-word match).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}
