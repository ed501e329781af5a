//! The annotation language, between the catalog and the route table: parses the
//! `stagedoor.io/*` annotation values of one entity (with nom) into typed route
//! lines, host patterns and principal refs, or a located [`LangError`].
//! The grammar is documented on the [`policy`](super) module.

use nom::{
    IResult, Parser,
    branch::alt,
    bytes::complete::{tag, take_till, take_till1, take_while1},
    character::complete::{char, space0, space1},
    combinator::map,
    multi::separated_list1,
    sequence::delimited,
};
use thiserror::Error;

/// Longest annotation value read; longer ones are an error (protects build time).
pub const MAX_ANNOTATION_LEN: usize = 64 * 1024;

/// Most requirement words on one route line (keeps a line's checks cheap).
pub const MAX_WORDS: usize = 64;

/// What is wrong with an annotation value. Located by [`Located`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LangError {
    #[error("value is longer than {MAX_ANNOTATION_LEN} bytes")]
    TooLarge,
    #[error("expected methods: `*` or a comma list such as GET,HEAD")]
    ExpectedMethods,
    #[error(
        "method `{0}` must be upper case letters, digits, `-` or `_` (methods are case-sensitive)"
    )]
    BadMethod(String),
    #[error("`*` cannot be combined with other methods")]
    StarWithMethods,
    #[error("expected a path starting with `/`")]
    ExpectedPath,
    #[error("path `{}`: `*` is not a wildcard here, routes are path prefixes; drop it", shown(.0))]
    WildcardInPath(String),
    #[error("path `{}`: query strings are not matched; drop `?...`", shown(.0))]
    QueryInPath(String),
    #[error("path `{}`: {why}", shown(.path))]
    BadPath {
        path: String,
        why: super::path::PathError,
    },
    #[error("expected a requirement: `public`, `authenticated` or scopes")]
    MissingRequirement,
    #[error("more than {MAX_WORDS} requirement words on one line")]
    TooManyWords,
    #[error("`public` must stand alone on its line")]
    PublicNotAlone,
    #[error("`authenticated` cannot be combined with scopes")]
    AuthenticatedWithScopes,
    #[error("`{}` appears twice on the line", shown(.0))]
    RepeatedWord(String),
    #[error("invalid scope `{}`: a scope is printable ASCII without `\"`, `\\` or `|`", shown(.0))]
    BadScope(String),
    #[error("empty alternative in `{}`", shown(.0))]
    EmptyAlternative(String),
    #[error("invalid principal `{}`: expected [group:|user:][namespace/]name", shown(.0))]
    BadPrincipal(String),
    #[error("route {} is already declared on line {}", shown(.0), .1)]
    DuplicateRoute(String, u32),
    #[error("empty list item")]
    EmptyItem,
    #[error("invalid host `{}`: expected a DNS name or `*.` followed by one", shown(.0))]
    BadHost(String),
    #[error("host `{}`: ports are ignored when matching; drop the port", shown(.0))]
    HostWithPort(String),
    #[error("expected `true` or `false`, found `{}`", shown(.0))]
    BadBool(String),
    #[error("invalid value `{}`: expected one word without spaces or control characters", shown(.0))]
    BadWord(String),
    #[error("`{}` holds a control character", shown(.0))]
    ControlChar(String),
    #[error("unknown stagedoor annotation")]
    UnknownAnnotation,
    #[error("this annotation is not read on a {} entity", shown(.0))]
    WrongKind(String),
    #[error("allow-owner is true but the entity has no owner")]
    NoOwner,
    #[error("also claimed by {}; ignored on both", shown(.0))]
    DuplicateIdentity(String),
    #[error(
        "expected whom the prefix is delegated to: `*`, or refs of Groups, Users or routed entities"
    )]
    MissingDelegate,
    #[error(
        "invalid delegate `{}`: expected `*` or [kind:][namespace/]name of a Component, API, Resource or System (not a Group or User: an entity's owner is whatever its writer says)",
        shown(.0)
    )]
    BadDelegate(String),
    #[error(
        "group hierarchy too large: more than {0} memberships of groups that routes name; the rest are ignored (less access, never more)"
    )]
    HierarchyTooLarge(usize),
}

