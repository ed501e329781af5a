//! The file source's pre-scan: how deeply a YAML text nests, found in one linear pass
//! before the YAML parser sees it. [`crate::catalog::file`] refuses a file that nests
//! deeper than [`MAX_NESTING`] without parsing it.
//!
//! Why: libyaml (under serde_norway) re-examines every open flow level on every
//! token, so a document nested N flow levels deep (`[[[[…` or `{a: {a: …`) costs
//! O(N²) before any recursion limit applies: 32k levels take seconds, 200k levels
//! minutes. serde_norway's own limit (128) is checked only after the whole document
//! has been scanned. Block nesting (indentation) is linear, but is capped here too so
//! that one limit, with a line number, explains every refusal.
//!
//! Decisions:
//! - The scan is a tokenizer that follows libyaml's scanner (unsafe-libyaml-norway
//!   0.2.15, `scanner.rs`) wherever the answer changes what counts as a bracket: token
//!   starts, comments (`#` at a token start or after a blank), document markers, flow
//!   indicators, quoted scalars (with `''` and `\` escapes, across lines), block
//!   scalars (header, indentation, content), plain scalars (which end at `,[]{}` in
//!   flow context, at `: ` and ` #`, and continue on more-indented lines in block
//!   context), tags, anchors and aliases, and all five YAML line breaks (`\n`, `\r`,
//!   U+0085, U+2028, U+2029). Flow depth is therefore libyaml's flow level.
//! - Block depth is libyaml's indentation stack (one level per column increase);
//!   a sequence at its key's column (`key:\n- a`) adds no column, so block depth may
//!   read up to half the true depth. That is enough for a cap meant for files no
//!   real catalog comes near.
//! - Where libyaml would stop with a syntax error, the scan goes on: the YAML parser
//!   reports the error (and stops there); the scan can only over-count after it.
//! - The scan is a guard, not a parser. Should a crafted file still get past it, the
//!   runner's load deadline (`catalog::source`) abandons the parse, and the byte cap
//!   ([`crate::catalog::file::MAX_FILE_BYTES`]) bounds what a parse at the allowed
//!   depth can cost.

/// Deepest nesting (flow levels plus block levels) a catalog file may reach. Real
/// entities nest a handful of levels; serde_norway refuses 128 anyway.
pub const MAX_NESTING: usize = 64;

/// Where a text first nests deeper than allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooDeep {
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub depth: usize,
}

impl std::fmt::Display for TooDeep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "nested {} levels deep at line {}, column {} (flow collections [ {{ and \
             indentation together; at most {MAX_NESTING} are read)",
            self.depth, self.line, self.column
        )
    }
}

/// `Err` at the first point where `text` nests deeper than `max`.
pub fn check(text: &str, max: usize) -> Result<(), TooDeep> {
    let mut scanner = Scanner::new(text.as_bytes(), max);
    scanner.run()
}

/// The deepest nesting in `text` (flow and block levels), as [`check`] counts it.
pub fn max_depth(text: &str) -> usize {
    let mut scanner = Scanner::new(text.as_bytes(), usize::MAX);
    let _ = scanner.run();
    scanner.deepest
}

struct Scanner<'a> {
    b: &'a [u8],
    pos: usize,
    line: usize,
    /// 0-based, in characters.
    col: usize,
    max: usize,
    deepest: usize,
    flow: usize,
    /// libyaml's `parser->indent`: the column of the innermost block collection.
    indent: isize,
    indents: Vec<isize>,
    /// libyaml's `simple_key_allowed`.
    allowed: bool,
    /// Column of the possible simple key of the block context on this line.
    key_col: Option<usize>,
}

impl<'a> Scanner<'a> {
    fn new(b: &'a [u8], max: usize) -> Self {
        Scanner {
            b,
            pos: 0,
            line: 1,
            col: 0,
            max,
            deepest: 0,
            flow: 0,
            indent: -1,
            indents: Vec::new(),
            allowed: true,
            key_col: None,
        }
    }

    fn at(&self, offset: usize) -> Option<u8> {
        self.b.get(self.pos + offset).copied()
    }

