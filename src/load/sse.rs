//! An incremental Server-Sent Events parser, per the WHATWG HTML specification's
//! "event stream interpretation": any line ending (CRLF, LF, CR), a leading BOM, `field:value`
//! with one optional space, multi-line `data`, comments, and events split across reads at any
//! byte, including inside a UTF-8 character.
//!
//! Written here rather than taken from a crate because it sits on the measurement hot path:
//! it works on bytes as they arrive, finds line ends with `memchr` rather than byte by byte,
//! hands each event to the caller as slices of the read that completed it (an event's data is
//! copied only when it spans reads or lines), and lets the client timestamp each event at the
//! read that completed it. The byte-split tests pin it.

use std::borrow::Cow;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event, borrowed from the parser or from the bytes just fed. Bytes, not text:
/// the client's chunk scan reads bytes, and [`Event::text`] decodes when text is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Event<'a> {
    /// The `event:` field, empty when absent (the spec's default type is "message").
    pub event: &'a [u8],
    /// `data:` lines joined with `\n`.
    pub data: &'a [u8],
}

impl<'a> Event<'a> {
    /// The data as text, invalid UTF-8 replaced with U+FFFD as the spec says.
    pub fn text(&self) -> Cow<'a, str> {
        text(self.data)
    }

    /// The event type as text, empty when absent.
    pub fn kind(&self) -> Cow<'a, str> {
        text(self.event)
    }
}

/// Feeds bytes in, takes events out.
#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes of an unfinished line.
    line: Vec<u8>,
    /// The current event's data when it cannot be borrowed (it spans reads or lines).
    data: Vec<u8>,
    event: Vec<u8>,
    has_data: bool,
    /// Whether the first bytes (where a BOM may sit) have been seen.
    started: bool,
    /// The first bytes, held until the BOM question is decided.
    head: Vec<u8>,
    /// The previous chunk ended in CR: a following LF belongs to it.
    pending_cr: bool,
    /// The value of the first non-standard `error:` field seen, which the spec ignores but
    /// some servers use to say that generation failed.
    stray_error: Option<Vec<u8>>,
}

/// The current event's data while a read is being scanned: still a slice of that read (the
/// common case, one `data:` line), or gathered in the parser's buffer.
enum Data<'b> {
    Borrowed(&'b [u8]),
    Buffered,
}

impl Parser {
    pub fn new() -> Parser {
        Parser::default()
    }

    /// The value of the first `error:` field the stream carried, if any. The SSE specification
    /// ignores unknown fields, so it is not an event; the client judges it at the stream's end.
    pub fn stray_error(&self) -> Option<&[u8]> {
        self.stray_error.as_deref()
    }

    /// Consumes `bytes`, calling `on_event` for each event completed by them.
    pub fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(Event<'_>)) {
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

    fn feed_lines(&mut self, mut bytes: &[u8], on_event: &mut impl FnMut(Event<'_>)) {
        if self.pending_cr {
            self.pending_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        let mut data = Data::Buffered;
        while let Some(i) = memchr::memchr2(b'\n', b'\r', bytes) {
            let line_end = &bytes[..i];
            if self.line.is_empty() {
                self.process_line(line_end, &mut data, on_event);
            } else {
                // The line began in an earlier read: join it, and buffer what it holds.
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(line_end);
                let mut joined = Data::Buffered;
                self.process_line(&line, &mut joined, on_event);
                self.keep(joined);
                line.clear();
                self.line = line;
            }
            if bytes[i] == b'\r' {
                if i + 1 == bytes.len() {
                    self.pending_cr = true;
                    self.keep(data);
                    return;
                }
                if bytes[i + 1] == b'\n' {
                    bytes = &bytes[i + 2..];
                    continue;
                }
            }
            bytes = &bytes[i + 1..];
        }
        self.keep(data);
        self.line.extend_from_slice(bytes);
    }

    /// The read is over: data still borrowed from it moves into the buffer.
    fn keep(&mut self, data: Data<'_>) {
        if let Data::Borrowed(b) = data {
            self.data.extend_from_slice(b);
        }
    }

    fn process_line<'b>(
        &mut self,
        line: &'b [u8],
        data: &mut Data<'b>,
        on_event: &mut impl FnMut(Event<'_>),
    ) {
        if line.is_empty() {
            if self.has_data {
                let bytes = match *data {
                    Data::Borrowed(b) => b,
                    Data::Buffered => &self.data,
                };
                on_event(Event {
                    event: &self.event,
                    data: bytes,
                });
            }
            *data = Data::Buffered;
            self.data.clear();
            self.event.clear();
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return; // a comment, e.g. a keep-alive
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if !self.has_data {
                    // The first data line of an event: borrow it until the event ends or the
                    // read does.
                    *data = Data::Borrowed(value);
                    self.has_data = true;
                    return;
                }
                if let Data::Borrowed(b) = std::mem::replace(data, Data::Buffered) {
                    self.data.extend_from_slice(b);
                }
                self.data.push(b'\n');
                self.data.extend_from_slice(value);
            }
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            b"error" if self.stray_error.is_none() => {
                self.stray_error = Some(value.to_vec());
            }
            // `id` and `retry` change reconnection state, which a benchmark client never uses;
            // other unknown fields are ignored, as the spec says.
            _ => {}
        }
    }
}

/// UTF-8 text, with invalid sequences replaced. `from_utf8` first: `from_utf8_lossy` checks
/// valid text several times slower.
fn text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events as (type, data) text.
    fn parse_all(chunks: &[&[u8]]) -> Vec<(String, String)> {
        let mut p = Parser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, |e| {
                out.push((e.kind().into_owned(), e.text().into_owned()))
            });
        }
        out
    }

    fn data(events: &[(String, String)]) -> Vec<&str> {
        events.iter().map(|e| e.1.as_str()).collect()
    }

    #[test]
    fn parses_line_endings_bom_spaces_comments_and_multiline() {
        let stream = b"\xEF\xBB\xBF: keep-alive\r\ndata: a\r\n\r\ndata:b\rdata:  c\r\revent: err\ndata: x\ndata: y\n\nid: 7\nretry: 10\n\n";
        let ev = parse_all(&[stream]);
        assert_eq!(data(&ev), ["a", "b\n c", "x\ny"]);
        assert_eq!(ev[2].0, "err");
    }

    #[test]
    fn invalid_utf8_is_replaced_and_event_types_survive_splits() {
        let stream = b"event: e\xFFrr\ndata: a\xF0\x9F\ndata: b\n\ndata: c\n\n";
        let whole = parse_all(&[stream]);
        assert_eq!(data(&whole), ["a\u{FFFD}\nb", "c"]);
        assert_eq!(whole[0].0, "e\u{FFFD}rr");
        assert_eq!(whole[1].0, "");
        for i in 0..=stream.len() {
            assert_eq!(
                parse_all(&[&stream[..i], &stream[i..]]),
                whole,
                "split at {i}"
            );
        }
    }

    #[test]
    fn a_non_standard_error_field_is_kept_apart_and_dispatches_nothing() {
        let mut p = Parser::new();
        let mut n = 0;
        p.feed(
            b"data: a\n\nerror: CUDA out of memory\n\nerror: second\n\n",
            |_| n += 1,
        );
        assert_eq!(n, 1);
        assert_eq!(p.stray_error(), Some(&b"CUDA out of memory"[..]));
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
