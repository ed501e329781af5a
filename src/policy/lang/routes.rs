//! `stagedoor.io/routes`, inside the annotation language: one route per line,
//! `METHODS PATH REQUIREMENT...`, read into [`RouteSpec`]s; and [`claimed_paths`], the
//! lenient reading that holds the paths of a broken entity closed.
//!
//! A line is read left to right: blanks, then a `#` comment or the methods (`*`, or
//! method tokens joined by commas with optional blanks around them), at least one
//! blank, the path word, then blank-separated requirement words up to the end or a
//! `#` word. Each step that fails names its own error at the column where it failed.

use super::lists::principal_ref;
use super::{LangError, Located, MAX_WORDS, at, check_len, lines, offset, skip_blanks, split_word};

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
                let start = offset(line, skip_blanks(line));
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

/// One line of a routes value, `None` when it is blank or a comment.
fn parse_route_line(line: &str, n: u32, ns: &str) -> Result<Option<RouteSpec>, Located> {
    let err = |rest: &str, e: LangError| at(line, n, offset(line, rest), e);
    let rest = skip_blanks(line);
    if rest.is_empty() || rest.starts_with('#') {
        return Ok(None);
    }
    let (methods, after_methods) = route_methods(rest).map_err(|(at, e)| err(at, e))?;
    let rest = skip_blanks(after_methods);
    if rest.len() == after_methods.len() {
        // No blank after the methods: say what stands there instead.
        let e = if after_methods.starts_with(',') || after_methods.starts_with('*') {
            LangError::StarWithMethods
        } else if after_methods.is_empty() {
            LangError::ExpectedPath
        } else {
            LangError::ExpectedMethods
        };
        return Err(err(after_methods, e));
    }
    let (raw_path, rest) = split_word(rest);
    if raw_path.is_empty() {
        return Err(err(rest, LangError::ExpectedPath));
    }
    let path = route_path(raw_path).map_err(|e| err(raw_path, e))?;
    let (words, end) = requirement_words(rest).map_err(|(at, e)| err(at, e))?;
    let Some(&first) = words.first() else {
        return Err(err(end, LangError::MissingRequirement));
    };
    let (requirement, principals) =
        requirement(&words, ns).map_err(|(at, e)| err(at.unwrap_or(first), e))?;
    let methods_text = methods.as_ref().map_or_else(
        || "*".to_owned(),
        |l| l.iter().map(|m| &**m).collect::<Vec<_>>().join(","),
    );
    let display = format!("{methods_text} {path} {}", words.join(" "));
    Ok(Some(RouteSpec {
        line: n,
        methods,
        path,
        requirement,
        principals,
        display,
    }))
}

/// A failure inside a line: where (a subslice of the line) and what.
type Fault<'a> = (&'a str, LangError);

/// A line's methods: `None` for `*`.
type Methods = Option<Vec<Box<str>>>;

/// A failure of the requirement words: the word at fault, `None` for the whole line.
type WordFault<'a> = (Option<&'a str>, LangError);

/// The methods a line starts with (`None` for `*`; upper case, deduplicated) and the
/// rest of the line. Methods are RFC 9110 tokens written in upper case: `get` is an
/// error, not folded, since methods are case-sensitive.
fn route_methods(line: &str) -> Result<(Methods, &str), Fault<'_>> {
    if let Some(rest) = line.strip_prefix('*') {
        return Ok((None, rest));
    }
    let token = |s: &str| -> Option<usize> {
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(s.len());
        (end > 0).then_some(end)
    };
    let Some(end) = token(line) else {
        return Err((line, LangError::ExpectedMethods));
    };
    let (first, mut rest) = line.split_at(end);
    let mut written = vec![first];
    // `, TOKEN` repeats; a comma not followed by a token is left to the caller.
    while let Some(after) = skip_blanks(rest).strip_prefix(',') {
        let after = skip_blanks(after);
        let Some(end) = token(after) else { break };
        let (m, r) = after.split_at(end);
        written.push(m);
        rest = r;
    }
    let mut list: Vec<Box<str>> = Vec::with_capacity(written.len());
    for m in written {
        if !m.bytes().next().is_some_and(|b| b.is_ascii_uppercase())
            || m.bytes().any(|b| b.is_ascii_lowercase())
        {
            return Err((m, LangError::BadMethod(m.to_owned())));
        }
        if !list.iter().any(|x| &**x == m) {
            list.push(m.into());
        }
    }
    Ok((Some(list), rest))
}

