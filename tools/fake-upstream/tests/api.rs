//! Black-box tests: start the fake on 127.0.0.1:0 and talk to it over HTTP with reqwest.

use std::time::{Duration, Instant};

use fake_upstream::{Controls, FakeUpstream};
use futures::StreamExt;
use serde_json::{json, Value};

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn start() -> Result<(FakeUpstream, reqwest::Client), Box<dyn std::error::Error>> {
    Ok((FakeUpstream::start_local().await?, reqwest::Client::new()))
}

fn greeting(model: &str, said: &str) -> String {
    format!("Hello from the fake upstream (model {model}). You said: {said}")
}

/// Splits an SSE body into the payloads of its `data:` events, checking the framing strictly
/// (every event is exactly one `data: ` line terminated by a blank line).
fn sse_payloads(body: &str) -> Vec<String> {
    assert!(body.ends_with("\n\n"), "stream must end with a blank line: {body:?}");
    body[..body.len() - 2]
        .split("\n\n")
        .map(|event| {
            assert!(!event.contains('\n'), "one line per event: {event:?}");
            event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("event without `data: ` prefix: {event:?}"))
                .to_owned()
        })
        .collect()
}

fn json_events(payloads: &[String]) -> Vec<Value> {
    payloads
        .iter()
        .filter(|p| p.as_str() != "[DONE]")
        .map(|p| serde_json::from_str(p).unwrap_or_else(|e| panic!("bad JSON {p:?}: {e}")))
        .collect()
}

/// Minimal standard base64 decoder (tests only; the crate has no base64 dependency).
fn b64decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("invalid base64 char {c}"),
        }
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let digits: Vec<u8> = chunk.iter().copied().filter(|c| *c != b'=').collect();
        let mut n = 0u32;
        for (i, d) in digits.iter().enumerate() {
            n |= val(*d) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..digits.len()]);
    }
    out
}

async fn error_of(resp: reqwest::Response) -> Result<(u16, Value), reqwest::Error> {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await?;
    Ok((status, body["error"].clone()))
}

#[tokio::test]
async fn chat_completion_json_with_usage() -> TestResult {
    let (up, http) = start().await?;
    assert!(up.base_url().starts_with("http://127.0.0.1:"));
    assert!(up.base_url().ends_with("/v1"));
    let resp = http
        .post(format!("{}/chat/completions", up.base_url()))
        .json(&json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "first question"}]},
                {"role": "assistant", "content": null},
                {"role": "user", "content": "hello there friend"}
            ]
        }))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(resp.headers().contains_key("x-request-id"));
    let body: Value = resp.json().await?;
    let expected = greeting("gpt-4o-mini", "hello there friend");
    assert!(body["id"].as_str().is_some_and(|id| id.starts_with("chatcmpl-")));
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].as_u64().is_some_and(|c| c > 1_600_000_000));
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["choices"][0]["index"], 0);
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], expected.as_str());
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // 2 + 2 + 0 + 3 words in the prompt; the answer's words are the completion.
    let completion = expected.split_whitespace().count() as u64;
    assert_eq!(body["usage"]["prompt_tokens"], 7);
    assert_eq!(body["usage"]["completion_tokens"], completion);
    assert_eq!(body["usage"]["total_tokens"], 7 + completion);

    // Same endpoint without the /v1 prefix, with a token limit.
    let body: Value = http
        .post(format!("{}/chat/completions", up.url()))
        .json(&json!({
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "max_completion_tokens": 3
        }))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from the");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["prompt_tokens"], 1);
    assert_eq!(body["usage"]["completion_tokens"], 3);
    Ok(())
}

