//! Every endpoint, through a real OpenAI client, streaming and not.

use crate::harness::{http, Harness, ADMIN_KEY, PROVIDER_KEY};
use async_openai::types::{
    AudioInput, ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs, CreateCompletionRequestArgs,
    CreateEmbeddingRequestArgs, CreateImageRequestArgs, CreateSpeechRequestArgs, CreateTranscriptionRequestArgs,
    EmbeddingInput, SpeechModel, Voice,
};
use fake_upstream::Controls;
use futures::StreamExt;
use std::time::{Duration, Instant};

fn chat_request(model: &str, stream: bool) -> async_openai::types::CreateChatCompletionRequest {
    let mut b = CreateChatCompletionRequestArgs::default();
    b.model(model).messages([ChatCompletionRequestUserMessageArgs::default()
        .content("hello there gateway")
        .build()
        .unwrap()
        .into()]);
    if stream {
        b.stream(true);
    }
    b.build().unwrap()
}

#[tokio::test]
async fn chat_completion_is_routed_with_provider_key_and_model() {
    let h = Harness::start().await;
    let (_, key) = h.create_token("chat", None).await;
    h.eventually(Duration::from_secs(5), || async {
        http().get(h.url("/v1/models")).bearer_auth(&key).send().await.map(|r| r.status() == 200).unwrap_or(false)
    })
    .await;
    h.upstream.clear_requests();
    let resp = h.openai(&key).chat().create(chat_request("chat-alias", false)).await.unwrap();
    let text = resp.choices[0].message.content.clone().unwrap();
    assert!(text.contains("hello there gateway"), "{text}");
    let usage = resp.usage.unwrap();
    assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0);

    let reqs = h.upstream.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.header("authorization"), Some(format!("Bearer {PROVIDER_KEY}").as_str()));
    assert_eq!(r.json().unwrap()["model"], "provider-chat", "alias resolved to the provider's name");
    let all_headers = format!("{:?}", r.headers);
    assert!(!all_headers.contains(&key), "the client's key never leaves the gateway");
    assert!(!all_headers.contains("x-aqueduct"), "no internal headers upstream");
}

#[tokio::test]
async fn chat_stream_flows_chunk_by_chunk() {
    let h = Harness::start().await;
    h.upstream.set_defaults(Controls { chunk_delay_ms: Some(300), chunks: Some(4), ..Default::default() });
    let start = Instant::now();
    let mut stream = h.openai(ADMIN_KEY).chat().create_stream(chat_request("chat", true)).await.unwrap();
    let mut first_at = None;
    let mut content = String::new();
    let mut n = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        n += 1;
        first_at.get_or_insert_with(|| start.elapsed());
        for c in chunk.choices {
            content.push_str(&c.delta.content.unwrap_or_default());
        }
    }
    let total = start.elapsed();
    let first = first_at.unwrap();
    assert!(n >= 5, "role + content chunks + finish, got {n}");
    assert!(content.contains("hello there gateway"), "{content}");
    // Four content chunks 300 ms apart plus the finish chunk: the stream takes >1.2 s, and the
    // first chunk must arrive long before it ends (nothing buffers the stream).
    assert!(total >= Duration::from_millis(1200), "total {total:?}");
    assert!(first + Duration::from_millis(900) < total, "first chunk at {first:?} of {total:?}");
}

#[tokio::test]
async fn completions_embeddings_images_speech_transcriptions_and_models() {
    let h = Harness::start().await;
    let client = h.openai(ADMIN_KEY);

    // Legacy completions, plain and streamed.
    let req = CreateCompletionRequestArgs::default().model("chat").prompt("say something").build().unwrap();
    let resp = client.completions().create(req).await.unwrap();
    assert!(!resp.choices[0].text.is_empty());
    let req =
        CreateCompletionRequestArgs::default().model("chat").prompt("say something").stream(true).build().unwrap();
    let mut s = client.completions().create_stream(req).await.unwrap();
    let mut text = String::new();
    while let Some(c) = s.next().await {
        for ch in c.unwrap().choices {
            text.push_str(&ch.text);
        }
    }
    assert!(!text.is_empty());

    // Embeddings.
    let req = CreateEmbeddingRequestArgs::default()
        .model("embed")
        .input(EmbeddingInput::StringArray(vec!["a".into(), "b c".into()]))
        .build()
        .unwrap();
    let resp = client.embeddings().create(req).await.unwrap();
    assert_eq!(resp.data.len(), 2);
    assert!(!resp.data[0].embedding.is_empty());

    // Images.
    let req = CreateImageRequestArgs::default()
        .model(async_openai::types::ImageModel::Other("image".into()))
        .prompt("a cat")
        .build()
        .unwrap();
    let resp = client.images().create(req).await.unwrap();
    assert_eq!(resp.data.len(), 1);

    // Speech: bytes come back.
    let req = CreateSpeechRequestArgs::default()
        .model(SpeechModel::Other("tts".into()))
        .input("read this aloud")
        .voice(Voice::Alloy)
        .build()
        .unwrap();
    let resp = client.audio().speech(req).await.unwrap();
    assert!(!resp.bytes.is_empty());

    // Transcriptions: multipart upload, model rewritten inside the form.
    h.upstream.clear_requests();
    let audio: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let req = CreateTranscriptionRequestArgs::default()
        .file(AudioInput::from_vec_u8("clip.wav".into(), audio.clone()))
        .model("whisper")
        .build()
        .unwrap();
    let resp = client.audio().transcribe(req).await.unwrap();
    assert!(resp.text.contains("20000 bytes"), "{}", resp.text);
    let up = &h.upstream.requests()[0];
    assert_eq!(up.path, "/v1/audio/transcriptions");
    let body = String::from_utf8_lossy(&up.body);
    assert!(body.contains("provider-whisper") && !body.contains("\r\nwhisper\r\n"));
    assert!(up.body.windows(audio.len()).any(|w| w == audio.as_slice()), "file bytes intact");

    // Models: answered by the filter from the policy.
    let list = client.models().list().await.unwrap();
    let ids: Vec<String> = list.data.into_iter().map(|m| m.id).collect();
    assert_eq!(ids, ["chat", "embed", "tts", "whisper", "image"]);
}