/// The requirement words after the path, up to the end of the line or a `#` word,
/// and where they end.
fn requirement_words(mut rest: &str) -> Result<(Vec<&str>, &str), Fault<'_>> {
    let mut words: Vec<&str> = Vec::new();
    loop {
        let r = skip_blanks(rest);
        if r.is_empty() || r.starts_with('#') {
            return Ok((words, rest));
        }
        let (w, r2) = split_word(r);
        if words.len() == MAX_WORDS {
            return Err((w, LangError::TooManyWords));
        }
        words.push(w);
        rest = r2;
    }
}

/// What the words require, and the principals of their `@` words. An error names the
/// word at fault, or `None` for the line's first word (a rule about the whole line).
fn requirement<'w>(
    words: &[&'w str],
    ns: &str,
) -> Result<(Requirement, Vec<String>), WordFault<'w>> {
    let mut public = false;
    let mut authenticated = false;
    let mut scopes: Vec<Vec<Box<str>>> = Vec::new();
    let mut principals: Vec<String> = Vec::new();
    for (k, &w) in words.iter().enumerate() {
        if words[..k].contains(&w) {
            return Err((Some(w), LangError::RepeatedWord(w.to_owned())));
        }
        match w {
            "public" => public = true,
            "authenticated" => authenticated = true,
            _ if w.starts_with('@') => {
                let r = principal_ref(&w[1..], ns)
                    .ok_or_else(|| (Some(w), LangError::BadPrincipal(w.to_owned())))?;
                principals.push(r);
            }
            _ => scopes.push(scope_alternatives(w).map_err(|e| (Some(w), e))?),
        }
    }
    let requirement = if public {
        if words.len() > 1 {
            return Err((None, LangError::PublicNotAlone));
        }
        Requirement::Public
    } else if authenticated {
        if !scopes.is_empty() {
            return Err((None, LangError::AuthenticatedWithScopes));
        }
        Requirement::Authenticated
    } else if scopes.is_empty() {
        return Err((None, LangError::MissingRequirement));
    } else {
        Requirement::Scopes(scopes)
    };
    Ok((requirement, principals))
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
pub(super) fn route_path(raw: &str) -> Result<String, LangError> {
    if !raw.starts_with('/') {
        return Err(LangError::ExpectedPath);
    }
    if raw.contains('*') {
        return Err(LangError::WildcardInPath(raw.to_owned()));
    }
    if raw.contains('?') {
        return Err(LangError::QueryInPath(raw.to_owned()));
    }
    let norm = crate::policy::path::normalize(raw).map_err(|why| LangError::BadPath {
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

/// One scope word: `a|b|c`, any one of which meets it.
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
    fn method_lists() {
        let ok = |s| route_methods(s).map(|(m, rest)| (m, rest.len())).unwrap();
        assert_eq!(ok("* /a"), (None, 3));
        assert_eq!(
            ok("GET , HEAD,GET /a"),
            (Some(vec!["GET".into(), "HEAD".into()]), 3)
        );
        // A comma with no token after it is left for the caller to name.
        assert_eq!(ok("GET, /a"), (Some(vec!["GET".into()]), 4));
        assert!(matches!(
            route_methods("/a"),
            Err((_, LangError::ExpectedMethods))
        ));
        assert!(matches!(
            route_methods("Get /a"),
            Err((_, LangError::BadMethod(_)))
        ));
        assert!(matches!(
            route_methods("9X /a"),
            Err((_, LangError::BadMethod(_)))
        ));
    }
}