/// Whether `c` must not reach a terminal raw: control characters (ESC starts terminal
/// sequences: `\e[8m` hides what follows), blanks other than the space, and the
/// invisible formatting characters (bidi overrides such as U+202E reorder the rest of
/// the line, zero-width characters hide differences).
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || (c.is_whitespace() && c != ' ')
        || matches!(c, '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}')
}

/// Catalog-supplied text printed for a person (`policy show`, pretty logs, error
/// messages): every [`unsafe_char`] escaped as `\u{..}`. Borrows when nothing is.
pub fn escaped(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Input echoed in a message: escaped as [`escaped`], cut at 80 characters, so every
/// message stays one readable line.
pub fn shown(s: &str) -> String {
    let cut: String = s.chars().take(80).collect();
    let mut out = escaped(&cut).into_owned();
    if s.chars().nth(80).is_some() {
        out.push('…');
    }
    out
}

/// A [`LangError`] at a 1-based line and column (in characters) of the annotation value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub line: u32,
    pub column: u32,
    pub error: LangError,
}

/// What a route line requires of the caller (before group membership).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// No token needed.
    Public,
    /// Any verified token.
    Authenticated,
    /// Every inner list must be met by at least one of its scopes (`a|b c` = (a or b) and c).
    Scopes(Vec<Vec<Box<str>>>),
}

/// One parsed line of `stagedoor.io/routes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// 1-based line in the annotation value.
    pub line: u32,
    /// `None` for `*`; otherwise deduplicated, in written order.
    pub methods: Option<Vec<Box<str>>>,
    /// Normalised prefix, without trailing `/` (except the root `/`).
    pub path: String,
    pub requirement: Requirement,
    /// Full lower-case refs from `@` words (group or user).
    pub principals: Vec<String>,
    /// The line in canonical form, e.g. `GET,HEAD /api/orders orders:read`.
    pub display: String,
}

type Res<'a, T> = IResult<&'a str, T>;

fn offset(whole: &str, part: &str) -> usize {
    part.as_ptr() as usize - whole.as_ptr() as usize
}

fn at(line_text: &str, line: u32, off: usize, error: LangError) -> Located {
    let column = line_text.get(..off).map_or(off, |s| s.chars().count()) + 1;
    Located {
        line,
        column: u32::try_from(column).unwrap_or(u32::MAX),
        error,
    }
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Lines of a value with their 1-based numbers, `\r\n` tolerated.
fn lines(text: &str) -> impl Iterator<Item = (u32, &str)> {
    text.split('\n').enumerate().map(|(i, l)| {
        let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
        (n, l.strip_suffix('\r').unwrap_or(l))
    })
}

fn check_len(text: &str) -> Result<(), Located> {
    if text.len() > MAX_ANNOTATION_LEN {
        return Err(Located {
            line: 1,
            column: 1,
            error: LangError::TooLarge,
        });
    }
    Ok(())
}

fn methods(i: &str) -> Res<'_, Vec<&str>> {
    alt((
        map(tag("*"), |s| vec![s]),
        separated_list1(
            delimited(space0, char(','), space0),
            take_while1(|c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        ),
    ))
    .parse(i)
}

fn word(i: &str) -> Res<'_, &str> {
    take_till1(is_blank).parse(i)
}