#[tokio::test]
async fn chat_stream_framing_with_usage_and_done() -> TestResult {
    let (up, http) = start().await?;
    let resp = http
        .post(format!("{}/chat/completions", up.base_url()))
        .header("x-fake-chunks", "3")
        .json(&json!({
            "model": "fake-model",
            "messages": [{"role": "user", "content": "one two three four"}],
            "stream": true,
            "stream_options": {"include_usage": true}
        }))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let payloads = sse_payloads(&resp.text().await?);
    // role, 3 content chunks, finish, usage, [DONE]
    assert_eq!(payloads.len(), 7, "{payloads:#?}");
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    let events = json_events(&payloads);
    let id = events[0]["id"].clone();
    for e in &events {
        assert_eq!(e["object"], "chat.completion.chunk");
        assert_eq!(e["id"], id);
        assert_eq!(e["model"], "fake-model");
        assert_eq!(e["created"], events[0]["created"]);
    }
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String =
        events[1..4].iter().map(|e| e["choices"][0]["delta"]["content"].as_str().unwrap_or("")).collect();
    let expected = greeting("fake-model", "one two three four");
    assert_eq!(text, expected);
    assert_eq!(events[4]["choices"][0]["finish_reason"], "stop");
    assert_eq!(events[4]["choices"][0]["delta"], json!({}));
    assert_eq!(events[5]["choices"], json!([]));
    assert_eq!(events[5]["usage"]["prompt_tokens"], 4);
    let words = expected.split_whitespace().count() as u64;
    assert_eq!(events[5]["usage"]["completion_tokens"], words);
    assert_eq!(events[5]["usage"]["total_tokens"], 4 + words);
    assert!(events[..5].iter().all(|e| e.get("usage").is_none()));

    // Without include_usage, and with include_usage but x-fake-no-usage: no usage chunk.
    for (include, no_usage) in [(false, "0"), (true, "1")] {
        let body = http
            .post(format!("{}/chat/completions", up.base_url()))
            .header("x-fake-no-usage", no_usage)
            .json(&json!({
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
                "stream": true,
                "stream_options": {"include_usage": include}
            }))
            .send()
            .await?
            .text()
            .await?;
        let payloads = sse_payloads(&body);
        assert_eq!(payloads.len(), 1 + 5 + 1 + 1, "default is 5 content chunks");
        assert!(json_events(&payloads).iter().all(|e| e.get("usage").is_none()));
    }
    Ok(())
}

#[tokio::test]
async fn stream_chunks_arrive_over_time() -> TestResult {
    let (up, http) = start().await?;
    let started = Instant::now();
    let resp = http
        .post(format!("{}/chat/completions", up.base_url()))
        .header("x-fake-chunk-delay-ms", "150")
        .header("x-fake-chunks", "4")
        .json(&json!({
            "model": "m",
            "messages": [{"role": "user", "content": "stream please"}],
            "stream": true
        }))
        .send()
        .await?;
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.ok_or("empty stream")??;
    let first_at = started.elapsed();
    let first = String::from_utf8(first.to_vec())?;
    assert!(first.starts_with("data: {"), "{first:?}");
    assert!(!first.contains("[DONE]"));
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk?);
    }
    let total = started.elapsed();
    // 7 events (role, 4 content, finish, [DONE]) → 6 gaps of 150 ms.
    assert!(first_at < Duration::from_millis(450), "first chunk at {first_at:?}");
    assert!(total >= Duration::from_millis(880), "whole stream took {total:?}");
    let all = first + std::str::from_utf8(&rest)?;
    assert_eq!(sse_payloads(&all).len(), 7);
    Ok(())
}

#[tokio::test]
async fn legacy_completions_json_and_stream() -> TestResult {
    let (up, http) = start().await?;
    let body: Value = http
        .post(format!("{}/completions", up.base_url()))
        .json(&json!({"model": "gpt-3.5-turbo-instruct", "prompt": "say this"}))
        .send()
        .await?
        .json()
        .await?;
    let expected = greeting("gpt-3.5-turbo-instruct", "say this");
    assert_eq!(body["object"], "text_completion");
    assert!(body["id"].as_str().is_some_and(|id| id.starts_with("cmpl-")));
    assert_eq!(body["choices"][0]["text"], expected.as_str());
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 2);

    let text = http
        .post(format!("{}/completions", up.base_url()))
        .json(&json!({
            "model": "m",
            "prompt": ["a b c"],
            "stream": true,
            "stream_options": {"include_usage": true}
        }))
        .send()
        .await?
        .text()
        .await?;
    let payloads = sse_payloads(&text);
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    let events = json_events(&payloads);
    assert_eq!(events.len(), 5 + 1 + 1);
    let streamed: String = events[..5].iter().map(|e| e["choices"][0]["text"].as_str().unwrap_or("")).collect();
    assert_eq!(streamed, greeting("m", "a b c"));
    assert_eq!(events[5]["choices"][0]["finish_reason"], "stop");
    assert_eq!(events[6]["choices"], json!([]));
    assert_eq!(events[6]["usage"]["prompt_tokens"], 3);
    Ok(())
}

