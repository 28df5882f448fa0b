//! Token usage from provider responses, without buffering them: a JSON body's `usage` object,
//! or an SSE stream fed chunk by chunk (chunk boundaries anywhere, even inside a line).
//!
//! When a provider reports no usage, the counts are estimated from the text (≈ 4 characters per
//! token) and marked as estimated.

use serde::Deserialize;
use std::borrow::Cow;

/// Characters per token assumed when a provider sends no usage.
pub const CHARS_PER_TOKEN: u64 = 4;

/// Longest SSE line kept while waiting for its end; a longer one is skipped (and cannot carry
/// usage we understand), so a hostile or broken stream cannot grow the filter's memory.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Token counts of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt / input tokens.
    pub input_tokens: u64,
    /// Completion / output tokens.
    pub output_tokens: u64,
    /// Input tokens served from the provider's cache.
    pub cached_tokens: u64,
    /// Output tokens spent on reasoning.
    pub reasoning_tokens: u64,
    /// True when counted from text because the provider reported none.
    pub estimated: bool,
}

#[derive(Deserialize, Default)]
struct Details {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

/// Both OpenAI spellings: chat/completions (`prompt_tokens`) and responses/audio (`input_tokens`).
#[derive(Deserialize, Default)]
struct UsageJson {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<Details>,
    #[serde(default)]
    input_tokens_details: Option<Details>,
    #[serde(default)]
    completion_tokens_details: Option<Details>,
    #[serde(default)]
    output_tokens_details: Option<Details>,
}

impl UsageJson {
    fn usage(&self) -> Usage {
        let cached =
            self.prompt_tokens_details.as_ref().or(self.input_tokens_details.as_ref()).and_then(|d| d.cached_tokens);
        let reasoning = self
            .completion_tokens_details
            .as_ref()
            .or(self.output_tokens_details.as_ref())
            .and_then(|d| d.reasoning_tokens);
        Usage {
            input_tokens: self.prompt_tokens.or(self.input_tokens).unwrap_or(0),
            output_tokens: self.completion_tokens.or(self.output_tokens).unwrap_or(0),
            cached_tokens: cached.unwrap_or(0),
            reasoning_tokens: reasoning.unwrap_or(0),
            estimated: false,
        }
    }
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    message: Option<Delta<'a>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

/// A Responses API object inside a stream event (`response.created`, `response.completed`, …).
#[derive(Deserialize)]
struct ResponseObject<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<UsageJson>,
}

/// A Responses API output item, for estimating a JSON answer without a usage report.
#[derive(Deserialize)]
struct OutputItem<'a> {
    #[serde(borrow, default)]
    content: Option<Vec<OutputPart<'a>>>,
}

#[derive(Deserialize)]
struct OutputPart<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

/// The parts of a response object (or stream event) that matter for usage.
#[derive(Deserialize)]
struct Event<'a> {
    /// A Responses API stream event's type (`response.completed`, …).
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<UsageJson>,
    /// A Responses API stream event's response.
    #[serde(borrow, default)]
    response: Option<ResponseObject<'a>>,
    #[serde(borrow, default)]
    choices: Option<Vec<Choice<'a>>>,
    /// Transcription stream deltas (`transcript.text.delta`).
    #[serde(borrow, default)]
    delta: Option<Cow<'a, str>>,
    /// Transcription JSON responses.
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

impl Event<'_> {
    fn text_chars(&self) -> u64 {
        let mut n = 0usize;
        for c in self.choices.iter().flatten() {
            for d in [&c.delta, &c.message].into_iter().flatten() {
                n += d.content.as_deref().map_or(0, str::len) + d.reasoning_content.as_deref().map_or(0, str::len);
            }
            n += c.text.as_deref().map_or(0, str::len);
        }
        n += self.delta.as_deref().map_or(0, str::len);
        // A `….done` event repeats as `text` what its deltas streamed.
        if !self.kind.as_deref().is_some_and(|k| k.ends_with(".done")) {
            n += self.text.as_deref().map_or(0, str::len);
        }
        n as u64
    }
}

/// Estimated tokens in `chars` characters of text.
pub fn estimate_tokens(chars: u64) -> u64 {
    chars.div_ceil(CHARS_PER_TOKEN)
}