#[tokio::test]
async fn every_endpoint_also_works_without_v1() {
    let h = Harness::start().await;
    let c = http();
    let json_calls = [
        ("/chat/completions", serde_json::json!({"model":"chat","messages":[{"role":"user","content":"hi"}]})),
        ("/completions", serde_json::json!({"model":"chat","prompt":"hi"})),
        ("/embeddings", serde_json::json!({"model":"embed","input":"hi"})),
        ("/images/generations", serde_json::json!({"model":"image","prompt":"hi"})),
        ("/audio/speech", serde_json::json!({"model":"tts","input":"hi","voice":"alloy"})),
    ];
    for (path, body) in json_calls {
        h.upstream.clear_requests();
        let r = c.post(h.url(path)).bearer_auth(ADMIN_KEY).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(h.upstream.requests()[0].path, format!("/v1{path}"), "provider gets its base path");
    }
    let form = reqwest::multipart::Form::new()
        .text("model", "whisper")
        .part("file", reqwest::multipart::Part::bytes(vec![1u8; 100]).file_name("a.wav"));
    let r = c.post(h.url("/audio/transcriptions")).bearer_auth(ADMIN_KEY).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(h.url("/models")).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(h.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200, "health needs no key");
    assert_eq!(r.text().await.unwrap(), "ok");
}

#[tokio::test]
async fn query_strings_survive_the_path_rewrite() {
    let h = Harness::start().await;
    // The bare form has a route of its own (the base path goes in front): the same there.
    for (path, upstream) in
        [("/v1/embeddings?trace=1", "/v1/embeddings?trace=1"), ("/embeddings?trace=2", "/v1/embeddings?trace=2")]
    {
        let r = http()
            .post(h.url(path))
            .bearer_auth(ADMIN_KEY)
            .json(&serde_json::json!({"model":"embed","input":"x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(h.upstream.requests().last().unwrap().path, upstream, "{path}");
    }
}

/// Sends a chat request over HTTP/2 whose body ends with trailers (no data frame carries the
/// end of the stream); the status and body of the answer.
async fn chat_with_trailers(h: &Harness, key: &str, model: &str) -> (u16, serde_json::Value) {
    let tcp = tokio::net::TcpStream::connect(h.listen).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::post(format!("http://{}/v1/chat/completions", h.listen))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let (response, mut stream) = client.send_request(request, false).unwrap();
    let body = serde_json::json!({"model": model, "messages": [{"role": "user", "content": "ends in trailers"}]});
    stream.send_data(bytes::Bytes::from(body.to_string()), false).unwrap();
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", http::HeaderValue::from_static("abc"));
    stream.send_trailers(trailers).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response).await.expect("an answer").unwrap();
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        bytes.extend_from_slice(&chunk);
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    drop(client);
    driver.abort();
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("JSON: {}", String::from_utf8_lossy(&bytes))))
}

#[tokio::test]
async fn requests_ending_in_trailers_are_checked_and_routed_like_any_other() {
    let h = Harness::start().await;
    let (_, key) = h.create_token("trailers", None).await;
    h.eventually(Duration::from_secs(5), || async {
        http().get(h.url("/v1/models")).bearer_auth(&key).send().await.map(|r| r.status() == 200).unwrap_or(false)
    })
    .await;
    h.upstream.clear_requests();
    let (status, body) = chat_with_trailers(&h, &key, "chat-alias").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["choices"][0]["message"]["content"].as_str().unwrap().contains("ends in trailers"), "{body}");
    let seen = h.upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("authorization"), Some(format!("Bearer {PROVIDER_KEY}").as_str()));
    assert!(seen[0].body_text().contains("provider-chat"), "the model is rewritten: {}", seen[0].body_text());
    // The body is inspected too: an unknown model is refused, not forwarded.
    let (status, body) = chat_with_trailers(&h, &key, "no-such-model").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "model_not_found");
    assert_eq!(h.upstream.requests().len(), 1);
}
