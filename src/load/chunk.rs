//! What one streamed completion chunk says: whether it is an error, whether it carries
//! generated output, its finish reason and its token usage.
//!
//! Two readers give the same answer. `serde` parses the chunk into typed structs and can keep
//! the generated text; it is the reference. `scan` walks the JSON bytes once without building
//! anything, and is what a load run uses: at 128 chunks per request it is most of the client's
//! per-request work (docs/performance.md). The scan is deliberately narrow: whenever it meets
//! anything it cannot judge exactly as serde would (an escaped key, a tool call, a surrogate
//! escape, a number that is not a plain count, deep nesting, or anything malformed) it gives
//! up and the serde reader decides, so the scan can only ever be faster, never different. The
//! differential tests below hold it to that, on every transcript chunk and on mutations of them.
//!
//! A stream's chunks are, as a rule, byte for byte the same but for the generated text (same
//! id, model, created time, same keys in the same order). [`Reader`] remembers the last chunk
//! the scan read whose only text field was one string: a chunk that starts and ends with the
//! same bytes around a valid string in that place has the same facts but for whether that string
//! is empty, so it is answered with two comparisons and a look at the new text.

use std::borrow::Cow;

use serde::Deserialize;

/// The facts of one chunk that the client records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// An error object (`error` set, or `object: "error"`): the stream failed.
    pub error: bool,
    /// Non-empty content, reasoning, text or a tool call.
    pub output: bool,
    /// A non-empty `choices` array: the chunk carries a token, even when its text is empty (a
    /// role chunk, or part of a multi-byte character). vLLM's bench times its first token to
    /// the first such chunk and counts each one as an inter-token latency sample.
    pub token: bool,
    /// The last non-null `finish_reason` among the choices.
    pub finish_reason: Option<String>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// `usage.prompt_tokens_details.cached_tokens`.
    pub cached_tokens: Option<u64>,
}

/// Reads the chunks of one stream.
#[derive(Debug, Default)]
pub struct Reader {
    /// The last chunk the scan answered with exactly one text field, and where that field's
    /// string sits in it (between the quotes).
    last: Vec<u8>,
    text_at: Option<(usize, usize)>,
    /// Its facts, the text field left out.
    base: Facts,
}

impl Reader {
    pub fn new() -> Reader {
        Reader::default()
    }

    /// Reads one chunk (an event's data, not yet decoded). With `text`, the generated text is
    /// appended to it (serde reader); without, the remembered shape and then the scan are tried
    /// first. Invalid UTF-8 is replaced before serde reads it, as the SSE specification decodes
    /// events.
    pub fn read(
        &mut self,
        data: &[u8],
        text: Option<&mut String>,
    ) -> Result<Facts, serde_json::Error> {
        if text.is_none() {
            if let Some(f) = self.same_shape(data) {
                return Ok(f);
            }
            if let Some((f, field)) = scan_fields(data) {
                self.remember(data, &f, field);
                return Ok(f);
            }
        }
        serde(&String::from_utf8_lossy(data), text)
    }

    /// The facts of `data` if it is the last chunk with another valid string in its text field.
    fn same_shape(&self, data: &[u8]) -> Option<Facts> {
        let (start, end) = self.text_at?;
        let (head, tail) = (&self.last[..start], &self.last[end..]);
        if data.len() < head.len() + tail.len() || !data.starts_with(head) || !data.ends_with(tail)
        {
            return None;
        }
        // The new string must close exactly where the tail (which begins with its closing
        // quote) begins.
        let close = data.len() - tail.len();
        let mut s = Scan {
            b: data,
            i: start - 1,
            depth: 0,
        };
        s.string()?;
        if s.i != close + 1 {
            return None;
        }
        Some(Facts {
            output: self.base.output || close > start,
            ..self.base.clone()
        })
    }