/// Usage from a complete JSON response body; estimated from its text when it has none.
/// `None` when the body is not JSON (audio bytes, plain-text transcripts).
pub fn from_json(body: &[u8]) -> Option<Usage> {
    // Nearly every response reports usage: read only that first, skipping the choices rather
    // than building them (4 % of the filter's own instructions per request). A report also
    // counts when the rest of the body has a shape we do not know.
    let reported: UsageOnly = serde_json::from_slice(body).ok()?;
    if let Some(u) = reported.usage {
        return Some(u.usage());
    }
    let event: Event<'_> = serde_json::from_slice(body).ok()?;
    Some(Usage { output_tokens: estimate_tokens(event.text_chars()), estimated: true, ..Usage::default() })
}

/// A response body as far as its usage report goes.
#[derive(Deserialize)]
struct UsageOnly {
    #[serde(default)]
    usage: Option<UsageJson>,
}

/// A Responses API answer as far as its usage report and id go.
#[derive(Deserialize)]
struct UsageAndId<'a> {
    #[serde(default)]
    usage: Option<UsageJson>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
}

/// A Responses API answer's output, for an estimate when it reports no usage.
#[derive(Deserialize)]
struct ResponseOutput<'a> {
    #[serde(borrow, default)]
    output: Option<Vec<OutputItem<'a>>>,
}

/// [`from_json`] for a Responses API answer, which also gives the response's id: one parse.
/// Without a usage report, a finished answer is estimated from its output text; one still
/// `queued` or `in_progress` (a background create) has generated nothing yet and gets `None`:
/// its reservation is what it costs.
pub fn from_json_response(body: &[u8]) -> (Option<Usage>, Option<String>) {
    let Ok(top) = serde_json::from_slice::<UsageAndId<'_>>(body) else { return (None, None) };
    let id = top.id.map(Cow::into_owned);
    if let Some(u) = top.usage {
        return (Some(u.usage()), id);
    }
    if matches!(top.status.as_deref(), Some("queued" | "in_progress")) {
        return (None, id);
    }
    let estimate = serde_json::from_slice::<ResponseOutput<'_>>(body).ok().map(|r| {
        let chars: usize = r
            .output
            .iter()
            .flatten()
            .flat_map(|item| item.content.iter().flatten())
            .map(|p| p.text.as_deref().map_or(0, str::len))
            .sum();
        Usage { output_tokens: estimate_tokens(chars as u64), estimated: true, ..Usage::default() }
    });
    (estimate, id)
}

/// Largest `usage` value [`JsonUsageScan`] keeps (real ones are a few hundred bytes).
pub const MAX_USAGE_BYTES: usize = 64 << 10;

/// Which top-level member [`JsonUsageScan`] is after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Member {
    #[default]
    Other,
    /// `usage`: the report.
    Usage,
    /// `id`: a Responses API answer's id.
    Id,
}

/// What [`JsonUsageScan`] is copying: the value of the top-level `usage` (or `id`) member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Capture {
    #[default]
    Off,
    /// An object or array: ends when its bracket closes.
    Composite,
    /// A string: ends at its closing quote.
    Text,
    /// `null`, a number, a literal: ends at the next `,` or `}` of the top-level object.
    Scalar,
}

/// The top-level `usage` of a JSON response read in pieces, for bodies too large to keep
/// whole (thousands of `top_logprobs`, many choices): it follows the JSON structure byte by
/// byte and copies only the `usage` member's value, wherever it is (usually last).
///
/// Only member names at the top level count, so text in the answer that looks like a usage
/// report (inside a string, or in a nested object) is never taken for one.
#[derive(Debug, Default)]
pub struct JsonUsageScan {
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// At the top level, the next string is a member name.
    expect_key: bool,
    /// Reading a top-level member name.
    in_key: bool,
    /// The member name so far (only whether it is `usage` matters).
    key: [u8; 5],
    key_len: usize,
    /// The last top-level name, while its `:` has not come yet.
    member_key: Member,
    /// Whose the next value is.
    member_value: Member,
    /// Whose value is being copied.
    captured_for: Member,
    capture: Capture,
    captured: Vec<u8>,
    usage: Option<Usage>,
    id: Option<String>,
}

