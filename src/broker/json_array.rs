//! A JSON array of objects read as it arrives: the bytes of an answer are fed in chunks, cut
//! wherever the network cut them, and each element is decoded as soon as its closing brace
//! has arrived. Only the element being read is held, never the whole body.
//!
//! A small state machine finds the element boundaries (it tracks strings, escapes and the
//! depth of braces and brackets); each element is then decoded by `serde_json::from_slice`,
//! which checks everything the splitter does not (that brackets match, numbers, literals).
//! `serde_json::StreamDeserializer` is not used: it reads whitespace-separated values, not the
//! elements of one array, and it cannot resume a value cut in two by a chunk boundary.

use serde::de::DeserializeOwned;

/// Why an answer is not a JSON array of objects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonArrayError {
    /// A byte where the array's syntax allows none (at this offset of the body).
    #[error("unexpected {found} at byte {offset} (expected {expected})")]
    Unexpected {
        offset: u64,
        found: String,
        expected: &'static str,
    },
    /// The body ended before the array did.
    #[error("the answer ends at byte {offset}, inside the array")]
    Truncated { offset: u64 },
    /// An element could not be decoded.
    #[error("element {index} (at byte {offset}): {detail}")]
    Element {
        index: u64,
        offset: u64,
        detail: String,
    },
}

/// Where the splitter is in the array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the `[`.
    Start,
    /// After the `[`: an element or `]`.
    First,
    /// After a `,`: an element.
    Next,
    /// Inside an element.
    Element,
    /// After an element: `,` or `]`.
    After,
    /// After the `]`: only whitespace.
    Done,
}

/// Splits a JSON array arriving in chunks into its elements, and decodes each as a `T`.
#[derive(Debug)]
pub struct JsonArray {
    state: State,
    /// Depth of braces and brackets inside the current element.
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// The part of the current element that came in earlier chunks.
    pending: Vec<u8>,
    /// Bytes read before the current chunk.
    offset: u64,
    /// Where the current element started in the body.
    element_offset: u64,
    /// Elements decoded so far.
    count: u64,
}

impl Default for JsonArray {
    fn default() -> Self {
        JsonArray::new()
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn shown(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("{:?}", b as char)
    } else {
        format!("byte 0x{b:02x}")
    }
}

impl JsonArray {
    pub fn new() -> JsonArray {
        JsonArray {
            state: State::Start,
            depth: 0,
            in_string: false,
            escaped: false,
            pending: Vec::new(),
            offset: 0,
            element_offset: 0,
            count: 0,
        }
    }

    /// How many elements were decoded so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Reads one chunk; calls `each` with every element completed in it, in order.
    pub fn feed<T: DeserializeOwned>(
        &mut self,
        chunk: &[u8],
        each: &mut impl FnMut(T),
    ) -> Result<(), JsonArrayError> {
        // Where the current element starts in this chunk (0 when it began in an earlier one).
        let mut start = 0;
        for (i, &b) in chunk.iter().enumerate() {
            let at = self.offset + i as u64;
            let unexpected = |expected| JsonArrayError::Unexpected {
                offset: at,
                found: shown(b),
                expected,
            };
            match self.state {
                State::Element => {
                    if self.in_string {
                        if self.escaped {
                            self.escaped = false;
                        } else if b == b'\\' {
                            self.escaped = true;
                        } else if b == b'"' {
                            self.in_string = false;
                        }
                        continue;
                    }
                    match b {
                        b'"' => self.in_string = true,
                        b'{' | b'[' => self.depth += 1,
                        b'}' | b']' => {
                            self.depth -= 1;
                            if self.depth == 0 {
                                let piece = &chunk[start..=i];
                                if self.pending.is_empty() {
                                    self.decode(piece, each)?;
                                } else {
                                    let mut whole = std::mem::take(&mut self.pending);
                                    whole.extend_from_slice(piece);
                                    self.decode(&whole, each)?;
                                    // Keep the allocation for the next element that spans
                                    // chunks.
                                    whole.clear();
                                    self.pending = whole;
                                }
                                self.state = State::After;
                            }
                        }
                        _ => {}
                    }
                }
                _ if is_space(b) => {}
                State::Start => match b {
                    b'[' => self.state = State::First,
                    _ => return Err(unexpected("the '[' of an array")),
                },
                State::First | State::Next => match b {
                    b'{' => {
                        self.state = State::Element;
                        self.depth = 1;
                        self.element_offset = at;
                        start = i;
                    }
                    b']' if self.state == State::First => self.state = State::Done,
                    _ => return Err(unexpected("an object")),
                },
                State::After => match b {
                    b',' => self.state = State::Next,
                    b']' => self.state = State::Done,
                    _ => return Err(unexpected("',' or ']'")),
                },
                State::Done => return Err(unexpected("the end of the answer")),
            }
        }
        if self.state == State::Element {
            self.pending.extend_from_slice(&chunk[start..]);
        }
        self.offset += chunk.len() as u64;
        Ok(())
    }

    /// Ends the body: an error unless the array was complete.
    pub fn finish(self) -> Result<u64, JsonArrayError> {
        if self.state == State::Done {
            Ok(self.count)
        } else {
            Err(JsonArrayError::Truncated {
                offset: self.offset,
            })
        }
    }