    /// Length of the line break at `pos + offset`, if there is one.
    fn break_at(&self, offset: usize) -> Option<usize> {
        break_len(self.b.get(self.pos + offset..)?)
    }

    fn is_blank_at(&self, offset: usize) -> bool {
        matches!(self.at(offset), Some(b' ' | b'\t'))
    }

    /// Blank, line break or end of text.
    fn is_blankz_at(&self, offset: usize) -> bool {
        self.pos + offset >= self.b.len()
            || self.is_blank_at(offset)
            || self.break_at(offset).is_some()
    }

    fn eof(&self) -> bool {
        self.pos >= self.b.len()
    }

    /// Advances over one character that is not a line break.
    fn skip(&mut self) {
        let first = self.b[self.pos];
        let len = match first {
            0x00..=0x7F => 1,
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            _ => 4,
        };
        self.pos = (self.pos + len).min(self.b.len());
        self.col += 1;
    }

    /// Advances over the line break at `pos`.
    fn skip_break(&mut self) {
        let len = self.break_at(0).unwrap_or(1);
        self.pos += len;
        self.line += 1;
        self.col = 0;
    }

    fn depth(&self) -> usize {
        self.indents.len() + self.flow
    }

    fn note_depth(&mut self) -> Result<(), TooDeep> {
        let depth = self.depth();
        self.deepest = self.deepest.max(depth);
        if depth > self.max {
            return Err(TooDeep {
                line: self.line,
                column: self.col + 1,
                depth,
            });
        }
        Ok(())
    }

    fn roll_indent(&mut self, column: usize) -> Result<(), TooDeep> {
        if self.flow > 0 {
            return Ok(());
        }
        let column = column as isize;
        if self.indent < column {
            self.indents.push(self.indent);
            self.indent = column;
            self.note_depth()?;
        }
        Ok(())
    }

    fn unroll_indent(&mut self, column: isize) {
        if self.flow > 0 {
            return;
        }
        while self.indent > column {
            self.indent = self.indents.pop().unwrap_or(-1);
        }
    }

    /// A token that may start a simple key (scalar, flow collection, anchor, tag).
    fn save_simple_key(&mut self) {
        if self.allowed && self.flow == 0 {
            self.key_col = Some(self.col);
        }
    }

    fn run(&mut self) -> Result<(), TooDeep> {
        loop {
            self.skip_to_next_token();
            if self.eof() {
                return Ok(());
            }
            self.unroll_indent(self.col as isize);
            let c = self.b[self.pos];
            if self.col == 0 && c == b'%' {
                // A directive: nothing on its line nests.
                while !self.eof() && self.break_at(0).is_none() {
                    self.skip();
                }
                continue;
            }
            if self.col == 0
                && (self.b[self.pos..].starts_with(b"---")
                    || self.b[self.pos..].starts_with(b"..."))
                && self.is_blankz_at(3)
            {
                self.unroll_indent(-1);
                self.allowed = false;
                self.key_col = None;
                for _ in 0..3 {
                    self.skip();
                }
                continue;
            }
            match c {
                b'[' | b'{' => {
                    self.save_simple_key();
                    self.flow += 1;
                    self.note_depth()?;
                    self.allowed = true;
                    self.skip();
                }
                b']' | b'}' => {
                    self.flow = self.flow.saturating_sub(1);
                    self.allowed = false;
                    self.skip();
                }
                b',' => {
                    self.allowed = true;
                    self.skip();
                }
                b'-' if self.is_blankz_at(1) => {
                    self.roll_indent(self.col)?;
                    self.allowed = true;
                    self.key_col = None;
                    self.skip();
                }
                b'?' if self.flow > 0 || self.is_blankz_at(1) => {
                    self.roll_indent(self.col)?;
                    self.allowed = self.flow == 0;
                    self.key_col = None;
                    self.skip();
                }
                b':' if self.flow > 0 || self.is_blankz_at(1) => {
                    if self.flow == 0 {
                        let column = self.key_col.unwrap_or(self.col);
                        self.roll_indent(column)?;
                        self.allowed = true;
                    } else {
                        self.allowed = false;
                    }
                    self.key_col = None;
                    self.skip();
                }
                b'*' | b'&' => {
                    self.save_simple_key();
                    self.allowed = false;
                    self.skip();
                    while matches!(self.at(0), Some(b) if is_alpha(b)) {
                        self.skip();
                    }
                }
                b'!' => {
                    self.save_simple_key();
                    self.allowed = false;
                    self.tag();
                }
                b'|' | b'>' if self.flow == 0 => {
                    self.allowed = true;
                    self.key_col = None;
                    self.block_scalar();
                }
                b'\'' | b'"' => {
                    self.save_simple_key();
                    self.allowed = false;
                    self.quoted(c);
                }
                _ if self.starts_plain(c) => {
                    self.save_simple_key();
                    self.allowed = false;
                    self.plain();
                }
                // A character libyaml refuses here: the parse stops at it.
                _ => self.skip(),
            }
        }
    }