#[tokio::test]
async fn embeddings_float_and_base64() -> TestResult {
    let (up, http) = start().await?;
    let url = format!("{}/embeddings", up.base_url());
    let float: Value = http
        .post(&url)
        .json(&json!({"model": "text-embedding-3-small", "input": ["a b", "c"]}))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(float["object"], "list");
    assert_eq!(float["model"], "text-embedding-3-small");
    assert_eq!(float["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
    let data = float["data"].as_array().ok_or("data")?;
    assert_eq!(data.len(), 2);
    let vectors: Vec<Vec<f32>> = data
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["object"], "embedding");
            assert_eq!(d["index"], i);
            serde_json::from_value(d["embedding"].clone()).unwrap_or_default()
        })
        .collect();
    assert_eq!(vectors[0].len(), 8);
    assert_ne!(vectors[0], vectors[1]);

    // Deterministic: same text, same vector (also as a single string input).
    let single: Value = http.post(&url).json(&json!({"model": "e", "input": "a b"})).send().await?.json().await?;
    let v: Vec<f32> = serde_json::from_value(single["data"][0]["embedding"].clone())?;
    assert_eq!(v, vectors[0]);

    let b64: Value = http
        .post(&url)
        .json(&json!({"model": "e", "input": ["a b", "c"], "encoding_format": "base64"}))
        .send()
        .await?
        .json()
        .await?;
    for (i, expected) in vectors.iter().enumerate() {
        let encoded = b64["data"][i]["embedding"].as_str().ok_or("base64 string")?;
        let bytes = b64decode(encoded);
        assert_eq!(bytes.len(), 32);
        let decoded: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(&decoded, expected);
    }

    let dims: Value = http
        .post(&url)
        .json(&json!({"model": "e", "input": [[1, 2, 3]], "dimensions": 16}))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(dims["data"][0]["embedding"].as_array().map(Vec::len), Some(16));
    assert_eq!(dims["usage"]["prompt_tokens"], 3);

    let (status, err) =
        error_of(http.post(&url).json(&json!({"model": "e", "input": "x", "encoding_format": "hex"})).send().await?)
            .await?;
    assert_eq!(status, 400);
    assert_eq!(err["param"], "encoding_format");
    Ok(())
}

#[tokio::test]
async fn multipart_transcription() -> TestResult {
    let (up, http) = start().await?;
    let url = format!("{}/audio/transcriptions", up.base_url());
    let form = |format: Option<&str>| {
        let mut f = reqwest::multipart::Form::new()
            .part("file", reqwest::multipart::Part::bytes(vec![7u8; 1234]).file_name("speech.mp3"))
            .text("model", "whisper-1");
        if let Some(format) = format {
            f = f.text("response_format", format.to_owned());
        }
        f
    };
    let expected = "fake transcription of 1234 bytes with model whisper-1";

    let json: Value = http.post(&url).multipart(form(None)).send().await?.json().await?;
    assert_eq!(json["text"], expected);
    assert_eq!(json["usage"]["type"], "tokens");
    assert_eq!(json["usage"]["input_tokens"], 13);
    assert_eq!(json["usage"]["output_tokens"], 8);
    assert_eq!(json["usage"]["total_tokens"], 21);

    let resp = http.post(&url).multipart(form(Some("text"))).send().await?;
    assert!(resp.headers()["content-type"].to_str()?.starts_with("text/plain"));
    assert_eq!(resp.text().await?, expected);

    let verbose: Value = http.post(&url).multipart(form(Some("verbose_json"))).send().await?.json().await?;
    assert_eq!(verbose["text"], expected);
    assert_eq!(verbose["language"], "english");
    assert!(verbose["duration"].as_f64().is_some_and(|d| d > 0.0));
    assert_eq!(verbose["segments"], json!([]));

    let no_usage: Value =
        http.post(&url).header("x-fake-no-usage", "1").multipart(form(None)).send().await?.json().await?;
    assert_eq!(no_usage, json!({"text": expected}));

    let streamed = http.post(&url).multipart(form(None).text("stream", "true")).send().await?;
    assert_eq!(streamed.headers()["content-type"], "text/event-stream");
    let events = json_events(&sse_payloads(&streamed.text().await?));
    let (done, deltas) = events.split_last().ok_or("no events")?;
    assert_eq!(deltas.len(), 5);
    let text: String = deltas
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "transcript.text.delta");
            e["delta"].as_str().unwrap_or("")
        })
        .collect();
    assert_eq!(text, expected);
    assert_eq!(done["type"], "transcript.text.done");
    assert_eq!(done["text"], expected);
    assert_eq!(done["usage"]["total_tokens"], 21);

    // Not multipart → 400 OpenAI error.
    let (status, err) = error_of(http.post(&url).json(&json!({"model": "whisper-1"})).send().await?).await?;
    assert_eq!(status, 400);
    assert_eq!(err["type"], "invalid_request_error");

    // Multipart without a file.
    let (status, err) =
        error_of(http.post(&url).multipart(reqwest::multipart::Form::new().text("model", "whisper-1")).send().await?)
            .await?;
    assert_eq!(status, 400);
    assert_eq!(err["param"], "file");
    Ok(())
}