/// Parses `stagedoor.io/routes`. `namespace` is the entity's, the default for `@` refs.
pub fn parse_routes(text: &str, namespace: &str) -> Result<Vec<RouteSpec>, Located> {
    check_len(text)?;
    let mut out: Vec<RouteSpec> = Vec::new();
    // path → indexes in `out`, so duplicate detection stays linear in the line count.
    let mut by_path: std::collections::HashMap<String, Vec<usize>> = Default::default();
    for (n, line) in lines(text) {
        let Some(spec) = parse_route_line(line, n, namespace)? else {
            continue;
        };
        let same_path = by_path.get(&spec.path).map_or(&[][..], Vec::as_slice);
        for prev in same_path.iter().map(|&i| &out[i]) {
            let clash = match (&prev.methods, &spec.methods) {
                (None, None) => Some("*".to_owned()),
                (Some(a), Some(b)) => a.iter().find(|m| b.contains(m)).map(|m| m.to_string()),
                _ => None,
            };
            if let Some(m) = clash {
                let err = LangError::DuplicateRoute(format!("{m} {}", spec.path), prev.line);
                let start = line.len() - line.trim_start_matches(is_blank).len();
                return Err(at(line, n, start, err));
            }
        }
        by_path
            .entry(spec.path.clone())
            .or_default()
            .push(out.len());
        out.push(spec);
    }
    Ok(out)
}

fn parse_route_line(line: &str, n: u32, ns: &str) -> Result<Option<RouteSpec>, Located> {
    let err = |rest: &str, e: LangError| at(line, n, offset(line, rest), e);
    let (rest, _) = space0::<_, nom::error::Error<&str>>(line).unwrap_or((line, ""));
    if rest.is_empty() || rest.starts_with('#') {
        return Ok(None);
    }
    let (after_methods, ms) = methods(rest).map_err(|_| err(rest, LangError::ExpectedMethods))?;
    let method_list = if ms == ["*"] {
        None
    } else {
        let mut list: Vec<Box<str>> = Vec::new();
        for m in &ms {
            if *m == "*" {
                return Err(err(m, LangError::StarWithMethods));
            }
            if !m.bytes().next().is_some_and(|b| b.is_ascii_uppercase())
                || m.bytes().any(|b| b.is_ascii_lowercase())
            {
                return Err(err(m, LangError::BadMethod((*m).to_owned())));
            }
            if !list.iter().any(|x| &**x == *m) {
                list.push((*m).into());
            }
        }
        Some(list)
    };
    let (rest, _) = space1::<_, nom::error::Error<&str>>(after_methods).map_err(|_| {
        let e = if after_methods.starts_with(',') || after_methods.starts_with('*') {
            LangError::StarWithMethods
        } else if after_methods.is_empty() {
            LangError::ExpectedPath
        } else {
            LangError::ExpectedMethods
        };
        err(after_methods, e)
    })?;
    let (rest, raw_path) = word(rest).map_err(|_| err(rest, LangError::ExpectedPath))?;
    let path = route_path(raw_path).map_err(|e| err(raw_path, e))?;

    let mut words: Vec<&str> = Vec::new();
    let mut rest = rest;
    loop {
        let (r, _) = space0::<_, nom::error::Error<&str>>(rest).unwrap_or((rest, ""));
        if r.is_empty() || r.starts_with('#') {
            break;
        }
        if r.len() == rest.len() {
            // A word must be separated by blanks; `word` stops only at a blank.
            return Err(err(r, LangError::MissingRequirement));
        }
        let (r2, w) = word(r).map_err(|_| err(r, LangError::MissingRequirement))?;
        if words.len() == MAX_WORDS {
            return Err(err(w, LangError::TooManyWords));
        }
        words.push(w);
        rest = r2;
    }
    if words.is_empty() {
        return Err(err(rest, LangError::MissingRequirement));
    }

    let mut public = false;
    let mut authenticated = false;
    let mut scopes: Vec<Vec<Box<str>>> = Vec::new();
    let mut principals: Vec<String> = Vec::new();
    for (k, w) in words.iter().enumerate() {
        if words[..k].contains(w) {
            return Err(err(w, LangError::RepeatedWord((*w).to_owned())));
        }
        match *w {
            "public" => public = true,
            "authenticated" => authenticated = true,
            _ if w.starts_with('@') => {
                let r = principal_ref(&w[1..], ns)
                    .ok_or_else(|| err(w, LangError::BadPrincipal((*w).to_owned())))?;
                principals.push(r);
            }
            _ => scopes.push(scope_alternatives(w).map_err(|e| err(w, e))?),
        }
    }
    let first = words[0];
    let requirement = if public {
        if words.len() > 1 {
            return Err(err(first, LangError::PublicNotAlone));
        }
        Requirement::Public
    } else if authenticated {
        if !scopes.is_empty() {
            return Err(err(first, LangError::AuthenticatedWithScopes));
        }
        Requirement::Authenticated
    } else if scopes.is_empty() {
        return Err(err(first, LangError::MissingRequirement));
    } else {
        Requirement::Scopes(scopes)
    };
    let methods_text = method_list.as_ref().map_or_else(
        || "*".to_owned(),
        |l| l.iter().map(|m| &**m).collect::<Vec<_>>().join(","),
    );
    let display = format!("{methods_text} {path} {}", words.join(" "));
    Ok(Some(RouteSpec {
        line: n,
        methods: method_list,
        path,
        requirement,
        principals,
        display,
    }))
}

