//! Request bodies a provider could read another way than the filter (refused before any
//! upstream is contacted), and client headers that must not reach the provider.

use crate::harness::{expect_error, http, Harness, ADMIN_KEY};

const FORM: &str = "multipart/form-data; boundary=AqB";

/// A multipart body from raw part headers and values, with a small audio file first.
fn form(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut b = String::from(
        "--AqB\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF....WAVE\r\n",
    );
    for (headers, value) in fields {
        b += &format!("--AqB\r\n{headers}\r\n\r\n{value}\r\n");
    }
    b += "--AqB--\r\n";
    b.into_bytes()
}

const MODEL: &str = "Content-Disposition: form-data; name=\"model\"";

#[tokio::test]
async fn bodies_providers_could_read_another_way_are_400_and_never_forwarded() {
    let h = Harness::start().await;
    let c = http();
    let post = |path: &str, ct: &str, body: Vec<u8>| {
        c.post(h.url(path)).bearer_auth(ADMIN_KEY).header("content-type", ct).body(body).send()
    };

    // One model part: routed, the model rewritten to the provider's.
    h.upstream.clear_requests();
    let r = post("/v1/audio/transcriptions", FORM, form(&[(MODEL, "whisper")])).await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    assert!(h.upstream.requests()[0].body_text().contains("\r\n\r\nprovider-whisper\r\n"));
    h.upstream.clear_requests();

    // A second model part: the filter checked one, a provider reading the first would run the
    // other (even one no policy names) on the operator's key.
    let multipart: &[(&[(&str, &str)], &str)] = &[
        (&[(MODEL, "whisper"), (MODEL, "gpt-4o-transcribe")], "duplicate_parameter"),
        (&[(MODEL, "gpt-4o-transcribe"), (MODEL, "whisper")], "duplicate_parameter"),
        (&[(MODEL, "whisper"), ("content-disposition: form-data; NAME=model", "x")], "duplicate_parameter"),
        (&[(MODEL, "whisper"), ("Content-Disposition: form-data; name=\"Model\"", "x")], "ambiguous_parameter"),
    ];
    for (fields, code) in multipart {
        let e = expect_error(
            post("/v1/audio/transcriptions", FORM, form(fields)).await.unwrap(),
            400,
            "invalid_request_error",
        )
        .await;
        assert_eq!((e["param"].as_str(), e["code"].as_str()), (Some("model"), Some(*code)), "{fields:?}: {e}");
    }
    // Part headers that parsers read differently: RFC 2231 names, two names.
    for headers in [
        "Content-Disposition: form-data; name*=utf-8''model",
        "Content-Disposition: form-data; name=\"x\"; name=\"model\"",
    ] {
        let r = post("/v1/audio/transcriptions", FORM, form(&[(MODEL, "whisper"), (headers, "gpt-4o-transcribe")]));
        expect_error(r.await.unwrap(), 400, "invalid_request_error").await;
    }

    // JSON: a second `model` member, escaped or not, or one spelled in another case.
    for body in [
        r#"{"model":"chat","messages":[],"model":"gpt-4o"}"#,
        r#"{"model":"chat","messages":[],"mod\u0065l":"gpt-4o"}"#,
        r#"{"Model":"gpt-4o","model":"chat","messages":[]}"#,
    ] {
        let r = post("/v1/chat/completions", "application/json", body.as_bytes().to_vec()).await.unwrap();
        let e = expect_error(r, 400, "invalid_request_error").await;
        assert_eq!(e["param"], "model", "{body}: {e}");
    }
    let r =
        post("/v1/chat/completions", "application/json", br#"{"model":"chat","stream":false,"stream":true}"#.to_vec());
    assert_eq!(expect_error(r.await.unwrap(), 400, "invalid_request_error").await["param"], "stream");

    assert!(h.upstream.requests().is_empty(), "nothing refused reached the provider");
}

#[tokio::test]
async fn openai_organization_and_project_headers_do_not_reach_the_provider() {
    let h = Harness::start().await;
    let c = http();
    h.upstream.clear_requests();
    let r = c
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(ADMIN_KEY)
        .header("OpenAI-Organization", "org-someone-else")
        .header("OpenAI-Project", "proj_someone_else")
        .header("OpenAI-Beta", "assistants=v2")
        .json(&serde_json::json!({"model":"chat","messages":[{"role":"user","content":"hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(h.url("/v1/audio/transcriptions"))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", FORM)
        .header("openai-project", "proj_someone_else")
        .body(form(&[(MODEL, "whisper")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = h.upstream.requests();
    assert_eq!(seen.len(), 2);
    for up in &seen {
        assert_eq!(up.header("openai-organization"), None, "{}", up.path);
        assert_eq!(up.header("openai-project"), None, "{}", up.path);
    }
    assert_eq!(seen[0].header("openai-beta"), Some("assistants=v2"), "other headers pass");
}