#[tokio::test]
async fn speech_returns_streamed_audio_bytes() -> TestResult {
    let (up, http) = start().await?;
    let url = format!("{}/audio/speech", up.base_url());
    let resp =
        http.post(&url).json(&json!({"model": "tts-1", "input": "Hello audio", "voice": "alloy"})).send().await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "audio/mpeg");
    let bytes = resp.bytes().await?;
    let mut expected = b"FAKE-AUDIO mp3 tts-1\n".to_vec();
    for _ in 0..4 {
        expected.extend_from_slice(b"Hello audio");
    }
    assert_eq!(bytes.as_ref(), expected.as_slice());

    let resp = http
        .post(&url)
        .json(&json!({"model": "tts-1", "input": "Hi", "voice": "alloy", "response_format": "wav"}))
        .send()
        .await?;
    assert_eq!(resp.headers()["content-type"], "audio/wav");
    let wav = resp.bytes().await?;
    assert_eq!(&wav[..4], b"RIFF");
    assert_eq!(&wav[44..], b"HiHiHiHi");

    // Chunked with a delay: takes at least (chunks - 1) * delay.
    let started = Instant::now();
    let resp = http
        .post(&url)
        .header("x-fake-chunks", "3")
        .header("x-fake-chunk-delay-ms", "100")
        .json(&json!({"model": "tts-1", "input": "Hello audio", "voice": "alloy"}))
        .send()
        .await?;
    let mut stream = resp.bytes_stream();
    let mut pieces = 0;
    let mut total = Vec::new();
    while let Some(chunk) = stream.next().await {
        total.extend_from_slice(&chunk?);
        pieces += 1;
    }
    assert!(started.elapsed() >= Duration::from_millis(190));
    assert!(pieces >= 2, "audio should arrive in several pieces");
    assert_eq!(total, expected);

    let (status, err) =
        error_of(http.post(&url).json(&json!({"model": "tts-1", "voice": "alloy"})).send().await?).await?;
    assert_eq!(status, 400);
    assert_eq!(err["param"], "input");
    Ok(())
}

#[tokio::test]
async fn image_generation() -> TestResult {
    let (up, http) = start().await?;
    let body: Value = http
        .post(format!("{}/images/generations", up.base_url()))
        .json(&json!({"model": "gpt-image-1", "prompt": "a red dot", "n": 2, "size": "1024x1024"}))
        .send()
        .await?
        .json()
        .await?;
    assert!(body["created"].is_u64());
    let data = body["data"].as_array().ok_or("data")?;
    assert_eq!(data.len(), 2);
    for item in data {
        let png = b64decode(item["b64_json"].as_str().ok_or("b64_json")?);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
    }
    assert_eq!(body["usage"]["input_tokens"], 3);
    assert_eq!(body["usage"]["output_tokens"], 2);
    assert_eq!(body["usage"]["total_tokens"], 5);

    let url_form: Value = http
        .post(format!("{}/images/generations", up.base_url()))
        .json(&json!({"prompt": "x", "response_format": "url"}))
        .send()
        .await?
        .json()
        .await?;
    assert!(url_form["data"][0]["url"].as_str().is_some_and(|u| u.starts_with("data:image/png;base64,")));
    Ok(())
}