    fn remember(&mut self, data: &[u8], facts: &Facts, field: Option<TextField>) {
        self.text_at = None;
        let Some(field) = field else { return };
        self.last.clear();
        self.last.extend_from_slice(data);
        self.text_at = Some((field.start, field.end));
        self.base = Facts {
            output: false,
            ..facts.clone()
        };
    }
}

/// The reference reader: typed serde structs.
pub fn serde(data: &str, text: Option<&mut String>) -> Result<Facts, serde_json::Error> {
    let chunk: Chunk = serde_json::from_str(data)?;
    let mut f = Facts {
        error: chunk.error.is_some() || chunk.object.as_deref() == Some("error"),
        ..Facts::default()
    };
    let mut text = text;
    f.token = chunk.choices.as_ref().is_some_and(|c| !c.is_empty());
    for choice in chunk.choices.into_iter().flatten() {
        if let Some(d) = &choice.delta {
            f.output |= nonempty(&d.content)
                || nonempty(&d.reasoning_content)
                || nonempty(&d.reasoning)
                || d.tool_calls.as_ref().is_some_and(|t| !t.is_null());
            if let (Some(t), Some(c)) = (text.as_deref_mut(), &d.content) {
                t.push_str(c);
            }
        }
        f.output |= nonempty(&choice.text);
        if let (Some(t), Some(c)) = (text.as_deref_mut(), &choice.text) {
            t.push_str(c);
        }
        if let Some(r) = choice.finish_reason {
            f.finish_reason = Some(r.into_owned());
        }
    }
    if let Some(u) = chunk.usage {
        f.prompt_tokens = u.prompt_tokens;
        f.completion_tokens = u.completion_tokens;
        f.cached_tokens = u.prompt_tokens_details.and_then(|d| d.cached_tokens);
    }
    Ok(f)
}

fn nonempty(s: &Option<Cow<'_, str>>) -> bool {
    s.as_deref().is_some_and(|s| !s.is_empty())
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    object: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    choices: Option<Vec<StreamChoice<'a>>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct StreamChoice<'a> {
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<serde_json::Value>,
}

/// Token usage, as servers report it.
#[derive(Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
    #[serde(default)]
    pub completion_tokens: Option<u64>,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptDetails>,
}

/// `usage.prompt_tokens_details` (OpenAI, vLLM with prefix caching, SGLang).
#[derive(Deserialize)]
pub struct PromptDetails {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
}

/// The fast reader: one pass over the bytes, `None` when serde must decide.
pub fn scan(data: &[u8]) -> Option<Facts> {
    scan_fields(data).map(|(f, _)| f)
}

/// Where the only text field of a chunk sits: the bytes between its quotes.
#[derive(Debug, Clone, Copy)]
struct TextField {
    start: usize,
    end: usize,
}

/// The text fields (`content`, `reasoning_content`, `reasoning`, `text`) a scan has met.
#[derive(Debug, Default)]
struct TextFields {
    count: u32,
    last: Option<TextField>,
}

impl TextFields {
    /// Reads a text field's string at the cursor; returns whether it is non-empty.
    fn read(&mut self, s: &mut Scan<'_>) -> Option<bool> {
        let raw = s.string()?;
        let end = s.i - 1;
        self.count += 1;
        self.last = Some(TextField {
            start: end - raw.len(),
            end,
        });
        Some(!raw.is_empty())
    }
}