    /// libyaml's `scan_skip_to_next_token`: blanks, a comment, line breaks.
    fn skip_to_next_token(&mut self) {
        loop {
            if self.col == 0 && self.b[self.pos..].starts_with(b"\xEF\xBB\xBF") {
                self.pos += 3;
            }
            while self.is_blank_at(0) {
                self.skip();
            }
            if self.at(0) == Some(b'#') {
                while !self.eof() && self.break_at(0).is_none() {
                    self.skip();
                }
            }
            if self.break_at(0).is_none() {
                return;
            }
            self.skip_break();
            if self.flow == 0 {
                self.allowed = true;
                self.key_col = None;
            }
        }
    }

    fn starts_plain(&self, c: u8) -> bool {
        let indicator = matches!(
            c,
            b'-' | b'?'
                | b':'
                | b','
                | b'['
                | b']'
                | b'{'
                | b'}'
                | b'#'
                | b'&'
                | b'*'
                | b'!'
                | b'|'
                | b'>'
                | b'\''
                | b'"'
                | b'%'
                | b'@'
                | b'`'
        );
        !(self.is_blankz_at(0) || indicator)
            || (c == b'-' && !self.is_blank_at(1))
            || (self.flow == 0 && matches!(c, b'?' | b':') && !self.is_blankz_at(1))
    }

    /// A tag: `!<verbatim>`, or `!handle!suffix` of URI characters (never `,[]{}`).
    fn tag(&mut self) {
        self.skip();
        if self.at(0) == Some(b'<') {
            while let Some(b) = self.at(0) {
                if self.break_at(0).is_some() {
                    return;
                }
                self.skip();
                if b == b'>' {
                    return;
                }
            }
            return;
        }
        while matches!(self.at(0), Some(b) if is_alpha(b) || b";/?:@&=+$.%!~*'()".contains(&b)) {
            self.skip();
        }
    }

    /// A single- or double-quoted scalar, possibly over several lines.
    fn quoted(&mut self, quote: u8) {
        self.skip();
        while !self.eof() {
            if self.break_at(0).is_some() {
                self.skip_break();
                continue;
            }
            let b = self.b[self.pos];
            if quote == b'\'' && b == b'\'' {
                if self.at(1) == Some(b'\'') {
                    self.skip();
                    self.skip();
                    continue;
                }
                self.skip();
                return;
            }
            if quote == b'"' && b == b'\\' {
                self.skip();
                if self.break_at(0).is_some() {
                    self.skip_break();
                } else if !self.eof() {
                    self.skip();
                }
                continue;
            }
            if quote == b'"' && b == b'"' {
                self.skip();
                return;
            }
            self.skip();
        }
    }