#[tokio::test]
async fn models_list_and_retrieve() -> TestResult {
    let (up, http) = start().await?;
    let body: Value = http.get(format!("{}/models", up.base_url())).send().await?.json().await?;
    assert_eq!(body["object"], "list");
    let data = body["data"].as_array().ok_or("data")?;
    assert!(data.iter().any(|m| m["id"] == "fake-model"));
    for m in data {
        assert_eq!(m["object"], "model");
        assert_eq!(m["owned_by"], "fake-upstream");
        assert!(m["created"].is_u64());
    }
    let one: Value = http.get(format!("{}/models/some-model", up.url())).send().await?.json().await?;
    assert_eq!(one["id"], "some-model");
    let encoded: Value = http.get(format!("{}/models/org%2Fmodel", up.base_url())).send().await?.json().await?;
    assert_eq!(encoded["id"], "org/model");
    Ok(())
}

#[tokio::test]
async fn header_controls() -> TestResult {
    let (up, http) = start().await?;
    let chat = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let url = format!("{}/chat/completions", up.base_url());

    for (status, kind) in [
        (400, "invalid_request_error"),
        (401, "invalid_request_error"),
        (403, "permission_denied_error"),
        (404, "not_found_error"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "server_error"),
        (503, "server_error"),
        (504, "timeout_error"),
    ] {
        let (got, err) =
            error_of(http.post(&url).header("x-fake-status", status.to_string()).json(&chat).send().await?).await?;
        assert_eq!(got, status);
        assert_eq!(err["type"], kind, "status {status}");
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(err.get("param").is_some() && err.get("code").is_some());
    }
    let (_, err) = error_of(
        http.post(&url)
            .header("x-fake-status", "429")
            .header("x-fake-error-message", "slow down")
            .json(&chat)
            .send()
            .await?,
    )
    .await?;
    assert_eq!(err["message"], "slow down");
    assert_eq!(err["code"], "rate_limit_exceeded");

    // The status control applies to every endpoint, even ones with invalid bodies.
    let (got, _) = error_of(
        http.post(format!("{}/embeddings", up.base_url()))
            .header("x-fake-status", "503")
            .body("not json")
            .send()
            .await?,
    )
    .await?;
    assert_eq!(got, 503);

    let started = Instant::now();
    let resp = http.post(&url).header("x-fake-latency-ms", "300").json(&chat).send().await?;
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    let body: Value = http.post(&url).header("x-fake-no-usage", "1").json(&chat).send().await?.json().await?;
    assert!(body.get("usage").is_none());
    assert!(body["choices"][0]["message"]["content"].is_string());

    let (got, _) = error_of(http.post(&url).header("x-fake-latency-ms", "soon").json(&chat).send().await?).await?;
    assert_eq!(got, 400);

    // Server-wide defaults, overridden per request by headers.
    up.set_defaults(Controls { status: Some(500), ..Controls::default() });
    let resp = http.post(&url).json(&chat).send().await?;
    assert_eq!(resp.status(), 500);
    let resp = http.post(&url).header("x-fake-status", "418").json(&chat).send().await?;
    assert_eq!(resp.status(), 418);
    up.set_defaults(Controls::default());
    assert_eq!(http.post(&url).json(&chat).send().await?.status(), 200);

    // Defaults through the control API.
    let resp =
        http.post(format!("{}/_fake/controls", up.url())).json(&json!({"no_usage": true, "chunks": 2})).send().await?;
    assert_eq!(resp.status(), 200);
    let body: Value = http.post(&url).json(&chat).send().await?.json().await?;
    assert!(body.get("usage").is_none());
    let current: Value = http.get(format!("{}/_fake/controls", up.url())).send().await?.json().await?;
    assert_eq!(current, json!({"no_usage": true, "chunks": 2}));
    let typo = http.post(format!("{}/_fake/controls", up.url())).json(&json!({"latency": 5})).send().await?;
    assert_eq!(typo.status(), 400);
    Ok(())
}

