//! The Responses API over HTTP (reqwest), and through the `async-openai` client's typed
//! responses and SSE parser.

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

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// Splits a Responses SSE body into `(event name, data)`, checking the framing strictly: every
/// event is an `event:` line and a `data:` line whose `type` is the event name.
fn sse_events(body: &str) -> Vec<(String, Value)> {
    assert!(body.ends_with("\n\n"), "stream must end with a blank line: {body:?}");
    assert!(!body.contains("[DONE]"), "the Responses API has no [DONE]");
    body[..body.len() - 2]
        .split("\n\n")
        .map(|event| {
            let (name, data) = event.split_once('\n').unwrap_or_else(|| panic!("two lines per event: {event:?}"));
            let name = name.strip_prefix("event: ").unwrap_or_else(|| panic!("no event line: {event:?}"));
            let data = data.strip_prefix("data: ").unwrap_or_else(|| panic!("no data line: {event:?}"));
            assert!(!data.contains('\n'), "one data line: {event:?}");
            let data: Value = serde_json::from_str(data).unwrap_or_else(|e| panic!("bad JSON {data:?}: {e}"));
            assert_eq!(data["type"], name, "{event:?}");
            (name.to_owned(), data)
        })
        .collect()
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

async fn error_of(resp: reqwest::Response) -> Result<(u16, Value), reqwest::Error> {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await?;
    Ok((status, body["error"].clone()))
}

async fn create(up: &FakeUpstream, http: &reqwest::Client, body: Value) -> Result<Value, Box<dyn std::error::Error>> {
    let resp = http.post(format!("{}/responses", up.base_url())).json(&body).send().await?;
    assert_eq!(resp.status(), 200);
    Ok(resp.json().await?)
}

async fn get(up: &FakeUpstream, http: &reqwest::Client, path: &str) -> Result<reqwest::Response, reqwest::Error> {
    http.get(format!("{}{path}", up.base_url())).send().await
}

async fn stream_body(resp: reqwest::Response) -> Result<String, Box<dyn std::error::Error>> {
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str()?.starts_with("text/event-stream"));
    Ok(resp.text().await?)
}

fn output_text(response: &Value) -> &str {
    response["output"][0]["content"][0]["text"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn create_json_is_stored_and_recorded() -> TestResult {
    let (up, http) = start().await?;
    let resp = http
        .post(format!("{}/responses", up.base_url()))
        .header("authorization", "Bearer sk-test")
        .json(&json!({"model": "gpt-4o-mini", "input": "hello there friend", "instructions": "be brief",
                      "metadata": {"k": "v"}}))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await?;
    let expected = greeting("gpt-4o-mini", "hello there friend");
    let id = body["id"].as_str().ok_or("id")?;
    assert!(id.starts_with("resp_"));
    assert_eq!(body["object"], "response");
    assert!(body["created_at"].as_u64().is_some_and(|c| c > 1_600_000_000));
    assert_eq!(body["status"], "completed");
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["instructions"], "be brief");
    assert_eq!(body["metadata"], json!({"k": "v"}));
    assert_eq!(body["text"]["format"]["type"], "text");
    assert_eq!(body["tools"], json!([]));
    assert_eq!(body["tool_choice"], "auto");
    assert_eq!(body["parallel_tool_calls"], true);
    assert_eq!(body["store"], true);
    assert_eq!(body["background"], false);
    assert!(body["error"].is_null() && body["incomplete_details"].is_null() && body["previous_response_id"].is_null());
    let message = &body["output"][0];
    assert_eq!(body["output"].as_array().map(Vec::len), Some(1));
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["status"], "completed");
    assert!(message["id"].as_str().is_some_and(|id| id.starts_with("msg_")));
    assert_eq!(message["content"][0]["type"], "output_text");
    assert_eq!(message["content"][0]["annotations"], json!([]));
    assert_eq!(output_text(&body), expected);
    // Input: 2 instruction words + 3 input words; output: the answer's words.
    let usage = &body["usage"];
    assert_eq!(usage["input_tokens"], 5);
    assert_eq!(usage["input_tokens_details"]["cached_tokens"], 0);
    assert_eq!(usage["output_tokens"], words(&expected));
    assert_eq!(usage["output_tokens_details"]["reasoning_tokens"], 0);
    assert_eq!(usage["total_tokens"], 5 + words(&expected));

    // Retrievable, with and without /v1.
    let stored: Value = get(&up, &http, &format!("/responses/{id}")).await?.json().await?;
    assert_eq!(stored, body);
    let stored: Value = http.get(format!("{}/responses/{id}", up.url())).send().await?.json().await?;
    assert_eq!(stored["id"], id);

    // Recorded like every request: method, path, headers.
    let requests = up.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!((requests[0].method.as_str(), requests[0].path.as_str()), ("POST", "/v1/responses"));
    assert_eq!(requests[0].header("authorization"), Some("Bearer sk-test"));
    assert_eq!(requests[1].method, "GET");
    assert_eq!(requests[1].path, format!("/v1/responses/{id}"));

    // Ids are unique.
    let again = create(&up, &http, json!({"model": "m", "input": "x"})).await?;
    assert_ne!(again["id"], body["id"]);
    assert_ne!(again["output"][0]["id"], body["output"][0]["id"]);
    Ok(())
}

