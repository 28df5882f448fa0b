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

/// The parts of a response object (or stream event) that matter for usage.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(default)]
    usage: Option<UsageJson>,
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
        n += self.delta.as_deref().map_or(0, str::len) + self.text.as_deref().map_or(0, str::len);
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

/// Incremental usage extraction from a `text/event-stream` body.
#[derive(Debug, Default)]
pub struct SseUsage {
    line: Vec<u8>,
    skipping: bool,
    usage: Option<Usage>,
    text_chars: u64,
    done: bool,
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
        self.text_chars += event.text_chars();
    }

    /// Whether the stream's `[DONE]` marker was seen.
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