#[tokio::test]
async fn malformed_json_and_unknown_paths() -> TestResult {
    let (up, http) = start().await?;
    let (status, err) = error_of(
        http.post(format!("{}/chat/completions", up.base_url()))
            .header("content-type", "application/json")
            .body("{\"model\": ")
            .send()
            .await?,
    )
    .await?;
    assert_eq!(status, 400);
    assert_eq!(err["type"], "invalid_request_error");

    let (status, err) =
        error_of(http.post(format!("{}/chat/completions", up.base_url())).json(&json!({"model": "m"})).send().await?)
            .await?;
    assert_eq!(status, 400);
    assert_eq!(err["param"], "messages");

    let (status, err) = error_of(http.post(format!("{}/nope", up.base_url())).json(&json!({})).send().await?).await?;
    assert_eq!(status, 404);
    assert_eq!(err["type"], "not_found_error");
    Ok(())
}

#[tokio::test]
async fn required_api_key() -> TestResult {
    let (up, http) = start().await?;
    up.set_required_key(Some("sk-test".into()));
    let url = format!("{}/models", up.base_url());

    let (status, err) = error_of(http.get(&url).send().await?).await?;
    assert_eq!(status, 401);
    assert_eq!(err["type"], "invalid_request_error");
    assert_eq!(err["code"], "invalid_api_key");

    let (status, _) = error_of(http.get(&url).bearer_auth("sk-wrong").send().await?).await?;
    assert_eq!(status, 401);

    let resp = http.get(&url).bearer_auth("sk-test").send().await?;
    assert_eq!(resp.status(), 200);

    // The control API is never behind the key.
    let resp = http.get(format!("{}/_fake/requests", up.url())).send().await?;
    assert_eq!(resp.status(), 200);

    up.set_required_key(None);
    assert_eq!(http.get(&url).send().await?.status(), 200);
    Ok(())
}

#[tokio::test]
async fn requests_are_recorded() -> TestResult {
    let (up, http) = start().await?;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "remember me"}]});
    http.post(format!("{}/chat/completions?trace=1", up.base_url()))
        .header("X-Custom-Header", "Value-1")
        .json(&body)
        .send()
        .await?;
    http.post(format!("{}/unknown", up.base_url())).body("raw body").send().await?;
    http.post(format!("{}/chat/completions", up.base_url())).header("x-fake-status", "500").json(&body).send().await?;

    let recorded = up.requests();
    assert_eq!(recorded.len(), 3);
    let first = &recorded[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/v1/chat/completions?trace=1");
    assert_eq!(first.header("x-custom-header"), Some("Value-1"));
    assert!(first.headers.iter().any(|(n, v)| n == "x-custom-header" && v == "Value-1"));
    assert!(first.headers.iter().all(|(n, _)| *n == n.to_lowercase()));
    assert_eq!(first.json(), Some(body.clone()));
    assert_eq!(recorded[1].path, "/v1/unknown");
    assert_eq!(recorded[1].body, b"raw body");
    assert_eq!(recorded[2].header("x-fake-status"), Some("500"));

    // Over HTTP: body as a string, control-API calls are not recorded themselves.
    let wire: Value = http.get(format!("{}/_fake/requests", up.url())).send().await?.json().await?;
    let wire = wire.as_array().ok_or("array")?;
    assert_eq!(wire.len(), 3);
    assert_eq!(wire[1]["body"], "raw body");
    assert_eq!(wire[0]["path"], "/v1/chat/completions?trace=1");
    assert!(wire[0]["headers"].as_array().is_some_and(|h| h.contains(&json!(["x-custom-header", "Value-1"]))));

    let resp = http.delete(format!("{}/_fake/requests", up.url())).send().await?;
    assert_eq!(resp.status(), 204);
    assert!(up.requests().is_empty());

    // Only the most recent 1000 are kept, oldest first.
    for i in 0..1005 {
        http.get(format!("{}/models?i={i}", up.base_url())).send().await?;
    }
    let recorded = up.requests();
    assert_eq!(recorded.len(), 1000);
    assert_eq!(recorded[0].path, "/v1/models?i=5");
    assert_eq!(recorded[999].path, "/v1/models?i=1004");
    up.clear_requests();
    assert!(up.requests().is_empty());
    Ok(())
}

#[tokio::test]
async fn shutdown_stops_the_server() -> TestResult {
    let (up, http) = start().await?;
    let url = format!("{}/_fake/health", up.url());
    assert_eq!(http.get(&url).send().await?.text().await?, "ok");
    up.shutdown().await;
    // A fresh client: the old one may hold a pooled keep-alive connection.
    assert!(reqwest::Client::new().get(&url).send().await.is_err());
    Ok(())
}