/// The route paths a `stagedoor.io/routes` text names, read leniently for an entity
/// whose annotations are in error: on each line, before a `#` word, from the first `/`
/// to the next blank, as the longest valid route path it begins with (`/admin/*` holds
/// `/admin`, `/a/b%C3%9F` holds `/a`; `/` at worst). Those paths are held closed (see
/// `build`), so a typo in the path itself fails closed too.
pub fn claimed_paths(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            // Before a `#` word; from the first `/`, even one glued to the methods
            // (`GET,HEAD/api/orders`, found by review), to the next blank.
            let words: Vec<&str> = line
                .split_whitespace()
                .take_while(|w| !w.starts_with('#'))
                .collect();
            let word = words.iter().find_map(|w| w.find('/').map(|i| &w[i..]))?;
            Some(longest_valid_prefix(word))
        })
        .collect()
}

/// `word` (starting with `/`) as a route path, else its longest valid segment prefix.
fn longest_valid_prefix(word: &str) -> String {
    let mut cand = word
        .find(['*', '?', ';', '#'])
        .map_or(word, |cut| &word[..cut]);
    loop {
        if let Ok(p) = route_path(cand) {
            return p;
        }
        match cand.trim_end_matches('/').rfind('/') {
            Some(0) | None => return "/".to_owned(),
            Some(i) => cand = &cand[..i],
        }
    }
}

/// Validates and normalises a route path to the form request paths are matched in.
fn route_path(raw: &str) -> Result<String, LangError> {
    if !raw.starts_with('/') {
        return Err(LangError::ExpectedPath);
    }
    if raw.contains('*') {
        return Err(LangError::WildcardInPath(raw.to_owned()));
    }
    if raw.contains('?') {
        return Err(LangError::QueryInPath(raw.to_owned()));
    }
    let norm = super::path::normalize(raw).map_err(|why| LangError::BadPath {
        path: raw.to_owned(),
        why,
    })?;
    let trimmed = if norm.len() > 1 {
        norm.strip_suffix('/').unwrap_or(&norm)
    } else {
        &norm
    };
    Ok(trimmed.to_owned())
}

fn scope_alternatives(w: &str) -> Result<Vec<Box<str>>, LangError> {
    let mut alts: Vec<Box<str>> = Vec::new();
    for a in w.split('|') {
        if a.is_empty() {
            return Err(LangError::EmptyAlternative(w.to_owned()));
        }
        let ok = a
            .bytes()
            .all(|b| (0x21..=0x7E).contains(&b) && b != b'"' && b != b'\\');
        if !ok || a.starts_with('@') || a == "public" || a == "authenticated" {
            return Err(LangError::BadScope(a.to_owned()));
        }
        if !alts.iter().any(|x| &**x == a) {
            alts.push(a.into());
        }
    }
    Ok(alts)
}