#[tokio::test]
async fn create_validates_model_and_input() -> TestResult {
    let (up, http) = start().await?;
    let url = format!("{}/responses", up.base_url());
    let (status, err) = error_of(http.post(&url).json(&json!({"input": "hi"})).send().await?).await?;
    assert_eq!(status, 400);
    assert_eq!(err["param"], "model");
    assert_eq!(err["type"], "invalid_request_error");
    let (status, err) = error_of(http.post(&url).json(&json!({"model": "m", "input": 3})).send().await?).await?;
    assert_eq!((status, err["param"].as_str()), (400, Some("input")));
    let (status, _) = error_of(http.post(&url).body("{not json").send().await?).await?;
    assert_eq!(status, 400);
    // Wrong methods and paths.
    assert_eq!(http.get(&url).send().await?.status(), 405);
    assert_eq!(http.put(format!("{url}/resp_x")).send().await?.status(), 405);
    assert_eq!(get(&up, &http, "/responses/resp_x/nope").await?.status(), 404);
    // x-fake-status answers an error instead, like on every endpoint.
    let resp =
        http.post(&url).header("x-fake-status", "429").json(&json!({"model": "m", "input": "hi"})).send().await?;
    let (status, err) = error_of(resp).await?;
    assert_eq!((status, err["code"].as_str()), (429, Some("rate_limit_exceeded")));
    Ok(())
}

#[tokio::test]
async fn list_input_with_items_counts_every_text() -> TestResult {
    let (up, http) = start().await?;
    let body = create(
        &up,
        &http,
        json!({
            "model": "m",
            "input": [
                {"role": "developer", "content": "answer in french"},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "first question"}]},
                {"role": "assistant", "content": "first answer here"},
                {"type": "function_call_output", "call_id": "call_1", "output": "tool said this"},
                {"role": "user", "content": [{"type": "input_text", "text": "second"}, {"type": "input_text", "text": "question"}]}
            ]
        }),
    )
    .await?;
    assert_eq!(output_text(&body), greeting("m", "second question"));
    assert_eq!(body["usage"]["input_tokens"], 3 + 2 + 3 + 3 + 2);
    Ok(())
}

