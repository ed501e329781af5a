//! Scalars, inside the nesting pre-scan: tags and the three kinds of scalar text
//! (quoted, plain, block), skipped as libyaml's scanner reads them, so that brackets,
//! quotes and `#` inside text never count as nesting, and text never hides what
//! follows it.

use super::{Scanner, break_len, is_alpha};

impl Scanner<'_> {
    /// A tag: `!<verbatim>`, or `!handle!suffix` of URI characters (never `,[]{}`).
    pub(super) fn tag(&mut self) {
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
    pub(super) fn quoted(&mut self, quote: u8) {
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
    pub(super) fn plain(&mut self) {
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
    pub(super) fn block_scalar(&mut self) {
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
