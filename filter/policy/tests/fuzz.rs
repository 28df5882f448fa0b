//! Property-based fuzzing of the filter's body parsers: JSON inspection and the model rewrite,
//! multipart inspection and rewrite, and the SSE usage scan.
//!
//! Two invariants. The parsers never panic, on arbitrary bytes or on near-valid bodies
//! (duplicate and escaped keys, loose spellings, nulls, nesting, whitespace, BOMs, mutated
//! bytes, SSE split at every position). And a body the filter admits is forwarded so that every
//! provider reads the model the filter checked and rewrote to: the forwarded JSON is read with
//! first-wins, last-wins and case-insensitive (Go) member semantics, the forwarded multipart
//! with every reading of its part headers that some provider uses, and all must agree.
//!
//! `cargo test` runs a few hundred cases per property; `AQUEDUCT_FUZZ_CASES=1000000 cargo test
//! -p aqueduct-policy --release --test fuzz` (or `make fuzz`) runs more. A failure prints the
//! smallest input proptest shrank it to: keep it as a unit test next to the fix.

use aqueduct_policy::filter::ROUTE_HEADER;
use aqueduct_policy::host::MemHost;
use aqueduct_policy::request;
use aqueduct_policy::snapshot::{ModelSpec, PolicySnapshot, PrincipalSpec, Settings};
use aqueduct_policy::tokens::{hash_key, TokenTable};
use aqueduct_policy::usage::{self, SseUsage};
use aqueduct_policy::{Flow, Policy, RequestFilter};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde::de::{MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::rc::Rc;

const NOW_MS: i64 = 1_800_000_000_000;
const KEY: &str = "sk-fuzz";

/// Cases per property: `AQUEDUCT_FUZZ_CASES`, else `default`.
fn runner(default: u32) -> TestRunner {
    let cases = std::env::var("AQUEDUCT_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() })
}

/// (name, aliases, provider model): one model rewritten to a name that needs JSON escapes,
/// one whose provider name is the client's (the body is then forwarded untouched).
const MODELS: [(&str, &[&str], &str); 4] = [
    ("chat", &["chat-alias"], "provider-chat"),
    ("same", &[], "same"),
    ("whisper", &[], "provider-whisper"),
    ("quoted", &[], "pro\"vider\\é"),
];

fn policy() -> Rc<Policy> {
    let snap = PolicySnapshot {
        version: 1,
        created: 0,
        settings: Settings {
            max_body_bytes: 1 << 20,
            // A control plane to ask whose a `previous_response_id` is.
            identity_secret: "s".into(),
            ledger: aqueduct_policy::snapshot::LedgerSettings { cluster: "cp".into(), ..Default::default() },
            ..Settings::default()
        },
        models: MODELS
            .iter()
            .map(|(name, aliases, provider)| ModelSpec {
                name: (*name).into(),
                aliases: aliases.iter().map(|a| (*a).to_string()).collect(),
                provider_model: (*provider).into(),
                authorization: Some("Bearer sk-provider".into()),
                route: format!("route-{name}"),
                mode: None,
                request_limit_multiplier: 1.0,
            })
            .collect(),
        principals: vec![PrincipalSpec { user_id: 1, ..PrincipalSpec::default() }],
        tokens: TokenTable::build(vec![(hash_key(KEY), 1, None, 0)]),
        mcp_servers: Vec::new(),
        journal: None,
    };
    Rc::new(Policy::from_snapshot(snap).expect("policy"))
}

/// What the filter did with one request: refused it (status), or forwarded this body to the
/// provider of this model.
#[derive(Debug)]
enum Outcome {
    Refused,
    Forwarded { provider_model: &'static str, body: Vec<u8> },
}

/// How many cases a property forwarded and refused, printed at its end (a property whose
/// cases are all refused tests little).
#[derive(Default)]
struct Tally(std::cell::Cell<(u32, u32)>);

impl Tally {
    fn count(&self, o: &Outcome) {
        let (fwd, refused) = self.0.get();
        self.0.set(if matches!(o, Outcome::Refused) { (fwd, refused + 1) } else { (fwd + 1, refused) });
    }

    fn report(&self, what: &str) {
        let (fwd, refused) = self.0.get();
        eprintln!("{what}: {fwd} forwarded, {refused} refused");
        assert!(fwd > 0 && refused > 0, "{what}: the generator should produce both");
    }
}

fn route(policy: &Rc<Policy>, path: &str, content_type: &str, body: &[u8]) -> Result<Outcome, TestCaseError> {
    let headers = [("authorization", format!("Bearer {KEY}")), ("content-type", content_type.to_string())];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut h = MemHost::request("POST", path, &headers, body);
    let mut f = RequestFilter::new(Some(Rc::clone(policy)));
    let mut flow = f.on_request_headers(&mut h, body.is_empty(), NOW_MS);
    if h.reply.is_none() {
        prop_assert_eq!(flow, Flow::Pause);
        flow = f.on_request_body(&mut h, body.len(), true, || NOW_MS);
        if flow == Flow::Pause && h.reply.is_none() && !h.calls.is_empty() {
            // A Responses continuation waits for the control plane: say it is the caller's.
            flow = f.on_call_response(&mut h, Some(204), || NOW_MS);
        }
    }
    prop_assert!(h.replies <= 1, "one reply at most");
    if let Some((status, _, reply)) = &h.reply {
        prop_assert_eq!(flow, Flow::Pause);
        prop_assert!((400..500).contains(status), "refusals are client errors: {}", status);
        let v: serde_json::Value = serde_json::from_slice(reply).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(v["error"]["message"].is_string() && v["error"]["type"].is_string(), "{}", v);
        return Ok(Outcome::Refused);
    }
    prop_assert_eq!(flow, Flow::Continue);
    let route = h.header(ROUTE_HEADER).unwrap_or_default();
    let provider_model = MODELS
        .iter()
        .find(|(name, _, _)| route == format!("route-{name}"))
        .map(|m| m.2)
        .ok_or_else(|| TestCaseError::fail(format!("forwarded without a model route: {route:?}")))?;
    Ok(Outcome::Forwarded { provider_model, body: h.body })
}

// === JSON ===

/// The same name to a parser that matches member names without case (Go's `encoding/json`
/// folds ASCII case, `ſ` and the Kelvin sign; `ı` and `İ` are added to be strict).
fn folds_to(key: &str, name: &str) -> bool {
    let fold = |c: char| match c {
        '\u{17f}' => 's',
        '\u{212a}' => 'k',
        '\u{130}' | '\u{131}' => 'i',
        c => c.to_ascii_lowercase(),
    };
    key.chars().map(fold).eq(name.chars())
}

/// A JSON object's top-level members in order, duplicates kept: what providers choose from.
/// Values stay raw: nested strings may hold lone surrogate escapes, which Python reads, Go
/// replaces and serde_json's `Value` refuses; the filter forwards them as they came.
struct Members(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Every model a provider could read from a forwarded JSON body: the first `model` member,
/// the last, and the last to a case-insensitive parser.
fn provider_json_models(body: &[u8]) -> Result<Vec<serde_json::Value>, TestCaseError> {
    let Members(members) = serde_json::from_slice(body)
        .map_err(|e| TestCaseError::fail(format!("forwarded body is not JSON ({e}): {}", show(body))))?;
    let exact: Vec<&RawValue> = members.iter().filter(|(k, _)| k == "model").map(|(_, v)| &**v).collect();
    let folded = members.iter().rev().find(|(k, _)| folds_to(k, "model")).map(|(_, v)| &**v);
    Ok([exact.first().copied(), exact.last().copied(), folded]
        .into_iter()
        .map(|v| v.and_then(|v| serde_json::from_str(v.get()).ok()).unwrap_or_default())
        .collect())
}

/// Members the filter decides on may appear once, in one spelling, in a forwarded body.
fn check_decided_once(body: &[u8]) -> Result<(), TestCaseError> {
    check_once(body, &["model", "stream", "stream_options", "max_tokens", "max_completion_tokens", "user", "user_id"])
}

/// Each of `names` appears once at most, in one spelling, in `body`.
fn check_once(body: &[u8], names: &[&str]) -> Result<(), TestCaseError> {
    let Members(members) = serde_json::from_slice(body).map_err(|e| TestCaseError::fail(e.to_string()))?;
    for name in names {
        let n = members.iter().filter(|(k, _)| folds_to(k, name)).count();
        prop_assert!(n <= 1, "{} forwarded {} times: {}", name, n, show(body));
    }
    Ok(())
}

fn show(body: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(body))
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("model".to_string()),
        2 => select(vec!["messages", "temperature", "n", "metadata", "tools"]).prop_map(String::from),
        3 => select(vec![
            "mod\\u0065l", "\\u006dodel", "Model", "MODEL", "model ", "model\\u0000", "mod\\u0065L", "stream",
            "\u{17f}tream", "stream_options", "max_tokens", "max_to\\u212aens", "max_completion_tokens",
            "max_completıon_tokens", "user", "user_id", "User_Id", "messages", "metadata", "temperature",
            "previous_response_id", "Previous_Response_ID", "max_output_tokens", "max_output_to\\u212aens",
            "conversation", "input",
            "\\ud83d\\ude00", "\\ud800", "\\\"model\\\"", "",
        ])
        .prop_map(String::from),
        2 => "[a-zA-Z_]{0,8}",
    ]
}

fn json_scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => select(vec![
            "\"chat\"", "\"chat-alias\"", "\"same\"", "\"whisper\"", "\"quoted\"", "\"unknown\"", "\"ch\\u0061t\"",
            "\"chat \"", "\"\"", "\"CHAT\"", "\"chat\\u0000\"", "\"\\ud800\"", "\"é\"",
        ])
        .prop_map(String::from),
        3 => select(vec!["null", "true", "false", "0", "-1", "7", "1e400", "18446744073709551616", "1.5"])
            .prop_map(String::from),
        1 => any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
    ]
}