#[tokio::test]
async fn stream_events_in_order_with_sequence_numbers() -> TestResult {
    let (up, http) = start().await?;
    let resp = http
        .post(format!("{}/responses", up.base_url()))
        .header("x-fake-chunks", "3")
        .header("x-fake-reasoning-tokens", "7")
        .json(&json!({"model": "fake-model", "input": "one two three four", "stream": true}))
        .send()
        .await?;
    let events = sse_events(&stream_body(resp).await?);
    let mut expected =
        vec!["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"];
    expected.extend(["response.output_text.delta"; 3]);
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(names(&events), expected);
    for (i, (_, data)) in events.iter().enumerate() {
        assert_eq!(data["sequence_number"], i as u64);
    }
    let created = &events[0].1["response"];
    let id = created["id"].as_str().ok_or("id")?;
    assert_eq!(created["status"], "in_progress");
    assert!(created["usage"].is_null());
    assert_eq!(created["output"], json!([]));
    assert_eq!(events[1].1["response"]["id"], id);

    let added = &events[2].1;
    assert_eq!(added["output_index"], 0);
    assert_eq!(added["item"]["status"], "in_progress");
    assert_eq!(added["item"]["content"], json!([]));
    let item_id = added["item"]["id"].as_str().ok_or("item id")?;
    assert_eq!(events[3].1["part"], json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []}));

    let text = greeting("fake-model", "one two three four");
    let mut joined = String::new();
    for (_, delta) in &events[4..7] {
        assert_eq!(delta["item_id"], item_id);
        assert_eq!((delta["output_index"].as_u64(), delta["content_index"].as_u64()), (Some(0), Some(0)));
        joined.push_str(delta["delta"].as_str().ok_or("delta")?);
    }
    assert_eq!(joined, text);
    assert_eq!(events[7].1["text"], text.as_str());
    assert_eq!(events[8].1["part"]["text"], text.as_str());
    assert_eq!(events[9].1["item"]["status"], "completed");
    let done = &events[10].1["response"];
    assert_eq!(done["id"], id);
    assert_eq!(done["status"], "completed");
    assert_eq!(output_text(done), text);
    assert_eq!(done["usage"]["input_tokens"], 4);
    assert_eq!(done["usage"]["output_tokens"], words(&text) + 7);
    assert_eq!(done["usage"]["output_tokens_details"]["reasoning_tokens"], 7);

    // Stored once the stream is over.
    let stored: Value = get(&up, &http, &format!("/responses/{id}")).await?.json().await?;
    assert_eq!(stored["status"], "completed");
    assert_eq!(stored["usage"], done["usage"]);

    // x-fake-no-usage: usage stays null to the end.
    let resp = http
        .post(format!("{}/responses", up.base_url()))
        .header("x-fake-no-usage", "1")
        .json(&json!({"model": "m", "input": "hi", "stream": true}))
        .send()
        .await?;
    let events = sse_events(&stream_body(resp).await?);
    let last = events.last().ok_or("no events")?;
    assert_eq!(last.0, "response.completed");
    assert!(last.1["response"]["usage"].is_null());
    Ok(())
}

#[tokio::test]
async fn stream_is_paced_by_chunk_delay() -> TestResult {
    let (up, http) = start().await?;
    let started = Instant::now();
    let resp = http
        .post(format!("{}/responses", up.base_url()))
        .header("x-fake-chunk-delay-ms", "30")
        .header("x-fake-chunks", "2")
        .json(&json!({"model": "m", "input": "hi", "stream": true}))
        .send()
        .await?;
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.ok_or("no first frame")??;
    let first_at = started.elapsed();
    assert!(String::from_utf8_lossy(&first).starts_with("event: response.created\n"));
    let mut rest = 0;
    while let Some(frame) = stream.next().await {
        frame?;
        rest += 1;
    }
    // 10 events, 9 gaps of 30 ms.
    assert!(rest >= 1);
    assert!(started.elapsed() >= first_at + Duration::from_millis(9 * 30 - 5));
    Ok(())
}