/// The scan, and the place of the chunk's text field when it has exactly one.
fn scan_fields(data: &[u8]) -> Option<(Facts, Option<TextField>)> {
    let mut s = Scan {
        b: data,
        i: 0,
        depth: 0,
    };
    let mut f = Facts::default();
    let mut fields = TextFields::default();
    let mut seen = Seen(0);
    s.object(|s, key| {
        match key {
            b"object" => {
                seen.once(1)?;
                if !s.null()? {
                    f.error |= s.plain_string()? == "error";
                }
            }
            b"choices" => {
                seen.once(2)?;
                if !s.null()? {
                    s.array(|s| {
                        f.token = true;
                        choice(s, &mut f, &mut fields)
                    })?;
                }
            }
            b"usage" => {
                seen.once(4)?;
                if !s.null()? {
                    let mut seen = Seen(0);
                    s.object(|s, key| match key {
                        b"prompt_tokens" => {
                            seen.once(1)?;
                            f.prompt_tokens = s.count()?;
                            Some(())
                        }
                        b"completion_tokens" => {
                            seen.once(2)?;
                            f.completion_tokens = s.count()?;
                            Some(())
                        }
                        b"prompt_tokens_details" => {
                            seen.once(4)?;
                            if !s.null()? {
                                let mut seen = Seen(0);
                                s.object(|s, key| match key {
                                    b"cached_tokens" => {
                                        seen.once(1)?;
                                        f.cached_tokens = s.count()?;
                                        Some(())
                                    }
                                    _ => s.skip_value(),
                                })?;
                            }
                            Some(())
                        }
                        _ => s.skip_value(),
                    })?;
                }
            }
            b"error" => {
                seen.once(8)?;
                if !s.null()? {
                    s.skip_value()?;
                    f.error = true;
                }
            }
            _ => s.skip_value()?,
        }
        Some(())
    })?;
    s.ws();
    if s.i != s.b.len() {
        return None;
    }
    let only = if fields.count == 1 { fields.last } else { None };
    Some((f, only))
}

fn choice(s: &mut Scan<'_>, f: &mut Facts, fields: &mut TextFields) -> Option<()> {
    let mut seen = Seen(0);
    s.object(|s, key| {
        match key {
            b"delta" => {
                seen.once(1)?;
                if !s.null()? {
                    let mut seen = Seen(0);
                    s.object(|s, key| {
                        let bit = match key {
                            b"content" => 1,
                            b"reasoning_content" => 2,
                            b"reasoning" => 4,
                            // A tool call's arguments become a serde_json::Value in the
                            // reference, whose number rules differ from skipping: let it decide.
                            b"tool_calls" => return s.null()?.then_some(()),
                            _ => return s.skip_value(),
                        };
                        seen.once(bit)?;
                        if !s.null()? {
                            f.output |= fields.read(s)?;
                        }
                        Some(())
                    })?;
                }
            }
            b"text" => {
                seen.once(2)?;
                if !s.null()? {
                    f.output |= fields.read(s)?;
                }
            }
            b"finish_reason" => {
                seen.once(4)?;
                if !s.null()? {
                    f.finish_reason = Some(s.plain_string()?.to_string());
                }
            }
            _ => s.skip_value()?,
        }
        Some(())
    })
}

/// Which known keys an object has had: serde's derived structs refuse a duplicate.
struct Seen(u8);

impl Seen {
    fn once(&mut self, bit: u8) -> Option<()> {
        if self.0 & bit != 0 {
            return None;
        }
        self.0 |= bit;
        Some(())
    }
}

/// The bytes that end a run of plain string content: a quote, a backslash, a control character.
static STOPS: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Deeper than this, serde decides (its own limit is 128).
const MAX_DEPTH: u32 = 64;

/// A cursor over JSON text that accepts exactly what serde_json accepts, or gives up.
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
    depth: u32,
}