fn json_value() -> impl Strategy<Value = String> {
    json_scalar().prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((json_key(), inner), 0..4).prop_map(|m| {
                let members: Vec<String> = m.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
}

/// Byte edits applied to a near-valid body: (where, byte, how).
fn edits() -> impl Strategy<Value = Vec<(Index, u8, u8)>> {
    prop_oneof![3 => Just(Vec::new()), 1 => prop::collection::vec((any::<Index>(), any::<u8>(), 0..3u8), 1..4)]
}

fn mutate(mut body: Vec<u8>, edits: &[(Index, u8, u8)]) -> Vec<u8> {
    for (at, byte, how) in edits {
        let i = at.index(body.len() + 1);
        match how {
            0 => body.insert(i, *byte),
            1 if i < body.len() => body[i] = *byte,
            _ if i < body.len() => {
                body.remove(i);
            }
            _ => body.push(*byte),
        }
    }
    body
}

/// A near-valid chat request body.
fn json_body() -> impl Strategy<Value = Vec<u8>> {
    let ws = select(vec!["", " ", "\n", "\t ", "\r\n  "]);
    let model = prop_oneof![
        3 => select(vec!["\"chat\"", "\"chat-alias\"", "\"same\"", "\"quoted\"", "\"ch\\u0061t\""]).prop_map(String::from),
        1 => json_scalar(),
    ];
    (
        prop::collection::vec((json_key(), json_value(), ws.clone()), 0..5),
        model,
        any::<bool>(),
        ws,
        mostly("", vec!["\u{feff}", " "]),
        mostly("", vec![",", " x", "}"]),
        edits(),
    )
        .prop_map(|(members, model, model_first, ws, prefix, suffix, edits)| {
            let mut m: Vec<String> = members.into_iter().map(|(k, v, w)| format!("{w}\"{k}\"{w}:{w}{v}{w}")).collect();
            let model = format!("\"model\":{ws}{model}");
            if model_first {
                m.insert(0, model);
            } else {
                m.push(model);
            }
            mutate(format!("{prefix}{{{}}}{suffix}", m.join(",")).into_bytes(), &edits)
        })
}

#[test]
fn json_bodies_are_forwarded_as_the_provider_reads_them() {
    let policy = policy();
    let tally = Tally::default();
    runner(2000)
        .run(&json_body(), |body| {
            let outcome = route(&policy, "/v1/chat/completions", "application/json", &body)?;
            tally.count(&outcome);
            let Outcome::Forwarded { provider_model, body: forwarded } = outcome else { return Ok(()) };
            for read in provider_json_models(&forwarded)? {
                prop_assert_eq!(&read, provider_model, "client sent {}\nforwarded {}", show(&body), show(&forwarded));
            }
            check_decided_once(&forwarded)?;
            // Aqueduct's own end-user field is never forwarded, whatever else the body holds (a
            // body that cannot be rewritten without it is refused).
            let Members(members) =
                serde_json::from_slice(&forwarded).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(!members.iter().any(|(k, _)| k == "user_id"), "user_id forwarded: {}", show(&forwarded));
            Ok(())
        })
        .unwrap();
    tally.report("JSON");
}

#[test]
fn responses_bodies_are_forwarded_as_the_provider_reads_them() {
    let policy = policy();
    let tally = Tally::default();
    runner(2000)
        .run(&json_body(), |body| {
            let outcome = route(&policy, "/v1/responses", "application/json", &body)?;
            tally.count(&outcome);
            let Outcome::Forwarded { provider_model, body: forwarded } = outcome else { return Ok(()) };
            for read in provider_json_models(&forwarded)? {
                prop_assert_eq!(&read, provider_model, "client sent {}\nforwarded {}", show(&body), show(&forwarded));
            }
            let decided = [
                "model",
                "stream",
                "max_output_tokens",
                "previous_response_id",
                "tools",
                "conversation",
                "user",
                "user_id",
            ];
            check_once(&forwarded, &decided)?;
            let Members(members) =
                serde_json::from_slice(&forwarded).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(!members.iter().any(|(k, _)| k == "user_id"), "user_id forwarded: {}", show(&forwarded));
            Ok(())
        })
        .unwrap();
    tally.report("Responses JSON");
}

#[test]
fn json_inspection_never_panics_and_rewrites_to_valid_json() {
    let bytes = prop_oneof![json_body(), prop::collection::vec(any::<u8>(), 0..200)];
    runner(2000)
        .run(&(bytes, "[^\r]{1,12}"), |(body, provider)| {
            let Ok(f) = request::inspect_json(&body) else { return Ok(()) };
            let out = request::rewrite_json_model(&body, f.model_span, &provider);
            for read in provider_json_models(&out)? {
                prop_assert_eq!(read, serde_json::Value::String(provider.clone()));
            }
            let again = request::inspect_json(&out).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&again.model, &provider);
            // The other body edits stay valid JSON with one model.
            let removed = request::remove_json_member(&out, "user_id").unwrap_or_else(|_| out.clone());
            for edited in [request::request_stream_usage(&out, &again), removed] {
                check_decided_once(&edited)?;
                for read in provider_json_models(&edited)? {
                    prop_assert_eq!(read, serde_json::Value::String(provider.clone()));
                }
            }
            Ok(())
        })
        .unwrap();
}

// === multipart ===

/// `s` with RFC 2231 percent-escapes decoded (lossy).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every value a lenient parser could give to `key` in a header value: parameters split on `;`
/// outside quotes, names without case, quoted strings unescaped the Python way and the Go way,
/// RFC 2231 `key*` and `key*N` decoded.
fn param_readings(value: &str, key: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let (mut quoted, mut escaped, mut start) = (false, false, 0);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    let mut out = Vec::new();
    let mut continued = String::new();
    for p in parts.iter().skip(1) {
        let Some((k, v)) = p.split_once('=') else { continue };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        let unquoted = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
        let values = match unquoted {
            Some(inner) => {
                let python = inner.replace("\\\\", "\\").replace("\\\"", "\"");
                let mut go = String::new();
                let mut it = inner.chars();
                while let Some(c) = it.next() {
                    go.push(if c == '\\' { it.next().unwrap_or('\\') } else { c });
                }
                vec![python, go, inner.to_string()]
            }
            None => vec![v.to_string()],
        };
        if k == key {
            out.extend(values);
        } else if let Some(rest) = k.strip_prefix(key).and_then(|r| r.strip_prefix('*')) {
            for v in values {
                let text = v.rsplit('\'').next().unwrap_or_default();
                let decoded =
                    if rest.is_empty() || rest.ends_with('*') { percent_decode(text) } else { text.to_string() };
                if rest.is_empty() {
                    out.push(decoded);
                } else {
                    continued.push_str(&decoded);
                }
            }
        }
    }
    if !continued.is_empty() {
        out.push(continued);
    }
    out
}

/// The values of every part some provider could take for the `model` field, reading the
/// forwarded body with `boundary` leniently: a preamble, LF framing, padding after delimiters,
/// folded headers, several `Content-Disposition` headers, any disposition type.
fn provider_multipart_models(body: &[u8], boundary: &str) -> Vec<Vec<u8>> {
    let dash = format!("--{boundary}");
    let at_line_start = |i: usize| i == 0 || body[i - 1] == b'\n';
    let delimiter_end = |i: usize| -> Option<(usize, bool)> {
        // A delimiter at `i`: padding, then a line end (or `--` closes).
        let mut j = i + dash.len();
        if body.get(j..j + 2) == Some(b"--") {
            return Some((j + 2, true));
        }
        while matches!(body.get(j), Some(b' ' | b'\t')) {
            j += 1;
        }
        match body.get(j..) {
            Some([b'\r', b'\n', ..]) => Some((j + 2, false)),
            Some([b'\n', ..]) => Some((j + 1, false)),
            _ => None,
        }
    };
    let find_from = |from: usize| {
        (from..body.len().saturating_sub(dash.len() - 1))
            .find(|&i| body[i..].starts_with(dash.as_bytes()) && at_line_start(i) && delimiter_end(i).is_some())
    };
    let mut out = Vec::new();
    let Some(first) = find_from(0) else { return out };
    let Some((mut pos, mut closed)) = delimiter_end(first) else { return out };
    while !closed {
        let Some(next) = find_from(pos) else { break };
        // The value ends before the line break that precedes the next delimiter.
        let mut part_end = next;
        if part_end > pos && body[part_end - 1] == b'\n' {
            part_end -= 1;
            if part_end > pos && body[part_end - 1] == b'\r' {
                part_end -= 1;
            }
        }
        let part = &body[pos..part_end];
        let (head, value) = match (find_slice(part, b"\r\n\r\n"), find_slice(part, b"\n\n")) {
            (Some(a), Some(b)) if b < a => (&part[..b], &part[b + 2..]),
            (Some(a), _) => (&part[..a], &part[a + 4..]),
            (None, Some(b)) => (&part[..b], &part[b + 2..]),
            (None, None) if part.starts_with(b"\r\n") => (&part[..0], &part[2..]),
            (None, None) => (part, &part[part.len()..]),
        };
        let head = String::from_utf8_lossy(head).replace("\r\n", "\n");
        // Unfold continuation lines.
        let head = head.replace("\n ", " ").replace("\n\t", " ");
        let mut names = Vec::new();
        for line in head.split(['\n', '\r']) {
            if let Some((k, v)) = line.split_once(':') {
                if k.trim().eq_ignore_ascii_case("content-disposition") {
                    names.extend(param_readings(v, "name"));
                }
            }
        }
        if names.iter().any(|n| folds_to(n.trim(), "model")) {
            out.push(value.to_vec());
        }
        let Some((after, c)) = delimiter_end(next) else { break };
        pos = after;
        closed = c;
    }
    out
}

fn find_slice(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Mostly `usual`, sometimes one of `rare`.
fn mostly(usual: &'static str, rare: Vec<&'static str>) -> impl Strategy<Value = &'static str> + Clone {
    prop_oneof![3 => Just(usual), 1 => select(rare)]
}

/// A near-valid transcription upload: (content type, body, boundary).
fn multipart_body() -> impl Strategy<Value = (String, Vec<u8>, String)> {
    let disposition = mostly(
        "Content-Disposition: form-data; ",
        vec![
            "content-disposition: form-data; ",
            "CONTENT-DISPOSITION:form-data;",
            "Content-Disposition: attachment; ",
            "Content-Disposition : form-data; ",
            "Content-Disposition: form-data;\r\n ",
        ],
    );
    let name = prop_oneof![
        Just("name=\"file\"; filename=\"a.wav\""),
        select(vec!["name=\"prompt\"", "name=\"language\"", "name=\"stream\"", "name=\"user\"", "name=\"user_id\""]),
        select(vec![
            "name=\"model\"",
            "name=model",
            "NAME=\"model\"",
            "name = \"model\" ;",
            "name=\"Model\"",
            "name=\" model\"",
            "name=\"\u{17f}tream\"",
            "name*=utf-8''model",
            "name*=utf-8''%6dodel",
            "name*0=mo; name*1=del",
            "name=\"x\"; name=\"model\"",
            "name=\"model\"; name=\"x\"",
            "name=\"mo\\del\"",
            "name=\"mo\\\"del\"",
            "name=\"model\"; filename=\"m.txt\"",
            "name=\"file\"; filename*=UTF-8''%E2%82%AC.wav",
            "name=\"a;name=model\"",
        ]),
    ];
    let extra = mostly(
        "",
        vec![
            "\r\nContent-Type: text/plain; charset=utf-8",
            "\r\nContent-Transfer-Encoding: base64",
            "\r\nContent-Disposition: form-data; name=\"model\"",
            "\r\nX-Note: a\nContent-Disposition: form-data; name=\"model\"",
        ],
    );
    let value = select(vec![
        "chat",
        "chat-alias",
        "whisper",
        "same",
        "quoted",
        "unknown",
        " whisper\t",
        "true",
        "RIFF\0\u{1}binary",
        "\r\n--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nunknown",
        "--B",
        "",
    ]);
    let part = (disposition, name, extra, value).prop_map(|(d, n, e, v)| format!("{d}{n}{e}\r\n\r\n{v}"));
    let model_value = mostly("whisper", vec!["chat-alias", "same", "quoted", " chat ", "unknown", ""]);
    let boundary = mostly("B", vec!["----x7Yz", "a'b(c)+_,-./:=?"]);
    let content_type = mostly(
        "multipart/form-data; boundary={b}",
        vec![
            "multipart/form-data; boundary=\"{b}\"",
            "Multipart/Form-Data;BOUNDARY={b}",
            "multipart/form-data; boundary={b}; boundary=C",
            "multipart/form-data; boundary=C; boundary={b}",
            "multipart/form-data; boundary*={b}",
        ],
    );
    let framing = mostly("crlf", vec!["preamble", "lf", "padding", "epilogue", "unclosed"]);
    (
        prop::collection::vec(part, 0..4),
        prop_oneof![4 => (0usize..4).prop_map(Some), 1 => Just(None)],
        model_value,
        boundary,
        content_type,
        framing,
        edits(),
    )
        .prop_map(|(mut parts, model_at, model, b, ct, framing, edits)| {
            // Most bodies carry one plain model part somewhere.
            if let Some(at) = model_at {
                let at = at.min(parts.len());
                parts.insert(at, format!("Content-Disposition: form-data; name=\"model\"\r\n\r\n{model}"));
            }
            let mut body = String::new();
            if framing == "preamble" {
                body += "preamble\r\n";
            }
            for p in &parts {
                let pad = if framing == "padding" { " " } else { "" };
                body += &format!("--B{pad}\r\n{p}\r\n");
            }
            if framing != "unclosed" {
                body += "--B--\r\n";
            }
            if framing == "epilogue" {
                body += "--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nunknown\r\n--B--\r\n";
            }
            if framing == "lf" {
                body = body.replace("\r\n", "\n");
            }
            let body = body.replace("--B", &format!("--{b}"));
            (ct.replace("{b}", b), mutate(body.into_bytes(), &edits), b.to_string())
        })
}

#[test]
fn multipart_bodies_are_forwarded_as_every_provider_reads_them() {
    let policy = policy();
    let tally = Tally::default();
    runner(2000)
        .run(&multipart_body(), |(content_type, body, boundary)| {
            let outcome = route(&policy, "/v1/audio/transcriptions", &content_type, &body)?;
            tally.count(&outcome);
            let Outcome::Forwarded { provider_model, body: forwarded } = outcome else { return Ok(()) };
            // Whatever boundary a provider takes from the content type (the filter admits only
            // one), every part it could read as `model` holds the provider model.
            let mut boundaries = param_readings(&content_type, "boundary");
            boundaries.push(boundary);
            for b in boundaries.iter().filter(|b| !b.is_empty()) {
                let models = provider_multipart_models(&forwarded, b);
                for m in &models {
                    prop_assert_eq!(
                        m.as_slice(),
                        provider_model.as_bytes(),
                        "boundary {:?}; client sent {}\nforwarded {}",
                        b,
                        show(&body),
                        show(&forwarded)
                    );
                }
                if *b == boundaries[boundaries.len() - 1] {
                    prop_assert!(!models.is_empty(), "no model part forwarded: {}", show(&forwarded));
                }
            }
            Ok(())
        })
        .unwrap();
    tally.report("multipart");
}

#[test]
fn multipart_inspection_never_panics() {
    let cases = prop_oneof![
        multipart_body().prop_map(|(ct, body, _)| (ct, body)),
        (
            select(vec!["multipart/form-data; boundary=B", "multipart/form-data", "multipart/form-data; boundary=\""]),
            prop::collection::vec(select(vec![b'-', b'B', b'\r', b'\n', b'"', b';', b'=', b'a', b':', 0xff]), 0..120),
        )
            .prop_map(|(ct, body)| (ct.to_string(), body)),
        (any::<String>(), prop::collection::vec(any::<u8>(), 0..200)),
    ];
    runner(2000)
        .run(&(cases, any::<String>(), any::<bool>()), |((ct, body), provider, drop_user)| {
            let Ok(f) = request::inspect_multipart(&body, &ct) else { return Ok(()) };
            let remove = if drop_user { f.user_id_part } else { None };
            let out = request::rewrite_multipart_model(&body, f.model_span, &provider, remove);
            let provider = provider.trim();
            match request::inspect_multipart(&out, &ct) {
                // The rewritten body still reads, with the new model.
                Ok(g) => prop_assert_eq!(g.model.as_str(), provider),
                // Unless the new name itself breaks the framing or is empty.
                Err(_) => prop_assert!(provider.is_empty() || provider.contains('\r') || provider.contains("--")),
            }
            Ok(())
        })
        .unwrap();
}

// === SSE usage ===

fn sse_stream() -> impl Strategy<Value = Vec<u8>> {
    let event = select(vec![
        "data: {\"choices\":[{\"delta\":{\"content\":\"abc\"}}]}",
        "data:{\"choices\":[{\"delta\":{\"content\":\"h\\u00e9\",\"reasoning_content\":\"x\"}}]}",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3}}",
        "data: {\"usage\":{\"input_tokens\":9,\"output_tokens\":4,\"input_tokens_details\":{\"cached_tokens\":2}}}",
        "data: {\"type\":\"transcript.text.delta\",\"delta\":\"hello\"}",
        "data: {\"usage\":null}",
        "data: {\"usage\":{\"prompt_tokens\":-1}}",
        "data: {\"choices\":[{\"delta\":{\"content\":\"abc\"}}],\"usage\":{\"prompt_tokens\":1,\"prompt_tokens\":2}}",
        "data: [DONE]",
        "data: {bad json",
        ": keep-alive",
        "event: message",
        "id: 7",
        "",
    ]);
    (
        prop::collection::vec(event, 0..10),
        select(vec!["\n", "\r\n", "\n\n", "\r\n\r\n"]),
        select(vec!["", "\u{feff}"]),
        edits(),
    )
        .prop_map(|(events, nl, bom, edits)| {
            let mut s = String::from(bom);
            for e in events {
                s += e;
                s += nl;
            }
            mutate(s.into_bytes(), &edits)
        })
}

fn scan(chunks: &[&[u8]]) -> (usage::Usage, bool) {
    let mut p = SseUsage::new();
    for c in chunks {
        p.feed(c);
    }
    (p.usage(), p.saw_done())
}

#[test]
fn sse_usage_is_the_same_at_every_chunk_boundary() {
    let streams = prop_oneof![4 => sse_stream(), 1 => prop::collection::vec(any::<u8>(), 0..200)];
    runner(400)
        .run(&(streams, prop::collection::vec(any::<Index>(), 0..6)), |(stream, cuts)| {
            let whole = scan(&[&stream]);
            for i in 0..=stream.len() {
                prop_assert_eq!(scan(&[&stream[..i], &stream[i..]]), whole, "split at {} of {}", i, show(&stream));
            }
            // Several boundaries at once, empty chunks included.
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            at.sort_unstable();
            let mut chunks = Vec::new();
            let mut from = 0;
            for a in at {
                chunks.push(&stream[from..a]);
                from = a;
            }
            chunks.push(&stream[from..]);
            prop_assert_eq!(scan(&chunks), whole);
            // A JSON response body is read without panicking either.
            let _ = usage::from_json(&stream);
            Ok(())
        })
        .unwrap();
}