impl JsonUsageScan {
    /// A scanner at the start of a body.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next piece of the body.
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut i = 0;
        while let Some(&b) = chunk.get(i) {
            if self.in_string
                && !self.escaped
                && !self.in_key
                && self.capture == Capture::Off
                && b != b'"'
                && b != b'\\'
            {
                // Text inside a string nobody keeps (the answer itself): on to its next quote
                // or escape in one step.
                match chunk.get(i..).unwrap_or_default().iter().position(|c| *c == b'"' || *c == b'\\') {
                    Some(n) => i += n,
                    None => return,
                }
                continue;
            }
            self.byte(b);
            i += 1;
        }
    }

    fn byte(&mut self, b: u8) {
        if self.capture != Capture::Off {
            if self.captured.len() < MAX_USAGE_BYTES {
                self.captured.push(b);
            } else {
                // Too large to be a usage report: dropped, the structure is still followed.
                self.captured = Vec::new();
                self.capture = Capture::Off;
            }
        }
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
                if self.in_key {
                    self.in_key = false;
                    self.member_key = match &self.key[..self.key_len.min(5)] {
                        b"usage" if self.key_len == 5 => Member::Usage,
                        b"id" if self.key_len == 2 => Member::Id,
                        _ => Member::Other,
                    };
                } else if self.capture == Capture::Text {
                    self.finish();
                }
            } else if self.in_key {
                if let Some(k) = self.key.get_mut(self.key_len) {
                    *k = b;
                }
                self.key_len += 1;
            }
            return;
        }
        if b.is_ascii_whitespace() {
            return;
        }
        if self.member_value != Member::Other && b != b':' {
            self.captured_for = std::mem::take(&mut self.member_value);
            self.capture = match b {
                b'{' | b'[' => Capture::Composite,
                b'"' => Capture::Text,
                _ => Capture::Scalar,
            };
            self.captured.clear();
            self.captured.push(b);
        }
        match b {
            b'"' => {
                self.in_string = true;
                if self.depth == 1 && self.expect_key {
                    self.expect_key = false;
                    self.in_key = true;
                    self.key_len = 0;
                }
            }
            b'{' | b'[' => {
                self.depth = self.depth.saturating_add(1);
                self.expect_key = self.depth == 1 && b == b'{';
            }
            b'}' | b']' => {
                if self.depth == 1 && self.capture == Capture::Scalar {
                    self.captured.pop();
                    self.finish();
                }
                self.depth = self.depth.saturating_sub(1);
                if self.depth == 1 && self.capture == Capture::Composite {
                    self.finish();
                }
            }
            b',' if self.depth == 1 => {
                self.expect_key = true;
                if self.capture == Capture::Scalar {
                    self.captured.pop();
                    self.finish();
                }
            }
            b':' if self.depth == 1 && self.member_key != Member::Other => {
                self.member_value = std::mem::take(&mut self.member_key);
            }
            _ => {}
        }
    }

    /// The `usage` (or `id`) value is complete: read it (a later one replaces it).
    fn finish(&mut self) {
        self.capture = Capture::Off;
        match std::mem::take(&mut self.captured_for) {
            Member::Usage => {
                if let Ok(Some(u)) = serde_json::from_slice::<Option<UsageJson>>(&self.captured) {
                    self.usage = Some(u.usage());
                }
            }
            Member::Id => {
                if let Ok(id) = serde_json::from_slice::<String>(&self.captured) {
                    self.id = Some(id);
                }
            }
            Member::Other => {}
        }
        self.captured = Vec::new();
    }

    /// The provider's usage report, once one was read.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// The top-level `id` (a string), once one was read.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }
}

/// Incremental usage extraction from a `text/event-stream` body.
#[derive(Debug, Default)]
pub struct SseUsage {
    line: Vec<u8>,
    skipping: bool,
    usage: Option<Usage>,
    text_chars: u64,
    done: bool,
    /// A Responses API stream's response id (from its first event that carries one).
    response_id: Option<String>,
}

