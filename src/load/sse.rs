//! An incremental Server-Sent Events parser, per the WHATWG HTML specification's
//! "event stream interpretation": any line ending (CRLF, LF, CR), a leading BOM, `field:value`
//! with one optional space, multi-line `data`, comments, and events split across reads at any
//! byte, including inside a UTF-8 character.
//!
//! Written here rather than taken from a crate because it sits on the measurement hot path:
//! it works on bytes as they arrive, allocates only for an event's data, and lets the client
//! timestamp each event at the read that completed it. The byte-split tests pin it.

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The `event:` field, empty when absent (the spec's default type is "message").
    pub event: String,
    /// `data:` lines joined with `\n`.
    pub data: String,
}

/// Feeds bytes in, takes events out.
#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes of an unfinished line.
    line: Vec<u8>,
    data: Vec<u8>,
    event: Vec<u8>,
    has_data: bool,
    /// Whether the first bytes (where a BOM may sit) have been seen.
    started: bool,
    /// The first bytes, held until the BOM question is decided.
    head: Vec<u8>,
    /// The previous chunk ended in CR: a following LF belongs to it.
    pending_cr: bool,
}

impl Parser {
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Consumes `bytes`, calling `on_event` for each event completed by them.
    pub fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(Event)) {
        if self.started {
            self.feed_lines(bytes, &mut on_event);
            return;
        }
        // A BOM may itself be split across reads: hold bytes until it is decided.
        self.head.extend_from_slice(bytes);
        if self.head.len() < BOM.len() && BOM.starts_with(&self.head) {
            return;
        }
        self.started = true;
        let head = std::mem::take(&mut self.head);
        self.feed_lines(head.strip_prefix(BOM).unwrap_or(&head), &mut on_event);
    }

    fn feed_lines(&mut self, mut bytes: &[u8], on_event: &mut impl FnMut(Event)) {
        if self.pending_cr {
            self.pending_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        while let Some(i) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            let line_end = &bytes[..i];
            if self.line.is_empty() {
                self.process_line(line_end, on_event);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(line_end);
                self.process_line(&line, on_event);
                line.clear();
                self.line = line;
            }
            if bytes[i] == b'\r' {
                if i + 1 == bytes.len() {
                    self.pending_cr = true;
                    return;
                }
                if bytes[i + 1] == b'\n' {
                    bytes = &bytes[i + 2..];
                    continue;
                }
            }
            bytes = &bytes[i + 1..];
        }
        self.line.extend_from_slice(bytes);
    }

    fn process_line(&mut self, line: &[u8], on_event: &mut impl FnMut(Event)) {
        if line.is_empty() {
            if self.has_data {
                let data = String::from_utf8_lossy(&self.data).into_owned();
                let event = String::from_utf8_lossy(&self.event).into_owned();
                on_event(Event { event, data });
            }
            self.data.clear();
            self.event.clear();
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return; // a comment, e.g. a keep-alive
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            // `id` and `retry` change reconnection state, which a benchmark client never uses;
            // unknown fields are ignored, as the spec says.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<Event> {
        let mut p = Parser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, |e| out.push(e));
        }
        out
    }

    fn data(events: &[Event]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn parses_line_endings_bom_spaces_comments_and_multiline() {
        let stream = b"\xEF\xBB\xBF: keep-alive\r\ndata: a\r\n\r\ndata:b\rdata:  c\r\revent: err\ndata: x\ndata: y\n\nid: 7\nretry: 10\n\n";
        let ev = parse_all(&[stream]);
        assert_eq!(data(&ev), ["a", "b\n c", "x\ny"]);
        assert_eq!(ev[2].event, "err");
    }

    #[test]
    fn an_unterminated_event_at_the_end_is_not_dispatched() {
        let ev = parse_all(&[b"data: a\n\ndata: b\n"]);
        assert_eq!(data(&ev), ["a"]);
    }

    #[test]
    fn splitting_at_every_byte_boundary_changes_nothing() {
        let stream = "\u{feff}data: {\"t\":\"héllo ✓\"}\r\n\r\n: ping\r\rdata: two\rdata: lines\r\rdata: [DONE]\r\n\r\n"
            .as_bytes();
        let whole = parse_all(&[stream]);
        assert_eq!(whole.len(), 3);
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let split = parse_all(&[&stream[..i], &stream[i..j], &stream[j..]]);
                assert_eq!(split, whole, "split at {i},{j}");
            }
        }
    }
}