fn is_ref_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Parses an entity ref `[kind:][namespace/]name` into `kind:namespace/name`, lower case.
/// Returns `None` when malformed.
pub fn entity_ref(text: &str, default_kind: &str, default_ns: &str) -> Option<String> {
    let (kind, rest) = match text.split_once(':') {
        Some((k, r)) => (k, r),
        None => (default_kind, text),
    };
    let (ns, name) = match rest.split_once('/') {
        Some((n, m)) => (n, m),
        None => (default_ns, rest),
    };
    (is_ref_part(kind) && is_ref_part(ns) && is_ref_part(name)).then(|| {
        format!(
            "{}:{}/{}",
            kind.to_ascii_lowercase(),
            ns.to_ascii_lowercase(),
            name.to_ascii_lowercase()
        )
    })
}

/// A principal named in an access list: a group (the default kind) or a user.
pub fn principal_ref(text: &str, default_ns: &str) -> Option<String> {
    let r = entity_ref(text, "group", default_ns)?;
    (r.starts_with("group:") || r.starts_with("user:")).then_some(r)
}

/// Items of a comma list with their byte offsets, trimmed of blanks. Errors on an empty item.
fn comma_items(line: &str, n: u32) -> Result<Vec<(usize, &str)>, Located> {
    let parsed: Res<'_, Vec<&str>> =
        separated_list1(char(','), take_till(|c| c == ',')).parse(line);
    let items = parsed.map(|(_, v)| v).unwrap_or_default();
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let t = item.trim_matches(is_blank);
        if t.is_empty() {
            return Err(at(line, n, offset(line, item), LangError::EmptyItem));
        }
        out.push((offset(line, t), t));
    }
    Ok(out)
}

/// Parses a comma list, which may wrap over several lines (a newline separates items
/// like a comma; a comma may end a line).
fn comma_list<T>(
    text: &str,
    mut item: impl FnMut(&str) -> Result<T, LangError>,
) -> Result<Vec<T>, Located> {
    check_len(text)?;
    let mut out = Vec::new();
    for (n, line) in lines(text) {
        let trimmed = line.trim_end_matches(is_blank);
        // A list may wrap over lines; a comma ending a line is allowed.
        let line = trimmed.strip_suffix(',').unwrap_or(trimmed);
        if line.trim_matches(is_blank).is_empty() {
            continue;
        }
        for (off, t) in comma_items(line, n)? {
            out.push(item(t).map_err(|e| at(line, n, off, e))?);
        }
    }
    if out.is_empty() {
        return Err(Located {
            line: 1,
            column: 1,
            error: LangError::EmptyItem,
        });
    }
    Ok(out)
}

/// A host pattern: an exact name or `*.` + a name (matching exactly one more label).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    Exact(String),
    /// The suffix after `*.`.
    Wildcard(String),
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn host_pattern(item: &str) -> Result<HostPattern, LangError> {
    let lower = item.to_ascii_lowercase();
    let h = lower.strip_suffix('.').unwrap_or(&lower);
    if let Some((name, port)) = h.rsplit_once(':')
        && is_dns_name(name.strip_prefix("*.").unwrap_or(name))
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(LangError::HostWithPort(item.to_owned()));
    }
    match h.strip_prefix("*.") {
        Some(suffix) if is_dns_name(suffix) => Ok(HostPattern::Wildcard(suffix.to_owned())),
        None if is_dns_name(h) => Ok(HostPattern::Exact(h.to_owned())),
        _ => Err(LangError::BadHost(item.to_owned())),
    }
}