    /// libyaml's `scan_plain_scalar`.
    fn plain(&mut self) {
        let min_col = self.indent + 1;
        loop {
            if self.col == 0
                && (self.b[self.pos..].starts_with(b"---")
                    || self.b[self.pos..].starts_with(b"..."))
                && self.is_blankz_at(3)
            {
                return;
            }
            if self.at(0) == Some(b'#') {
                return;
            }
            while !self.is_blankz_at(0) {
                let b = self.b[self.pos];
                if b == b':' && self.is_blankz_at(1) {
                    return;
                }
                if self.flow > 0 && matches!(b, b',' | b'[' | b']' | b'{' | b'}') {
                    return;
                }
                if self.flow > 0
                    && b == b':'
                    && matches!(self.at(1), Some(b',' | b'?' | b'[' | b']' | b'{' | b'}'))
                {
                    // libyaml: "found unexpected ':'"; the parse stops here.
                    return;
                }
                self.skip();
            }
            if !(self.is_blank_at(0) || self.break_at(0).is_some()) {
                return;
            }
            let mut crossed_line = false;
            while self.is_blank_at(0) || self.break_at(0).is_some() {
                if self.break_at(0).is_some() {
                    self.skip_break();
                    crossed_line = true;
                } else {
                    self.skip();
                }
            }
            if crossed_line {
                // A scalar over several lines may be followed by a simple key.
                self.allowed = true;
                if self.flow == 0 {
                    self.key_col = None;
                }
            }
            if self.flow == 0 && (self.col as isize) < min_col {
                return;
            }
        }
    }

    /// A literal or folded block scalar: header, then every line indented at least as
    /// far as its content (explicit, or the first non-empty line's), and empty lines.
    fn block_scalar(&mut self) {
        self.skip();
        let mut increment = 0usize;
        for _ in 0..2 {
            match self.at(0) {
                Some(b'+' | b'-') => self.skip(),
                Some(d @ b'1'..=b'9') => {
                    increment = usize::from(d - b'0');
                    self.skip();
                }
                _ => break,
            }
        }
        // The rest of the header line: blanks and a comment (else libyaml stops).
        while !self.eof() && self.break_at(0).is_none() {
            self.skip();
        }
        if self.eof() {
            return;
        }
        self.skip_break();
        let parent = self.indent;
        let mut indent = if increment > 0 {
            parent.max(0) as usize + increment
        } else {
            0
        };
        if indent == 0 {
            // Auto-detect: the deepest leading empty line or the first content line.
            let mut max_indent = 0usize;
            let mut probe = self.pos;
            loop {
                let mut spaces = 0;
                while self.b.get(probe + spaces) == Some(&b' ') {
                    spaces += 1;
                }
                max_indent = max_indent.max(spaces);
                match break_len(&self.b[(probe + spaces).min(self.b.len())..]) {
                    Some(len) => probe += spaces + len,
                    None => break,
                }
            }
            indent = max_indent.max((parent + 1).max(1) as usize);
        }
        // Content: lines with at least `indent` spaces, and empty lines.
        loop {
            let mut spaces = 0;
            while spaces < indent && self.at(0) == Some(b' ') {
                self.skip();
                spaces += 1;
            }
            if self.eof() {
                return;
            }
            if self.break_at(0).is_some() {
                self.skip_break();
                continue;
            }
            if spaces < indent {
                // The scalar ended; this line is read as tokens.
                return;
            }
            while !self.eof() && self.break_at(0).is_none() {
                self.skip();
            }
            if self.eof() {
                return;
            }
            self.skip_break();
        }
    }
}

/// Length of the YAML line break `rest` starts with, if any.
fn break_len(rest: &[u8]) -> Option<usize> {
    match rest {
        [b'\r', b'\n', ..] => Some(2),
        [b'\r' | b'\n', ..] => Some(1),
        [0xC2, 0x85, ..] => Some(2),
        [0xE2, 0x80, 0xA8 | 0xA9, ..] => Some(3),
        _ => None,
    }
}