impl<'a> Scan<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// Consumes a `null` if one is next.
    fn null(&mut self) -> Option<bool> {
        if self.peek()? != b'n' {
            return Some(false);
        }
        self.literal(b"null")?;
        Some(true)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if !self.b[self.i..].starts_with(word) {
            return None;
        }
        self.i += word.len();
        Some(())
    }

    /// A string, as its raw bytes between the quotes (escapes left as written). Every escape is
    /// checked; a `\u` escape of a surrogate, or a raw control character, gives up.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            // Strings in a chunk are short (ids, keys, one token): a table lookup per byte beats
            // a vectorised search's setup, and finds control characters in the same pass.
            let j = self.i + self.b[self.i..].iter().position(|&c| STOPS[c as usize])?;
            match self.b[j] {
                b'"' => {
                    self.i = j + 1;
                    return Some(&self.b[start..j]);
                }
                b'\\' => {}
                _ => return None, // a raw control character
            }
            match *self.b.get(j + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i = j + 2,
                b'u' => {
                    let hex = self.b.get(j + 2..j + 6)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    // The four digits are ASCII hex, so this cannot fail.
                    let v = u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                    if (0xD800..0xE000).contains(&v) {
                        return None;
                    }
                    self.i = j + 6;
                }
                _ => return None,
            }
        }
    }

    /// A string without escapes, as text.
    fn plain_string(&mut self) -> Option<&'a str> {
        let raw = self.string()?;
        if raw.contains(&b'\\') {
            return None;
        }
        std::str::from_utf8(raw).ok()
    }

    /// A JSON number, checked against the grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Option<&'a [u8]> {
        self.ws();
        let start = self.i;
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.b.get(self.i)? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Some(&self.b[start..self.i])
    }

    fn digits(&mut self) {
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.i;
        self.digits();
        (self.i > start).then_some(())
    }

    /// A token count: a non-negative integer that fits u64, or null.
    fn count(&mut self) -> Option<Option<u64>> {
        if self.null()? {
            return Some(None);
        }
        let n = self.number()?;
        if !n.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(n).ok()?.parse().ok().map(Some)
    }

    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.object(|s, _| s.skip_value()),
            b'[' => self.array(Scan::skip_value),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number().map(drop),
            _ => None,
        }
    }

    fn nest(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// An object, calling `field` with each key (which must have no escapes) with the cursor
    /// at its value; `field` consumes the value.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &[u8]) -> Option<()>) -> Option<()> {
        self.list(b'{', b'}', |s| {
            let key = s.string()?;
            if key.contains(&b'\\') {
                return None;
            }
            s.eat(b':')?;
            field(s, key)
        })
    }

    fn array(&mut self, item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.list(b'[', b']', item)
    }

    /// `open`, comma-separated entries read by `entry`, `close`.
    fn list(
        &mut self,
        open: u8,
        close: u8,
        mut entry: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.eat(open)?;
        self.nest()?;
        if self.peek()? == close {
            self.i += 1;
        } else {
            loop {
                entry(self)?;
                match self.peek()? {
                    b',' => self.i += 1,
                    c if c == close => {
                        self.i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.depth -= 1;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every chunk the transcripts hold, plus shapes they lack.
    fn corpus() -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).expect("transcripts") {
            let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
            let mut p = crate::load::sse::Parser::new();
            p.feed(&bytes, |e| out.push(e.text().trim().to_string()));
        }
        out.extend(
            [
                r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"a \"q\" \\ \n \u00e9"},"logprobs":{"content":[{"token":"a","logprob":-1.25e-07,"bytes":[97]}]},"finish_reason":null}]}"#,
                r#"{"choices":[{"index":0,"text":"x","finish_reason":"length","stop_reason":null}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#,
                r#" { "choices" : [ { "delta" : { "content" : "" , "role" : "assistant" } } ] } "#,
                r#"{"choices":null,"usage":null,"error":null,"object":null}"#,
                r#"{"choices":[],"usage":{"prompt_tokens":null,"completion_tokens":0}}"#,
                r#"{"choices":[{"delta":{"content":"a"},"finish_reason":"stop"},{"delta":{},"finish_reason":"length"}]}"#,
                r#"{"error":{"message":"boom"}}"#,
                r#"{"object":"error","message":"boom"}"#,
                r#"{"choices":[{"delta":{"reasoning":"r"}}],"x":[true,false,null,{"y":[1,-0.5,2E+3]}]}"#,
                r#"{"choices":[{"delta":{"content":"\ud83d\ude00"}}]}"#,
                r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}}]}"#,
                r#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#,
                r#"{"usage":{"completion_tokens":7.0}}"#,
                r#"{"usage":{"completion_tokens":-1}}"#,
                r#"{"usage":{"completion_tokens":18446744073709551616}}"#,
                r#"{"choices":[{"delta":{"content":"a"}}]} x"#,
                r#"{"choices":[{"delta":{"con\u0074ent":"a"}}]}"#,
                r#"{"choices":[{"finish_reason":"st\u006fp"}]}"#,
                r#"[null,[{"delta":{"content":"a"}}],null,null]"#,
                r#"{"choices":[{"delta":{"content":"a"}}],"n":01}"#,
                "{\"choices\":[{\"delta\":{\"content\":\"a\tb\"}}]}",
                r#"{"choices":[{"delta":{"content":"a"}}],}"#,
                r#"{"a":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"#,
                "",
                "nul",
            ]
            .map(String::from),
        );
        out
    }

    /// A fixed-seed pseudo-random sequence (xorshift64), so mutation tests are reproducible.
    fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    /// What the client would record from a reader's answer.
    fn verdict(r: Result<Facts, serde_json::Error>) -> Result<Facts, String> {
        r.map_err(|e| e.to_string())
    }

    #[test]
    fn the_scan_agrees_with_serde_on_every_chunk_it_answers() {
        let mut answered = 0;
        for c in corpus() {
            if let Some(f) = scan(c.as_bytes()) {
                answered += 1;
                assert_eq!(Ok(f), verdict(serde(&c, None)), "{c}");
            }
        }
        // The scan is the fast path: it must answer the ordinary chunks, not defer them all.
        assert!(answered > 40, "the scan answered only {answered} chunks");
    }

    #[test]
    fn the_scan_answers_ordinary_vllm_chunks_and_defers_odd_ones() {
        let vllm = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"the "},"logprobs":null,"finish_reason":null}]}"#;
        assert_eq!(
            scan(vllm.as_bytes()),
            Some(Facts {
                output: true,
                token: true,
                ..Facts::default()
            })
        );
        // A role chunk with empty content carries a token but no output; a usage chunk
        // (`choices: []`) carries neither.
        let role = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#;
        let f = scan(role.as_bytes()).expect("role chunk");
        assert!(f.token && !f.output, "{f:?}");
        assert_eq!(Ok(f), verdict(serde(role, None)));
        let cached = r#"{"choices":[],"usage":{"prompt_tokens":50,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":32}}}"#;
        let f = scan(cached.as_bytes()).expect("the fast path reads cached tokens");
        assert_eq!((f.prompt_tokens, f.cached_tokens), (Some(50), Some(32)));
        let none = r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":4,"prompt_tokens_details":null}}"#;
        assert_eq!(scan(none.as_bytes()).expect("scan").cached_tokens, None);
        let usage = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":5,"total_tokens":9,"completion_tokens":4}}"#;
        let f = scan(usage.as_bytes()).expect("usage chunk");
        assert!(!f.token);
        assert_eq!((f.prompt_tokens, f.completion_tokens), (Some(5), Some(4)));
        for odd in [
            r#"{"choices":[{"delta":{"con\u0074ent":"a"}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[]}}]}"#,
            r#"{"choices":[{"delta":{"content":"\ud83d\ude00"}}]}"#,
            r#"{"usage":{"completion_tokens":7.0}}"#,
            r#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#,
        ] {
            assert_eq!(scan(odd.as_bytes()), None, "{odd}");
        }
    }

    /// A reader that has seen one chunk answers the next as serde does, for every ordered pair
    /// of corpus chunks (same-shape pairs take the remembered path).
    #[test]
    fn a_stream_reader_agrees_with_serde_after_any_chunk() {
        let corpus = corpus();
        let mut remembered = 0;
        for a in &corpus {
            for b in &corpus {
                let mut r = Reader::new();
                let _ = r.read(a.as_bytes(), None);
                remembered += usize::from(r.same_shape(b.as_bytes()).is_some());
                let got = r.read(b.as_bytes(), None).map_err(|e| e.to_string());
                assert_eq!(got, verdict(serde(b, None)), "{a}\nthen\n{b}");
            }
        }
        assert!(
            remembered > 50,
            "only {remembered} pairs took the remembered path"
        );
    }

    /// Byte mutations of every corpus chunk (deleted, duplicated and replaced bytes, from a
    /// fixed seed): whenever the scan answers, serde answers the same.
    #[test]
    fn the_scan_agrees_with_serde_on_mutated_chunks() {
        let alphabet = b"{}[]\":,\\ 0123456789-+.eEnulltrufasx\x01\t";
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15u64);
        let (mut checked, mut remembered) = (0, 0);
        for c in corpus() {
            for _ in 0..300 {
                let mut b = c.clone().into_bytes();
                for _ in 0..1 + next() % 3 {
                    if b.is_empty() {
                        break;
                    }
                    let at = (next() % b.len() as u64) as usize;
                    match next() % 3 {
                        0 => {
                            b.remove(at);
                        }
                        1 => b.insert(at, b[at]),
                        _ => b[at] = alphabet[(next() % alphabet.len() as u64) as usize],
                    }
                }
                let m = String::from_utf8_lossy(&b);
                if let Some(f) = scan(&b) {
                    checked += 1;
                    assert_eq!(Ok(f), verdict(serde(&m, None)), "{m}");
                }
                // The same mutation read by a reader that has just read the original.
                let mut r = Reader::new();
                let _ = r.read(c.as_bytes(), None);
                if let Some(f) = r.same_shape(&b) {
                    remembered += 1;
                    assert_eq!(Ok(f), verdict(serde(&m, None)), "{c}\nthen\n{m}");
                }
            }
        }
        assert!(
            checked > 1000,
            "only {checked} mutations were answered by the scan"
        );
        assert!(
            remembered > 100,
            "only {remembered} mutations took the remembered path"
        );
    }

    /// Random text (quotes, backslashes, escapes, control and multi-byte characters) put in the
    /// text field of each remembered chunk: whenever the reader answers from memory, serde
    /// answers the same.
    #[test]
    fn a_remembered_shape_with_any_new_text_agrees_with_serde() {
        let pieces: [&[u8]; 14] = [
            b"a",
            b" ",
            b"\"",
            b"\\",
            b"\\n",
            b"\\\"",
            b"\\u00e9",
            b"\\ud83d",
            b"\\x",
            b"\\u12",
            b"\t",
            "é".as_bytes(),
            b"\xFF",
            b"}",
        ];
        let mut next = xorshift(0x2545_F491_4F6C_DD1Du64);
        let (mut answered, mut deferred) = (0, 0);
        for c in corpus() {
            let mut r = Reader::new();
            let _ = r.read(c.as_bytes(), None);
            let Some((start, end)) = r.text_at else {
                continue;
            };
            for _ in 0..200 {
                let mut b = c.as_bytes()[..start].to_vec();
                for _ in 0..next() % 6 {
                    b.extend_from_slice(pieces[(next() % pieces.len() as u64) as usize]);
                }
                b.extend_from_slice(&c.as_bytes()[end..]);
                match r.same_shape(&b) {
                    Some(f) => {
                        answered += 1;
                        let m = String::from_utf8_lossy(&b);
                        assert_eq!(Ok(f), verdict(serde(&m, None)), "{c}\nthen\n{m}");
                    }
                    None => deferred += 1,
                }
            }
        }
        assert!(
            answered > 1000 && deferred > 1000,
            "{answered} answered, {deferred} deferred"
        );
    }
}