/// Whom a prefix is delegated to (`stagedoor.io/delegate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delegate {
    /// `*`: any entity of any owner.
    Anyone,
    /// A full lower-case ref of a routed entity (Component, API, Resource, System).
    Ref(String),
}

/// One line of `stagedoor.io/delegate`: `PATH DELEGATE...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegation {
    /// Normalised prefix, as route paths are.
    pub path: String,
    pub to: Vec<Delegate>,
}

/// Delegates are entities, never owners: `spec.owner` is written by whoever writes the
/// entity, so a delegation to a team could be claimed by anyone.
const DELEGATE_KINDS: [&str; 4] = ["component", "api", "resource", "system"];

/// Parses `stagedoor.io/delegate`: one `PATH DELEGATE...` line per prefix; delegates
/// are `*` or refs of routed entities (kind defaulting to `component`, namespace to
/// the entity's), separated by blanks or commas. `#` starts a comment, as in routes.
pub fn parse_delegations(text: &str, ns: &str) -> Result<Vec<Delegation>, Located> {
    check_len(text)?;
    let mut out = Vec::new();
    for (n, line) in lines(text) {
        let words: Vec<&str> = line
            .split(|c: char| is_blank(c) || c == ',')
            .filter(|w| !w.is_empty())
            .take_while(|w| !w.starts_with('#'))
            .collect();
        let Some((raw_path, targets)) = words.split_first() else {
            continue;
        };
        let err = |w: &str, e| at(line, n, offset(line, w), e);
        let path = route_path(raw_path).map_err(|e| err(raw_path, e))?;
        if targets.is_empty() {
            return Err(err(raw_path, LangError::MissingDelegate));
        }
        let mut to = Vec::with_capacity(targets.len());
        for t in targets {
            let d = if *t == "*" {
                Delegate::Anyone
            } else {
                let r = entity_ref(t, "component", ns)
                    .filter(|r| {
                        DELEGATE_KINDS
                            .iter()
                            .any(|k| r.split(':').next() == Some(k))
                    })
                    .ok_or_else(|| err(t, LangError::BadDelegate((*t).to_owned())))?;
                Delegate::Ref(r)
            };
            if !to.contains(&d) {
                to.push(d);
            }
        }
        out.push(Delegation { path, to });
    }
    if out.is_empty() {
        return Err(Located {
            line: 1,
            column: 1,
            error: LangError::MissingDelegate,
        });
    }
    Ok(out)
}

/// Whether `path` is `prefix` or lies under it on a segment boundary (both normalised
/// route paths without a trailing `/`).
pub fn is_under(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Parses `stagedoor.io/hosts`: a comma list of host patterns, deduplicated.
pub fn parse_hosts(text: &str) -> Result<Vec<HostPattern>, Located> {
    let mut v = comma_list(text, host_pattern)?;
    let mut seen = std::collections::HashSet::new();
    v.retain(|h| seen.insert(h.clone()));
    Ok(v)
}

/// Parses `stagedoor.io/allowed-groups`: a comma list of group (or user) refs.
pub fn parse_principals(text: &str, ns: &str) -> Result<Vec<String>, Located> {
    comma_list(text, |t| {
        principal_ref(t, ns).ok_or_else(|| LangError::BadPrincipal(t.to_owned()))
    })
}

/// Parses `stagedoor.io/idp-groups`: a comma list of identity-provider group names
/// (kept verbatim, compared case-sensitively; inner spaces allowed).
pub fn parse_idp_groups(text: &str) -> Result<Vec<String>, Located> {
    comma_list(text, |t| {
        if t.chars().any(char::is_control) {
            Err(LangError::ControlChar(t.to_owned()))
        } else {
            Ok(t.to_owned())
        }
    })
}

/// Parses `stagedoor.io/allow-owner`: `true` or `false` (ASCII case-insensitive).
pub fn parse_bool(text: &str) -> Result<bool, Located> {
    check_len(text)?;
    let t = text.trim();
    let err = |e| at(text, 1, offset(text, t), e);
    if t.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if t.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(err(LangError::BadBool(t.to_owned())))
    }
}