#[tokio::test]
async fn max_output_tokens_makes_it_incomplete() -> TestResult {
    let (up, http) = start().await?;
    let body = create(&up, &http, json!({"model": "m", "input": "hi", "max_output_tokens": 3})).await?;
    assert_eq!(body["status"], "incomplete");
    assert_eq!(body["incomplete_details"], json!({"reason": "max_output_tokens"}));
    assert_eq!(body["max_output_tokens"], 3);
    assert_eq!(output_text(&body), "Hello from the");
    assert_eq!(body["output"][0]["status"], "incomplete");
    assert_eq!(body["usage"]["output_tokens"], 3);
    assert!(body["completed_at"].is_null());

    // Reasoning counts against the limit too.
    let resp = http
        .post(format!("{}/responses", up.base_url()))
        .header("x-fake-reasoning-tokens", "2")
        .json(&json!({"model": "m", "input": "hi", "max_output_tokens": 3}))
        .send()
        .await?;
    let body: Value = resp.json().await?;
    assert_eq!(output_text(&body), "Hello");
    assert_eq!(body["usage"]["output_tokens"], 3);
    assert_eq!(body["usage"]["output_tokens_details"]["reasoning_tokens"], 2);

    // A limit that fits changes nothing.
    let body = create(&up, &http, json!({"model": "m", "input": "hi", "max_output_tokens": 100})).await?;
    assert_eq!(body["status"], "completed");

    let resp = http
        .post(format!("{}/responses", up.base_url()))
        .json(&json!({"model": "m", "input": "hi", "max_output_tokens": 4, "stream": true}))
        .send()
        .await?;
    let events = sse_events(&stream_body(resp).await?);
    let (name, last) = events.last().ok_or("no events")?;
    assert_eq!(name, "response.incomplete");
    assert_eq!(last["response"]["status"], "incomplete");
    assert_eq!(last["response"]["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(last["response"]["usage"]["output_tokens"], 4);
    assert!(names(&events).contains(&"response.output_item.done"));
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .filter_map(|(_, d)| d["delta"].as_str())
        .collect();
    assert_eq!(text, "Hello from the fake");
    Ok(())
}

#[tokio::test]
async fn fail_control_fails_json_and_stream() -> TestResult {
    let (up, http) = start().await?;
    let full = greeting("m", "hi");
    let half = words(&full) / 2;
    let resp = http
        .post(format!("{}/responses", up.base_url()))
        .header("x-fake-response-fail", "1")
        .json(&json!({"model": "m", "input": "hi"}))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await?;
    assert_eq!(body["status"], "failed");
    assert_eq!(body["error"]["code"], "server_error");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(words(output_text(&body)), half);
    assert_eq!(body["usage"]["output_tokens"], half);

    // Server-wide, streamed.
    up.set_defaults(Controls { response_fail: Some(true), ..Controls::default() });
    let resp = http
        .post(format!("{}/responses", up.base_url()))
        .json(&json!({"model": "m", "input": "hi", "stream": true}))
        .send()
        .await?;
    let events = sse_events(&stream_body(resp).await?);
    let names = names(&events);
    assert_eq!(names.last(), Some(&"response.failed"));
    assert!(!names.contains(&"response.output_text.done") && !names.contains(&"response.completed"));
    let failed = &events[events.len() - 1].1["response"];
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["code"], "server_error");
    assert_eq!(failed["usage"]["output_tokens"], half);
    let id = failed["id"].as_str().ok_or("id")?;
    let stored: Value = get(&up, &http, &format!("/responses/{id}")).await?.json().await?;
    assert_eq!(stored["status"], "failed");
    Ok(())
}

async fn wait_for_status(
    up: &FakeUpstream,
    http: &reqwest::Client,
    id: &str,
    status: &str,
) -> Result<Value, Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body: Value = get(up, http, &format!("/responses/{id}")).await?.json().await?;
        if body["status"] == status {
            return Ok(body);
        }
        if Instant::now() > deadline {
            return Err(format!("{id} never became {status}: {body}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn background_response_completes_later() -> TestResult {
    let (up, http) = start().await?;
    let resp = http
        .post(format!("{}/responses", up.base_url()))
        .header("x-fake-background-ms", "300")
        .json(&json!({"model": "m", "input": "in the background", "background": true}))
        .send()
        .await?;
    let body: Value = resp.json().await?;
    let id = body["id"].as_str().ok_or("id")?;
    assert_eq!(body["status"], "queued");
    assert_eq!(body["background"], true);
    assert!(body["usage"].is_null());
    assert_eq!(body["output"], json!([]));
    let early: Value = get(&up, &http, &format!("/responses/{id}")).await?.json().await?;
    assert!(early["status"] == "queued" || early["status"] == "in_progress", "{early}");

    let done = wait_for_status(&up, &http, id, "completed").await?;
    assert_eq!(output_text(&done), greeting("m", "in the background"));
    assert_eq!(done["usage"]["input_tokens"], 3);
    assert!(done["completed_at"].as_u64().is_some());

    // Cancelling a finished background response returns it unchanged.
    let resp = http.post(format!("{}/responses/{id}/cancel", up.base_url())).send().await?;
    assert_eq!(resp.status(), 200);
    let after: Value = resp.json().await?;
    assert_eq!(after, done);

    // store: false cannot be combined with background.
    let resp = http
        .post(format!("{}/responses", up.base_url()))
        .json(&json!({"model": "m", "input": "x", "background": true, "store": false}))
        .send()
        .await?;
    assert_eq!(error_of(resp).await?.0, 400);
    Ok(())
}

#[tokio::test]
async fn background_response_can_be_cancelled() -> TestResult {
    let (up, http) = start().await?;
    up.set_defaults(Controls { background_ms: Some(400), ..Controls::default() });
    let body = create(&up, &http, json!({"model": "m", "input": "x", "background": true})).await?;
    let id = body["id"].as_str().ok_or("id")?;
    let resp = http.post(format!("{}/responses/{id}/cancel", up.base_url())).send().await?;
    assert_eq!(resp.status(), 200);
    let cancelled: Value = resp.json().await?;
    assert_eq!(cancelled["id"], id);
    assert_eq!(cancelled["status"], "cancelled");
    // It never completes afterwards.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let later: Value = get(&up, &http, &format!("/responses/{id}")).await?.json().await?;
    assert_eq!(later["status"], "cancelled");
    assert!(later["usage"].is_null());
    // A cancelled response cannot be replayed as a stream.
    assert_eq!(get(&up, &http, &format!("/responses/{id}?stream=true")).await?.status(), 400);

    // Only background responses can be cancelled.
    let plain = create(&up, &http, json!({"model": "m", "input": "x"})).await?;
    let plain_id = plain["id"].as_str().ok_or("id")?;
    let resp = http.post(format!("{}/responses/{plain_id}/cancel", up.base_url())).send().await?;
    let (status, err) = error_of(resp).await?;
    assert_eq!(status, 400);
    assert_eq!(err["message"], "Only responses created with background=true can be cancelled.");
    let resp = http.post(format!("{}/responses/resp_unknown/cancel", up.base_url())).send().await?;
    assert_eq!(error_of(resp).await?.0, 404);
    Ok(())
}

#[tokio::test]
async fn delete_then_everything_is_404() -> TestResult {
    let (up, http) = start().await?;
    let body = create(&up, &http, json!({"model": "m", "input": "x"})).await?;
    let id = body["id"].as_str().ok_or("id")?;
    let resp = http.delete(format!("{}/responses/{id}", up.base_url())).send().await?;
    assert_eq!(resp.status(), 200);
    let deleted: Value = resp.json().await?;
    assert_eq!(deleted, json!({"id": id, "object": "response", "deleted": true}));

    let (status, err) = error_of(get(&up, &http, &format!("/responses/{id}")).await?).await?;
    assert_eq!(status, 404);
    assert_eq!(err["message"], format!("Response with id '{id}' not found."));
    assert_eq!(error_of(get(&up, &http, &format!("/responses/{id}/input_items")).await?).await?.0, 404);
    let resp = http.delete(format!("{}/responses/{id}", up.base_url())).send().await?;
    assert_eq!(error_of(resp).await?.0, 404);
    let resp = http
        .post(format!("{}/responses", up.base_url()))
        .json(&json!({"model": "m", "input": "x", "previous_response_id": id}))
        .send()
        .await?;
    let (status, err) = error_of(resp).await?;
    assert_eq!(status, 404);
    assert_eq!(err["param"], "previous_response_id");
    assert_eq!(err["message"], format!("Previous response with id '{id}' not found."));
    Ok(())
}

#[tokio::test]
async fn previous_response_carries_context_tokens() -> TestResult {
    let (up, http) = start().await?;
    let resp = http
        .post(format!("{}/responses", up.base_url()))
        .json(&json!({"model": "m", "input": "x", "previous_response_id": "resp_nope"}))
        .send()
        .await?;
    let (status, err) = error_of(resp).await?;
    assert_eq!(status, 404);
    assert_eq!(err["param"], "previous_response_id");
    assert!(up.requests().iter().all(|r| r.path == "/v1/responses"));

    let first = create(&up, &http, json!({"model": "m", "input": "one two", "instructions": "not carried"})).await?;
    let first_out = words(output_text(&first));
    assert_eq!(first["usage"]["input_tokens"], 4);
    let second =
        create(&up, &http, json!({"model": "m", "input": "three", "previous_response_id": first["id"]})).await?;
    assert_eq!(second["previous_response_id"], first["id"]);
    assert_eq!(output_text(&second), greeting("m", "three"));
    // First input (2) + first output + second input (1); the first instructions are not carried.
    assert_eq!(second["usage"]["input_tokens"], 2 + first_out + 1);
    let third =
        create(&up, &http, json!({"model": "m", "input": "four", "previous_response_id": second["id"]})).await?;
    let second_out = words(output_text(&second));
    assert_eq!(third["usage"]["input_tokens"], 2 + first_out + 1 + second_out + 1);

    // input_tokens counts the same way.
    let resp = http
        .post(format!("{}/responses/input_tokens", up.base_url()))
        .json(&json!({"model": "m", "input": "four", "previous_response_id": second["id"]}))
        .send()
        .await?;
    let counted: Value = resp.json().await?;
    assert_eq!(counted, json!({"object": "response.input_tokens", "input_tokens": third["usage"]["input_tokens"]}));
    Ok(())
}

#[tokio::test]
async fn store_false_is_not_kept() -> TestResult {
    let (up, http) = start().await?;
    let body = create(&up, &http, json!({"model": "m", "input": "x", "store": false})).await?;
    assert_eq!(body["store"], false);
    assert_eq!(body["status"], "completed");
    let id = body["id"].as_str().ok_or("id")?;
    assert_eq!(error_of(get(&up, &http, &format!("/responses/{id}")).await?).await?.0, 404);
    assert_eq!(error_of(get(&up, &http, &format!("/responses/{id}/input_items")).await?).await?.0, 404);
    let resp = http
        .post(format!("{}/responses", up.base_url()))
        .json(&json!({"model": "m", "input": "x", "previous_response_id": id}))
        .send()
        .await?;
    assert_eq!(error_of(resp).await?.0, 404);

    let resp = http
        .post(format!("{}/responses", up.base_url()))
        .json(&json!({"model": "m", "input": "x", "store": false, "stream": true}))
        .send()
        .await?;
    let events = sse_events(&stream_body(resp).await?);
    let id = events[0].1["response"]["id"].as_str().ok_or("id")?;
    assert_eq!(error_of(get(&up, &http, &format!("/responses/{id}")).await?).await?.0, 404);
    Ok(())
}

#[tokio::test]
async fn input_items_paginate() -> TestResult {
    let (up, http) = start().await?;
    let input: Vec<Value> = (0..5).map(|i| json!({"role": "user", "content": format!("message {i}")})).collect();
    let body = create(&up, &http, json!({"model": "m", "input": input})).await?;
    let id = body["id"].as_str().ok_or("id")?;
    let list = |query: String| {
        let (up, http) = (&up, &http);
        async move {
            let resp = get(up, http, &format!("/responses/{id}/input_items{query}")).await?;
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await
        }
    };
    let text_of = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .map(|items| items.iter().filter_map(|i| i["content"][0]["text"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };

    // Default: newest first, everything (limit 20).
    let all = list(String::new()).await?;
    assert_eq!(all["object"], "list");
    assert_eq!(text_of(&all), ["message 4", "message 3", "message 2", "message 1", "message 0"]);
    assert_eq!(all["has_more"], false);
    let ids: Vec<String> =
        all["data"].as_array().ok_or("data")?.iter().filter_map(|i| i["id"].as_str().map(str::to_owned)).collect();
    assert_eq!(ids.len(), 5);
    assert_eq!(all["first_id"], ids[0].as_str());
    assert_eq!(all["last_id"], ids[4].as_str());
    let item = &all["data"][0];
    assert_eq!(
        (item["type"].as_str(), item["role"].as_str(), item["status"].as_str()),
        (Some("message"), Some("user"), Some("completed"))
    );
    assert_eq!(item["content"][0]["type"], "input_text");

    // Paging through with limit and after, in both orders.
    let page = list("?limit=2".into()).await?;
    assert_eq!(
        (text_of(&page), page["has_more"].as_bool()),
        (vec!["message 4".into(), "message 3".into()], Some(true))
    );
    let page = list(format!("?limit=2&after={}", page["last_id"].as_str().ok_or("last_id")?)).await?;
    assert_eq!(text_of(&page), ["message 2", "message 1"]);
    assert_eq!(page["has_more"], true);
    let page = list(format!("?limit=2&after={}", page["last_id"].as_str().ok_or("last_id")?)).await?;
    assert_eq!((text_of(&page), page["has_more"].as_bool()), (vec!["message 0".into()], Some(false)));

    let page = list("?order=asc&limit=3".into()).await?;
    assert_eq!(text_of(&page), ["message 0", "message 1", "message 2"]);
    assert_eq!(page["has_more"], true);
    let page = list(format!("?order=asc&after={}&include[]=message.input_image.image_url", ids[2])).await?;
    assert_eq!(text_of(&page), ["message 3", "message 4"]);
    assert_eq!(page["first_id"], ids[1].as_str());
    assert_eq!(page["has_more"], false);
    let page = list(format!("?order=asc&before={}", ids[2])).await?;
    assert_eq!(text_of(&page), ["message 0", "message 1"]);
    let page = list(format!("?before={}&limit=1", ids[4])).await?;
    assert_eq!((text_of(&page), page["has_more"].as_bool()), (vec!["message 4".into()], Some(true)));

    // Past the end: an empty page.
    let page = list(format!("?after={}", ids[4])).await?;
    assert_eq!(page["data"], json!([]));
    assert!(page["first_id"].is_null() && page["last_id"].is_null());
    assert_eq!(page["has_more"], false);

    for bad in ["?limit=0", "?limit=101", "?limit=x", "?order=sideways", "?after=msg_unknown"] {
        let resp = get(&up, &http, &format!("/responses/{id}/input_items{bad}")).await?;
        assert_eq!(error_of(resp).await?.0, 400, "{bad}");
    }
    Ok(())
}

#[tokio::test]
async fn retrieve_can_replay_the_stream() -> TestResult {
    let (up, http) = start().await?;
    let body = create(&up, &http, json!({"model": "m", "input": "replay me"})).await?;
    let id = body["id"].as_str().ok_or("id")?;
    let resp =
        http.get(format!("{}/responses/{id}?stream=true", up.base_url())).header("x-fake-chunks", "2").send().await?;
    let events = sse_events(&stream_body(resp).await?);
    assert_eq!(events.len(), 10);
    assert_eq!(events.last().map(|(n, _)| n.as_str()), Some("response.completed"));
    assert_eq!(events[9].1["response"], body);
    let resp = http.get(format!("{}/responses/{id}?stream=true&starting_after=7", up.base_url())).send().await?;
    let tail = sse_events(&stream_body(resp).await?);
    assert_eq!(tail.first().map(|(_, d)| d["sequence_number"].clone()), Some(json!(8)));

    // A background response is replayed once it is done: queued first.
    let resp = http
        .post(format!("{}/responses", up.base_url()))
        .header("x-fake-background-ms", "100")
        .json(&json!({"model": "m", "input": "x", "background": true}))
        .send()
        .await?;
    let queued: Value = resp.json().await?;
    let id = queued["id"].as_str().ok_or("id")?;
    let events = sse_events(&stream_body(get(&up, &http, &format!("/responses/{id}?stream=true")).await?).await?);
    assert_eq!(&names(&events)[..3], ["response.created", "response.queued", "response.in_progress"]);
    assert_eq!(events[0].1["response"]["status"], "queued");
    assert_eq!(events.last().map(|(n, _)| n.as_str()), Some("response.completed"));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// async-openai
// ---------------------------------------------------------------------------------------------

mod with_async_openai {
    use super::*;
    use async_openai::config::OpenAIConfig;
    use async_openai::types::responses::{
        Content, CreateResponseArgs, Input, InputContent, InputItem, InputMessageArgs, OutputContent, ResponseEvent,
        Role, Status,
    };
    use async_openai::Client;

    async fn client() -> Result<(FakeUpstream, Client<OpenAIConfig>), Box<dyn std::error::Error>> {
        let up = FakeUpstream::start_local().await?;
        up.set_required_key(Some("sk-fake".into()));
        let config = OpenAIConfig::new().with_api_base(up.base_url()).with_api_key("sk-fake");
        Ok((up, Client::with_config(config)))
    }

    fn text_of(output: &[OutputContent]) -> String {
        output
            .iter()
            .filter_map(|o| match o {
                OutputContent::Message(m) => Some(m),
                _ => None,
            })
            .flat_map(|m| &m.content)
            .filter_map(|c| match c {
                Content::OutputText(t) => Some(t.text.as_str()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn create_json_and_stream() -> TestResult {
        let (_up, client) = client().await?;
        let request = CreateResponseArgs::default()
            .model("fake-model")
            .input(Input::Text("hello from async-openai".into()))
            .instructions("be brief")
            .build()?;
        let resp = client.responses().create(request).await?;
        let expected = greeting("fake-model", "hello from async-openai");
        assert!(resp.id.starts_with("resp_"));
        assert_eq!(resp.object, "response");
        assert_eq!(resp.status, Status::Completed);
        assert_eq!(resp.model, "fake-model");
        assert_eq!(text_of(&resp.output), expected);
        let usage = resp.usage.ok_or("usage")?;
        assert_eq!(usage.input_tokens, 5);
        assert_eq!(u64::from(usage.output_tokens), words(&expected));
        assert_eq!(usage.total_tokens, usage.input_tokens + usage.output_tokens);

        let message = InputMessageArgs::default()
            .role(Role::User)
            .content(InputContent::TextInput("streamed question".into()))
            .build()?;
        let request = CreateResponseArgs::default()
            .model("fake-model")
            .input(Input::Items(vec![InputItem::Message(message)]))
            .previous_response_id(resp.id.clone())
            .build()?;
        let mut stream = client.responses().create_stream(request).await?;
        let mut text = String::new();
        let mut seqs = Vec::new();
        let mut completed = None;
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(event) => event,
                // async-openai 0.30 reports the end of a stream without `[DONE]` (the Responses
                // API never sends one) as an error: 64bit/async-openai#456.
                Err(e) if completed.is_some() && format!("{e:?}").contains("StreamEnded") => break,
                Err(e) => return Err(e.into()),
            };
            match event {
                ResponseEvent::ResponseCreated(e) => seqs.push(e.sequence_number),
                ResponseEvent::ResponseInProgress(e) => seqs.push(e.sequence_number),
                ResponseEvent::ResponseOutputItemAdded(e) => seqs.push(e.sequence_number),
                ResponseEvent::ResponseContentPartAdded(e) => seqs.push(e.sequence_number),
                ResponseEvent::ResponseOutputTextDelta(e) => {
                    seqs.push(e.sequence_number);
                    text.push_str(&e.delta);
                }
                ResponseEvent::ResponseOutputTextDone(e) => {
                    seqs.push(e.sequence_number);
                    assert_eq!(e.text, text);
                }
                ResponseEvent::ResponseContentPartDone(e) => seqs.push(e.sequence_number),
                ResponseEvent::ResponseOutputItemDone(e) => seqs.push(e.sequence_number),
                ResponseEvent::ResponseCompleted(e) => {
                    seqs.push(e.sequence_number);
                    completed = Some(e.response);
                }
                other => return Err(format!("unexpected event {other:?}").into()),
            }
        }
        assert_eq!(text, greeting("fake-model", "streamed question"));
        assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
        let completed = completed.ok_or("no response.completed")?;
        assert_eq!(completed.status, Status::Completed);
        let usage = completed.usage.ok_or("usage")?;
        // Carried: 3 input words + the first answer; plus 2 new input words.
        assert_eq!(u64::from(usage.input_tokens), 3 + words(&expected) + 2);
        Ok(())
    }

    #[tokio::test]
    async fn incomplete_response_parses() -> TestResult {
        let (_up, client) = client().await?;
        let request =
            CreateResponseArgs::default().model("m").input(Input::Text("hi".into())).max_output_tokens(2u32).build()?;
        let resp = client.responses().create(request).await?;
        assert_eq!(resp.status, Status::Incomplete);
        assert_eq!(resp.incomplete_details.map(|d| d.reason).as_deref(), Some("max_output_tokens"));
        assert_eq!(text_of(&resp.output), "Hello from");
        Ok(())
    }
}
