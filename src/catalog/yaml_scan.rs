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
//!
//! The token loop is here; the scalar readers (quoted, plain, block, tags) are in
//! `yaml_scan/scalars.rs`.

mod scalars;

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
            self.token(c)?;
        }
    }

    /// One token starting with `c` (not a directive or document marker), as libyaml's
    /// `fetch_next_token` dispatches it: flow and block indicators, then scalars.
    fn token(&mut self, c: u8) -> Result<(), TooDeep> {
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
        Ok(())
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
mod tests;