/// libyaml's `IS_ALPHA`: anchor and tag-handle characters.
fn is_alpha(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(text: &str) -> usize {
        max_depth(text)
    }

    #[test]
    fn flow_and_block_levels_are_counted() {
        assert_eq!(depth(""), 0);
        assert_eq!(depth("a: 1\n"), 1);
        assert_eq!(depth("a: [1, [2, {b: 3}]]\n"), 4);
        assert_eq!(depth("a:\n  b:\n    c: 1\n"), 3);
        assert_eq!(depth("- - - x\n"), 3);
        assert_eq!(
            depth("a:\n- b\n"),
            1,
            "a sequence at its key's column adds no column"
        );
        assert_eq!(
            depth(&format!("a: {}{}\n", "[".repeat(500), "]".repeat(500))),
            501
        );
        assert_eq!(depth(&format!("{}x\n", "- ".repeat(300))), 300);
        // Documents start over.
        assert_eq!(depth("a:\n  b:\n    c: 1\n---\nd: 1\n"), 3);
        let err = check("a:\n  b: [[[1]]]\n", 4).unwrap_err();
        assert_eq!((err.line, err.column, err.depth), (2, 8, 5));
    }

    #[test]
    fn brackets_in_text_are_not_nesting() {
        for text in [
            "a: '[[[[[['\n",
            "a: \"[[[[[[\\\"[[[\"\n",
            "a: it's [[[[[[\n",
            "a: x[[[[[[\n",
            "a: [b, 'it''s [[[[[[ ok']\n",
            "# [[[[[[\n",
            "a: 1 # [[[[[[\n",
            "a: |\n  [[[[[[\n  {{{{\nb: 1\n",
            "a: >-\n    [[[[[[\n\n    [[[\nb: 1\n",
            "- |2\n   [[[[[[\n",
            "a: plain\n  continued [[[[[[\nb: 1\n",
        ] {
            assert!(depth(text) <= 3, "{text:?}: {}", depth(text));
        }
    }

    #[test]
    fn text_that_ends_does_not_hide_what_follows() {
        // A comment ends at any YAML line break, U+2028 included.
        assert_eq!(depth("a: 1 # c\u{2028}b: [[[[[[1]]]]]]\n"), 7);
        // A block scalar ends at the first line indented less than its content.
        assert_eq!(depth("a: |\n  text\nb: [[[[[[1]]]]]]\n"), 7);
        // A plain scalar with a quote inside is not a quoted scalar.
        assert_eq!(depth("a: it's\nb: [[[[[[1]]]]]]\n"), 7);
        assert_eq!(depth("a: [x'y, [[[[[1]]]]]]\n"), 7);
        // `#` inside a plain scalar is text, after a blank it is a comment.
        assert_eq!(depth("a: [x#y, [[[[[1]]]]]]\n"), 7);
        assert_eq!(depth("a: [x #y\n, [[[[[1]]]]]]\n"), 7);
        // Escaped quotes do not end a quoted scalar, the next quote does.
        assert_eq!(depth("a: \"\\\"\" \nb: [[[[[[1]]]]]]\n"), 7);
        assert_eq!(depth("a: 'x'''\nb: [[[[[[1]]]]]]\n"), 7);
        // Tags and anchors do not swallow brackets.
        assert_eq!(depth("a: !t [[[[[[1]]]]]]\n"), 7);
        assert_eq!(depth("a: &x [[[[[[1]]]]]]\n"), 7);
    }

    #[test]
    fn the_fixture_catalogs_are_shallow() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/catalog");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                max_depth(&text) <= 8,
                "{}: {}",
                path.display(),
                max_depth(&text)
            );
        }
    }

    #[test]
    fn a_deep_file_is_refused_in_linear_time() {
        let deep = format!("a: {}\n", "[".repeat(200_000));
        let started = std::time::Instant::now();
        let err = check(&deep, MAX_NESTING).unwrap_err();
        assert_eq!((err.line, err.depth), (1, MAX_NESTING + 1));
        assert!(max_depth(&deep) == 200_001);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;
        use serde::Deserialize;

        fn yaml_depth_error(text: &str) -> bool {
            for document in serde_norway::Deserializer::from_str(text) {
                match serde_norway::Value::deserialize(document) {
                    Ok(_) => {}
                    Err(e) => return e.to_string().contains("recursion limit"),
                }
            }
            false
        }

        fn piece() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec![
                "[",
                "]",
                "{",
                "}",
                ",",
                " ",
                "  ",
                "\n",
                "\r\n",
                "\u{2028}",
                "\u{85}",
                "#",
                "'",
                "''",
                "\"",
                "\\",
                "\\\"",
                "|",
                ">",
                "|-",
                ">2",
                "- ",
                "? ",
                ": ",
                ":",
                "a",
                "x y",
                "!",
                "!t ",
                "!<a]>",
                "&a ",
                "*a",
                "---\n",
                "...\n",
                "%YAML 1.1\n",
                "\t",
                "@",
                "`",
            ])
        }

        /// Lines that are valid YAML on their own and hold brackets, quotes and `#` as
        /// text; `{t}` is replaced by tricky text.
        fn line() -> impl Strategy<Value = String> {
            let template = prop::sample::select(vec![
                "k: '{t}'\n",
                "k: \"{t}\"\n",
                "k: plain {t}\n",
                "k: |\n  {t}\n  {t}\n",
                "k: >-\n    {t}\n\n    x\n",
                "- |2\n   {t}\n",
                "k: [a, '{t}', \"{t}\"]\n",
                "k: {a: '{t}'}\n",
                "# {t}\n",
                "k: x # {t}\n",
                "k: !t '{t}'\n",
                "k: &a '{t}'\n",
                "k:\n  - '{t}'\n  - n: '{t}'\n",
                "k: plain\n  {t}\n",
                "? '{t}'\n: v\n",
                "---\n",
            ]);
            let tricky = prop::sample::select(vec![
                "[", "]]", "}", "{[", "#", " #", "''", "\\\\", "|", ">", "- ", ": ", ",", "!", "&",
                "*", "\u{2028}", "\u{85}", "x",
            ]);
            (template, prop::collection::vec(tricky, 0..4)).prop_map(|(t, parts)| {
                let text = parts.concat();
                let text = if t.contains('\'') {
                    text.replace('\'', "''")
                } else if t.contains('"') {
                    text.replace('\\', "\\\\").replace('"', "\\\"")
                } else {
                    text
                };
                t.replace("{t}", &text)
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]

            /// Valid YAML full of brackets, quotes and comments as text, then a deep run.
            #[test]
            fn no_valid_text_hides_a_deep_run(lines in prop::collection::vec(line(), 0..12)) {
                // Keys numbered: a duplicate key would stop serde_norway first.
                let lines: String = lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| l.replace("k:", &format!("k{i}:")))
                    .collect();
                let text = format!("{lines}deep: {}1{}\n", "[".repeat(140), "]".repeat(140));
                // Only a depth error the deep run causes counts (a recursive alias
                // such as `&a` over `*a` fails serde_norway's recursion limit anyway).
                if yaml_depth_error(&text) && !yaml_depth_error(&format!("{lines}deep: 1\n")) {
                    prop_assert!(
                        max_depth(&text) > MAX_NESTING,
                        "hidden: {:?} (scan says {})",
                        text,
                        max_depth(&text)
                    );
                }
            }

            /// Whatever comes before, a run of flow levels that serde_norway finds
            /// too deep is found too deep by the scan: no prefix hides it.
            #[test]
            fn no_prefix_hides_a_deep_run(
                prefix in prop::collection::vec(piece(), 0..40),
                separator in prop::sample::select(vec!["\n", " ", "\nk: ", "\n- ", ", "]),
            ) {
                let text = format!(
                    "{}{separator}{}1{}\n",
                    prefix.concat(),
                    "[".repeat(140),
                    "]".repeat(140)
                );
                // Only a depth error the deep run causes counts (a recursive alias
                // such as `&a` over `*a` fails serde_norway's recursion limit anyway;
                // found by CI: the run itself sat in a comment).
                let without = format!("{}{separator}1\n", prefix.concat());
                if yaml_depth_error(&text) && !yaml_depth_error(&without) {
                    prop_assert!(
                        max_depth(&text) > MAX_NESTING,
                        "hidden: {:?} (scan says {})",
                        text,
                        max_depth(&text)
                    );
                }
            }
        }
    }
}