/// Parses a single word (`stagedoor.io/subject`): no blanks, no control characters.
pub fn parse_word(text: &str) -> Result<String, Located> {
    check_len(text)?;
    let t = text.trim();
    if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(at(
            text,
            1,
            offset(text, t),
            LangError::BadWord(t.to_owned()),
        ));
    }
    Ok(t.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claimed_paths_read_broken_lines_leniently() {
        let text = "GET /a/b s\nGET, HEAD /c s\n# GET /commented s\nGET /d/* s\n\
                    * /e?x s\nGET /f/%zz s\nGET /%zz s\nGET nothing\nGET /g # /h\n\
                    GET,HEAD/glued s";
        assert_eq!(
            claimed_paths(text),
            ["/a/b", "/c", "/d", "/e", "/f", "/", "/g", "/glued"]
        );
    }

    #[test]
    fn parses_the_documented_example() {
        let text = "GET,HEAD  /api/orders          orders:read\n\
                    POST      /api/orders          orders:write\n\
                    *         /api/orders/admin    orders:admin @sre\n\
                    GET       /api/orders/health   public\n\
                    GET       /api/orders/me       authenticated\n";
        let r = parse_routes(text, "default").unwrap();
        assert_eq!(r.len(), 5);
        assert_eq!(r[0].display, "GET,HEAD /api/orders orders:read");
        assert_eq!(r[2].methods, None);
        assert_eq!(r[2].principals, ["group:default/sre"]);
        assert_eq!(r[3].requirement, Requirement::Public);
        assert_eq!(r[4].requirement, Requirement::Authenticated);
    }

    #[test]
    fn delegations() {
        let d = parse_delegations(
            "/api/orders/reports  reporting, api:default/reports-api # why\n\
             # a comment\n\n/static *\n/x system:ops/tools",
            "default",
        )
        .unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].path, "/api/orders/reports");
        assert_eq!(
            d[0].to,
            [
                Delegate::Ref("component:default/reporting".into()),
                Delegate::Ref("api:default/reports-api".into())
            ]
        );
        assert_eq!(d[1].to, [Delegate::Anyone]);
        assert_eq!(d[2].to, [Delegate::Ref("system:ops/tools".into())]);
        for owner_kind in ["/a group:default/x", "/a user:default/x"] {
            let e = parse_delegations(owner_kind, "default").unwrap_err();
            assert!(matches!(e.error, LangError::BadDelegate(_)), "{owner_kind}");
        }
        let e = parse_delegations("/a\n", "default").unwrap_err();
        assert_eq!((e.line, e.error), (1, LangError::MissingDelegate));
        let e = parse_delegations("/a x\n/b location:default/y", "default").unwrap_err();
        assert_eq!((e.line, e.column), (2, 4));
        assert!(matches!(e.error, LangError::BadDelegate(_)));
        assert!(parse_delegations("/a/* x", "default").is_err());
        assert!(parse_delegations("a x", "default").is_err());
        assert!(parse_delegations("# only a comment", "default").is_err());
    }

    #[test]
    fn under() {
        assert!(is_under("/a/b", "/a"));
        assert!(is_under("/a", "/a"));
        assert!(is_under("/a", "/"));
        assert!(!is_under("/ab", "/a"));
        assert!(!is_under("/a", "/a/b"));
    }

    #[test]
    fn entity_refs() {
        assert_eq!(
            entity_ref("Payments", "group", "default").as_deref(),
            Some("group:default/payments")
        );
        assert_eq!(
            entity_ref("group:ops/x", "group", "default").as_deref(),
            Some("group:ops/x")
        );
        assert_eq!(entity_ref("group:", "group", "default"), None);
        assert_eq!(principal_ref("component:x", "default"), None);
    }
}