    fn decode<T: DeserializeOwned>(
        &mut self,
        bytes: &[u8],
        each: &mut impl FnMut(T),
    ) -> Result<(), JsonArrayError> {
        let value = serde_json::from_slice(bytes).map_err(|err| JsonArrayError::Element {
            index: self.count,
            offset: self.element_offset,
            detail: err.to_string(),
        })?;
        self.count += 1;
        each(value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// Every element of a body fed in the given pieces.
    fn split(pieces: &[&[u8]]) -> Result<Vec<Value>, JsonArrayError> {
        let mut array = JsonArray::new();
        let mut out = Vec::new();
        for piece in pieces {
            array.feed(piece, &mut |v: Value| out.push(v))?;
        }
        let count = array.finish()?;
        assert_eq!(count, out.len() as u64);
        Ok(out)
    }

    /// A listing as the management API sends it, with names that hold the splitter's
    /// special characters.
    fn body() -> String {
        let listing = json!([
            {"name": "q.plain", "durable": true, "auto_delete": false, "exclusive": false,
             "arguments": {}, "messages": 3, "consumers": 1, "type": "classic"},
            {"name": "q.{braces}[brackets]", "arguments": {"x-expires": 604800000},
             "messages": 0},
            {"name": "q.\"quoted\" \\ back\\slash \\\"", "arguments": {"x-a": [1, {"b": "}"}]}},
            {"name": "q.é ünïcødé ☃", "arguments": {"x-dead-letter-exchange": "]"}},
            {"name": "", "arguments": {"nested": {"deep": [[[]]], "s": "{[\"]}"}}}
        ]);
        // Pretty, so that whitespace sits between and inside the elements.
        serde_json::to_string_pretty(&listing).unwrap()
    }

    fn expected() -> Vec<Value> {
        serde_json::from_str::<Vec<Value>>(&body()).unwrap()
    }

    #[test]
    fn a_body_in_one_piece() {
        assert_eq!(split(&[body().as_bytes()]).unwrap(), expected());
    }

    #[test]
    fn a_body_cut_at_every_byte() {
        let body = body();
        let bytes = body.as_bytes();
        for at in 0..=bytes.len() {
            let (a, b) = bytes.split_at(at);
            assert_eq!(split(&[a, b]).unwrap(), expected(), "cut at {at}");
        }
    }

    #[test]
    fn a_small_body_cut_at_every_pair_of_offsets() {
        let body = r#"[ {"n":"a{[\"]}\\","v":[1,{}]}, {"m":"}","e":{}} ]"#;
        let expected: Vec<Value> = serde_json::from_str(body).unwrap();
        let bytes = body.as_bytes();
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                let pieces = [&bytes[..i], &bytes[i..j], &bytes[j..]];
                assert_eq!(split(&pieces).unwrap(), expected, "cut at {i} and {j}");
            }
        }
    }

    #[test]
    fn a_body_one_byte_at_a_time() {
        let body = body();
        let pieces: Vec<&[u8]> = body.as_bytes().chunks(1).collect();
        assert_eq!(split(&pieces).unwrap(), expected());
    }

    #[test]
    fn compact_bodies_and_empty_arrays() {
        assert_eq!(
            split(&[b"[{\"a\":1},{\"b\":\"}\"}]"]).unwrap(),
            vec![json!({"a": 1}), json!({"b": "}"})]
        );
        assert_eq!(split(&[b"[]"]).unwrap(), Vec::<Value>::new());
        assert_eq!(split(&[b" \n[ \n] \n"]).unwrap(), Vec::<Value>::new());
        assert_eq!(split(&[b"[", b"]"]).unwrap(), Vec::<Value>::new());
    }

    #[test]
    fn elements_decode_into_their_type() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Named {
            name: String,
        }
        let mut array = JsonArray::new();
        let mut names = Vec::new();
        array
            .feed(b"[{\"name\":\"a\",\"x\":1},{\"na", &mut |n: Named| {
                names.push(n)
            })
            .unwrap();
        assert_eq!(names, [Named { name: "a".into() }]);
        array
            .feed(b"me\":\"b\"}]", &mut |n: Named| names.push(n))
            .unwrap();
        assert_eq!(array.finish().unwrap(), 2);
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn malformed_bodies_are_typed_errors() {
        let unexpected = |body: &[u8]| match split(&[body]) {
            Err(JsonArrayError::Unexpected { offset, .. }) => offset,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(body)),
        };
        assert_eq!(unexpected(b"{\"error\":\"not_found\"}"), 0);
        assert_eq!(unexpected(b"[{\"a\":1},]"), 9);
        assert_eq!(unexpected(b"[{\"a\":1} {\"b\":2}]"), 9);
        assert_eq!(unexpected(b"[{\"a\":1}]x"), 9);
        assert_eq!(unexpected(b"[1,2]"), 1);
        assert_eq!(unexpected(b"[,{\"a\":1}]"), 1);
        assert_eq!(unexpected(b"<html>"), 0);
        for truncated in [
            &b""[..],
            b"[",
            b"[{\"a\":1}",
            b"[{\"a\":\"}",
            b"[{\"a\":1},",
        ] {
            assert!(
                matches!(split(&[truncated]), Err(JsonArrayError::Truncated { .. })),
                "{:?}",
                String::from_utf8_lossy(truncated)
            );
        }
        match split(&[b"[{\"a\":1},{\"a\":]}]"]) {
            Err(JsonArrayError::Element { index, offset, .. }) => {
                assert_eq!((index, offset), (1, 9));
            }
            other => panic!("{other:?}"),
        }
        match split(&[b"[{\"a\" 1}]"]) {
            Err(JsonArrayError::Element { index: 0, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_element_of_the_wrong_shape_is_an_element_error() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Named {
            name: String,
        }
        let mut array = JsonArray::new();
        let err = array
            .feed(b"[{\"name\":1}]", &mut |_: Named| {})
            .unwrap_err();
        assert!(
            matches!(err, JsonArrayError::Element { index: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("element 0"), "{err}");
    }
}