impl SseUsage {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next chunk of the stream, exactly as it arrived.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        while let Some(nl) = chunk.iter().position(|b| *b == b'\n') {
            let (head, rest) = chunk.split_at(nl);
            if !self.skipping {
                if self.line.is_empty() {
                    self.line_done(head);
                } else {
                    let mut line = std::mem::take(&mut self.line);
                    line.extend_from_slice(head);
                    self.line_done(&line);
                    line.clear();
                    self.line = line;
                }
            }
            self.skipping = false;
            chunk = rest.get(1..).unwrap_or_default();
        }
        if !self.skipping {
            if self.line.len() + chunk.len() > MAX_LINE_BYTES {
                self.line.clear();
                self.skipping = true;
            } else {
                self.line.extend_from_slice(chunk);
            }
        }
    }

    fn line_done(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else { return };
        let data = data.strip_prefix(b" ").unwrap_or(data);
        if data == b"[DONE]" {
            self.done = true;
            return;
        }
        let Ok(event) = serde_json::from_slice::<Event<'_>>(data) else { return };
        if let Some(u) = &event.usage {
            self.usage = Some(u.usage());
        }
        if let Some(r) = &event.response {
            if let Some(u) = &r.usage {
                self.usage = Some(u.usage());
            }
            if self.response_id.is_none() {
                self.response_id = r.id.as_deref().map(str::to_string);
            }
            // A Responses stream has no `[DONE]`: its last event is one of these.
            if matches!(event.kind.as_deref(), Some("response.completed" | "response.failed" | "response.incomplete")) {
                self.done = true;
            }
        }
        self.text_chars += event.text_chars();
    }

    /// A Responses API stream's response id, once its first event was read.
    pub fn response_id(&self) -> Option<&str> {
        self.response_id.as_deref()
    }

    /// Whether the stream's end was seen: chat's `[DONE]` marker, or a Responses stream's last
    /// event.
    pub fn saw_done(&self) -> bool {
        self.done
    }

    /// The usage so far: the provider's last report, or an estimate from the text streamed.
    pub fn usage(&self) -> Usage {
        self.usage.unwrap_or(Usage {
            output_tokens: estimate_tokens(self.text_chars),
            estimated: true,
            ..Usage::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello \\\"wor\"}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ld\\\"\"}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,\"total_tokens\":15,",
        "\"prompt_tokens_details\":{\"cached_tokens\":4},\"completion_tokens_details\":{\"reasoning_tokens\":1}}}\n\n",
        "data: [DONE]\n\n",
    );

    fn expected() -> Usage {
        Usage { input_tokens: 12, output_tokens: 3, cached_tokens: 4, reasoning_tokens: 1, estimated: false }
    }

    #[test]
    fn usage_chunk_is_found_whatever_the_chunking() {
        let bytes = STREAM.as_bytes();
        for size in [1, 2, 3, 7, 16, 64, bytes.len()] {
            let mut p = SseUsage::new();
            for c in bytes.chunks(size) {
                p.feed(c);
            }
            assert_eq!(p.usage(), expected(), "chunks of {size}");
            assert!(p.saw_done());
        }
    }

    #[test]
    fn crlf_framing_works() {
        let mut p = SseUsage::new();
        p.feed(STREAM.replace('\n', "\r\n").as_bytes());
        assert_eq!(p.usage(), expected());
    }

    #[test]
    fn no_usage_is_estimated_from_text() {
        let without: String = STREAM.lines().filter(|l| !l.contains("usage")).map(|l| format!("{l}\n")).collect();
        let mut p = SseUsage::new();
        p.feed(without.as_bytes());
        let u = p.usage();
        assert!(u.estimated);
        // "Hello \"world\"" is 13 characters → 4 tokens.
        assert_eq!(u.output_tokens, 4);
    }

    #[test]
    fn huge_lines_are_skipped_without_growing_memory() {
        let mut p = SseUsage::new();
        p.feed(b"data: {\"x\":\"");
        for _ in 0..(MAX_LINE_BYTES / 1000 + 2) {
            p.feed(&[b'a'; 1000]);
        }
        assert!(p.line.len() <= MAX_LINE_BYTES);
        p.feed(b"\"}\n");
        p.feed(STREAM.as_bytes());
        assert_eq!(p.usage(), expected(), "parsing resumes after the long line");
    }

    /// A chat answer of about `pad` bytes of logprobs, with text that looks like usage reports
    /// inside strings and nested objects, and the real report last.
    fn big_answer(pad: usize) -> Vec<u8> {
        let mut b = br#"{"id":"c","choices":[{"index":0,"message":{"content":"say \"usage\":{\"completion_tokens\":1}"},"logprobs":{"content":["#.to_vec();
        let entry = br#"{"token":"ab","logprob":-0.25,"usage":{"completion_tokens":2},"top_logprobs":[{"token":"}]\"","logprob":-1}]},"#;
        while b.len() < pad {
            b.extend_from_slice(entry);
        }
        b.extend_from_slice(br#"{"token":"end","logprob":0}]}}],"usage" : {"prompt_tokens":12,"completion_tokens":3,"total_tokens":15,"#);
        b.extend_from_slice(
            br#""prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":1}}}"#,
        );
        b
    }

    #[test]
    fn the_top_level_usage_of_a_body_is_found_in_pieces() {
        let body = big_answer(200_000);
        assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok(), "the test body is JSON");
        for size in [1, 7, 64, 4096, 65_536, body.len()] {
            let mut scan = JsonUsageScan::new();
            for c in body.chunks(size) {
                scan.feed(c);
            }
            assert_eq!(scan.usage(), Some(expected()), "chunks of {size}");
        }
        // First rather than last; spelled as responses/audio do.
        let mut scan = JsonUsageScan::new();
        scan.feed(br#"{"usage":{"input_tokens":9,"output_tokens":3},"text":"x"}"#);
        assert_eq!(scan.usage().map(|u| (u.input_tokens, u.output_tokens)), Some((9, 3)));
        // No report at the top level: nothing is invented from nested or quoted ones.
        for body in [
            &br#"{"choices":[{"usage":{"completion_tokens":2}}],"x":""usage":{"completion_tokens":1}"}"#[..],
            br#"{"usage":null,"choices":[]}"#,
            br#"{"usage":"lots"}"#,
            br#"[{"usage":{"completion_tokens":2}}]"#,
        ] {
            let mut scan = JsonUsageScan::new();
            scan.feed(body);
            assert_eq!(scan.usage(), None, "{}", String::from_utf8_lossy(body));
        }
        // A value too large to be a report is dropped, and scanning goes on past it.
        let mut scan = JsonUsageScan::new();
        scan.feed(br#"{"usage":{"pad":""#);
        scan.feed(&vec![b'a'; MAX_USAGE_BYTES + 10]);
        scan.feed(br#""},"more":1}"#);
        assert_eq!(scan.usage(), None);
        assert!(scan.captured.capacity() <= MAX_USAGE_BYTES + 1);
    }

    #[test]
    fn a_large_responses_answer_gives_its_top_level_id() {
        let mut body =
            br#"{"object":"response","output":[{"id":"msg_1","content":[{"text":"\"id\":\"resp_fake\""}]}"#.to_vec();
        body.extend_from_slice(br#"],"id" : "resp_\u0041bc","usage":{"input_tokens":3,"output_tokens":4}}"#);
        for size in [1, 5, body.len()] {
            let mut scan = JsonUsageScan::new();
            for c in body.chunks(size) {
                scan.feed(c);
            }
            assert_eq!(scan.id(), Some("resp_Abc"), "chunks of {size}");
            assert_eq!(scan.usage().map(|u| u.output_tokens), Some(4));
        }
        let (u, id) = from_json_response(&body);
        assert_eq!((u.map(|u| u.input_tokens), id.as_deref()), (Some(3), Some("resp_Abc")));
        // Without a report, a finished answer's output text is the estimate (its `text` member
        // is the format object, not text).
        let (u, _) = from_json_response(
            br#"{"id":"r","status":"completed","text":{"format":{"type":"text"}},"output":[{"type":"message","content":[{"type":"output_text","text":"12345678","annotations":[]}]}],"usage":null}"#,
        );
        assert_eq!(u, Some(Usage { output_tokens: 2, estimated: true, ..Usage::default() }));
        // A background create that has not run yet: nothing to estimate, the reservation holds.
        let (u, id) = from_json_response(br#"{"id":"resp_q","status":"queued","output":[],"usage":null}"#);
        assert_eq!((u, id.as_deref()), (None, Some("resp_q")));
    }

    #[test]
    fn json_bodies() {
        let chat = br#"{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#;
        assert_eq!(from_json(chat).unwrap().input_tokens, 5);
        let audio = br#"{"text":"hello","usage":{"type":"tokens","input_tokens":9,"output_tokens":3}}"#;
        let u = from_json(audio).unwrap();
        assert_eq!((u.input_tokens, u.output_tokens, u.estimated), (9, 3, false));
        let bare = br#"{"choices":[{"message":{"content":"12345678"}}]}"#;
        let u = from_json(bare).unwrap();
        assert_eq!((u.output_tokens, u.estimated), (2, true));
        assert!(from_json(b"\xff\xd8 binary").is_none());
        // A usage report counts even when the rest of the body is not the shape we know.
        let odd = br#"{"choices":5,"usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
        let u = from_json(odd).unwrap();
        assert_eq!((u.input_tokens, u.output_tokens, u.estimated), (3, 4, false));
        // Without one, the text is estimated; with neither, nothing is counted but it is JSON.
        let bare = br#"{"choices":[{"message":{"content":"12345678"}}],"usage":null}"#;
        assert_eq!(from_json(bare).unwrap(), Usage { output_tokens: 2, estimated: true, ..Usage::default() });
    }
}
