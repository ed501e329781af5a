//! The by-refs envelope split into its items without parsing them (Backstage client,
//! beside the request flow): one iterative scan, so one entity nested past a parser's
//! recursion limit fails alone and the others still apply.

/// The raw text of each element of the envelope's `items` array, without parsing
/// the elements: one iterative scan, so an element nested deeper than any parser's
/// recursion limit fails its own parse and no other. The elements are checked only
/// for balanced brackets and closed strings; each is parsed (and fully validated)
/// on its own afterwards.
pub(super) fn split_items(body: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut scan = Scan { body, pos: 0 };
    scan.ws();
    scan.expect(b'{')?;
    let mut items = None;
    scan.ws();
    if scan.peek() == Some(b'}') {
        scan.pos += 1;
    } else {
        loop {
            scan.ws();
            let key = scan.string()?;
            scan.ws();
            scan.expect(b':')?;
            scan.ws();
            if key_is(key, "items") {
                if items.is_some() {
                    return Err("\"items\" appears twice".to_owned());
                }
                items = Some(scan.array_elements()?);
            } else {
                scan.value()?;
            }
            scan.ws();
            match scan.next() {
                Some(b',') => continue,
                Some(b'}') => break,
                _ => return Err(scan.unexpected("',' or '}'")),
            }
        }
    }
    scan.ws();
    if scan.pos != body.len() {
        return Err(scan.unexpected("the end of the body"));
    }
    items.ok_or_else(|| "no \"items\" array".to_owned())
}

/// Whether a raw JSON string (with its quotes) is `want`.
fn key_is(raw: &[u8], want: &str) -> bool {
    let inner = &raw[1..raw.len() - 1];
    if !inner.contains(&b'\\') {
        return inner == want.as_bytes();
    }
    serde_json::from_slice::<String>(raw).is_ok_and(|k| k == want)
}

/// A cursor over a JSON text for [`split_items`].
struct Scan<'a> {
    body: &'a [u8],
    pos: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.body.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn unexpected(&self, want: &str) -> String {
        match self.peek() {
            Some(b) => format!(
                "expected {want} at byte {}, found {:?}",
                self.pos, b as char
            ),
            None => format!("expected {want}, found the end of the body"),
        }
    }

    fn expect(&mut self, want: u8) -> Result<(), String> {
        if self.peek() == Some(want) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected(&format!("{:?}", want as char)))
        }
    }

    /// A string, quotes included.
    fn string(&mut self) -> Result<&'a [u8], String> {
        let start = self.pos;
        self.expect(b'"')?;
        loop {
            match self.next() {
                Some(b'"') => return Ok(&self.body[start..self.pos]),
                Some(b'\\') => {
                    self.next();
                }
                Some(_) => {}
                None => return Err("a string is not closed".to_owned()),
            }
        }
    }

    /// Any value: a string, a bracketed value (by counting), or a scalar.
    fn value(&mut self) -> Result<&'a [u8], String> {
        let start = self.pos;
        match self.peek() {
            Some(b'"') => {
                self.string()?;
            }
            Some(b'[' | b'{') => {
                let mut depth = 0usize;
                loop {
                    match self.peek() {
                        Some(b'"') => {
                            self.string()?;
                            continue;
                        }
                        Some(b'[' | b'{') => depth += 1,
                        Some(b']' | b'}') => {
                            depth -= 1;
                            if depth == 0 {
                                self.pos += 1;
                                break;
                            }
                        }
                        Some(_) => {}
                        None => return Err("an array or object is not closed".to_owned()),
                    }
                    self.pos += 1;
                }
            }
            Some(_) => {
                while let Some(b) = self.peek() {
                    if matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.pos += 1;
                }
                if self.pos == start {
                    return Err(self.unexpected("a value"));
                }
            }
            None => return Err(self.unexpected("a value")),
        }
        Ok(&self.body[start..self.pos])
    }

    /// The elements of an array, as raw text.
    fn array_elements(&mut self) -> Result<Vec<&'a [u8]>, String> {
        self.expect(b'[')?;
        let mut out = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(out);
        }
        loop {
            self.ws();
            out.push(self.value()?);
            self.ws();
            match self.next() {
                Some(b',') => continue,
                Some(b']') => return Ok(out),
                _ => return Err(self.unexpected("',' or ']'")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::entity::Entity;
    #[test]
    fn a_deep_item_fails_alone_and_a_deep_unread_field_is_skipped() {
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        // A field the model does not hold is skipped over, at any depth, without
        // recursion (a million levels would otherwise overflow the stack).
        let unread = format!(
            r#"{{"kind":"Component","metadata":{{"name":"a","deep":{}}}}}"#,
            deep(1_000_000)
        );
        let parsed: Option<Entity> = serde_json::from_str(&unread).unwrap();
        assert_eq!(parsed.unwrap().metadata.name, "a");
        // A field it holds (spec) hits serde_json's recursion limit: an error, no crash.
        let held = format!(
            r#"{{"kind":"Component","metadata":{{"name":"a"}},"spec":{}}}"#,
            deep(1_000_000)
        );
        let err = serde_json::from_str::<Option<Entity>>(&held).unwrap_err();
        assert!(err.to_string().contains("recursion limit"), "{err}");
        let body = format!(r#"{{"items":[{held},null,{unread}]}}"#);
        assert_eq!(split_items(body.as_bytes()).unwrap().len(), 3);
    }

    #[test]
    fn items_are_split_without_a_depth_limit() {
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        let body = format!(
            r#" {{"meta": {{"x": [1, "]"]}}, "items" : [ {{"a":"}}\"[" }} , null,{deep},
               "s", 12.5e3 ], "z": true }} "#
        );
        let items = split_items(body.as_bytes()).unwrap();
        let items: Vec<&str> = items
            .iter()
            .map(|i| std::str::from_utf8(i).unwrap())
            .collect();
        assert_eq!(
            items,
            [r#"{"a":"}\"[" }"#, "null", &deep, "\"s\"", "12.5e3"]
        );
        assert!(serde_json::from_str::<serde_json::Value>(items[2]).is_err());
        assert_eq!(split_items(br#"{"items":[]}"#).unwrap().len(), 0);
        assert_eq!(split_items(br#"{"\u0069tems":[1]}"#).unwrap().len(), 1);
        for bad in [
            &b""[..],
            b"[]",
            b"{}",
            b"{\"items\":[1,]}",
            b"{\"items\":[{]}",
            b"{\"items\":[\"x]}",
            b"{\"items\":[1],\"items\":[2]}",
            b"{\"items\":[1]} x",
            b"{\"items\":[1] \"a\":1}",
        ] {
            assert!(
                split_items(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
