//! Compatibility with a real OpenAI client library (`async-openai`), whose typed responses and
//! SSE parser are stricter than hand-written assertions.

use async_openai::config::OpenAIConfig;
use async_openai::types::{
    AudioInput, AudioResponseFormat, ChatCompletionRequestUserMessageArgs, ChatCompletionStreamOptions,
    CreateChatCompletionRequestArgs, CreateCompletionRequestArgs, CreateEmbeddingRequestArgs, CreateImageRequestArgs,
    CreateSpeechRequestArgs, CreateTranscriptionRequestArgs, EncodingFormat, FinishReason, Image, ImageResponseFormat,
    SpeechModel, Voice,
};
use async_openai::Client;
use fake_upstream::FakeUpstream;
use futures::StreamExt;

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn client() -> Result<(FakeUpstream, Client<OpenAIConfig>), Box<dyn std::error::Error>> {
    let up = FakeUpstream::start_local().await?;
    up.set_required_key(Some("sk-fake".into()));
    let config = OpenAIConfig::new().with_api_base(up.base_url()).with_api_key("sk-fake");
    Ok((up, Client::with_config(config)))
}

#[tokio::test]
async fn chat_plain_and_streamed() -> TestResult {
    let (_up, client) = client().await?;
    let message = ChatCompletionRequestUserMessageArgs::default().content("hello from async-openai").build()?;
    let request =
        CreateChatCompletionRequestArgs::default().model("fake-model").messages([message.clone().into()]).build()?;
    let resp = client.chat().create(request).await?;
    let expected = "Hello from the fake upstream (model fake-model). You said: hello from async-openai";
    assert_eq!(resp.model, "fake-model");
    assert_eq!(resp.choices[0].message.content.as_deref(), Some(expected));
    assert_eq!(resp.choices[0].finish_reason, Some(FinishReason::Stop));
    let usage = resp.usage.ok_or("usage")?;
    assert_eq!(usage.prompt_tokens, 3);

    let request = CreateChatCompletionRequestArgs::default()
        .model("fake-model")
        .messages([message.into()])
        .stream(true)
        .stream_options(ChatCompletionStreamOptions { include_usage: true })
        .build()?;
    let mut stream = client.chat().create_stream(request).await?;
    let mut text = String::new();
    let mut usage = None;
    let mut finish = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        for choice in &chunk.choices {
            text.push_str(choice.delta.content.as_deref().unwrap_or(""));
            finish = finish.or(choice.finish_reason);
        }
        usage = usage.or(chunk.usage);
    }
    assert_eq!(text, expected);
    assert_eq!(finish, Some(FinishReason::Stop));
    assert_eq!(usage.ok_or("usage chunk")?.prompt_tokens, 3);
    Ok(())
}

#[tokio::test]
async fn legacy_completion_stream() -> TestResult {
    let (_up, client) = client().await?;
    let request = CreateCompletionRequestArgs::default()
        .model("gpt-3.5-turbo-instruct")
        .prompt("legacy prompt")
        .stream(true)
        .build()?;
    let mut stream = client.completions().create_stream(request).await?;
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        for choice in chunk?.choices {
            text.push_str(&choice.text);
        }
    }
    assert!(text.ends_with("You said: legacy prompt"), "{text}");
    Ok(())
}

#[tokio::test]
async fn embeddings_float_and_base64() -> TestResult {
    let (_up, client) = client().await?;
    let request =
        CreateEmbeddingRequestArgs::default().model("text-embedding-3-small").input(["alpha", "beta"]).build()?;
    let floats = client.embeddings().create(request).await?;
    assert_eq!(floats.data.len(), 2);
    assert_eq!(floats.usage.prompt_tokens, 2);

    let request = CreateEmbeddingRequestArgs::default()
        .model("text-embedding-3-small")
        .input(["alpha", "beta"])
        .encoding_format(EncodingFormat::Base64)
        .build()?;
    let b64 = client.embeddings().create_base64(request).await?;
    for (f, b) in floats.data.iter().zip(b64.data) {
        let decoded: Vec<f32> = b.embedding.into();
        assert_eq!(decoded, f.embedding);
    }
    Ok(())
}

#[tokio::test]
async fn audio_and_images_and_models() -> TestResult {
    let (_up, client) = client().await?;
    let speech = client
        .audio()
        .speech(
            CreateSpeechRequestArgs::default().model(SpeechModel::Tts1).voice(Voice::Alloy).input("say it").build()?,
        )
        .await?;
    assert!(speech.bytes.ends_with(b"say itsay itsay itsay it"));

    let transcription = client
        .audio()
        .transcribe(
            CreateTranscriptionRequestArgs::default()
                .file(AudioInput::from_vec_u8("a.wav".into(), vec![0u8; 500]))
                .model("whisper-1")
                .build()?,
        )
        .await?;
    assert_eq!(transcription.text, "fake transcription of 500 bytes with model whisper-1");

    let verbose = client
        .audio()
        .transcribe_verbose_json(
            CreateTranscriptionRequestArgs::default()
                .file(AudioInput::from_vec_u8("a.wav".into(), vec![0u8; 32_000]))
                .model("whisper-1")
                .response_format(AudioResponseFormat::VerboseJson)
                .build()?,
        )
        .await?;
    assert!((verbose.duration - 2.0).abs() < 1e-6);

    let images = client
        .images()
        .create(
            CreateImageRequestArgs::default()
                .prompt("a dot")
                .n(3)
                .response_format(ImageResponseFormat::B64Json)
                .build()?,
        )
        .await?;
    assert_eq!(images.data.len(), 3);
    assert!(matches!(images.data[0].as_ref(), Image::B64Json { .. }));

    let models = client.models().list().await?;
    assert!(models.data.iter().any(|m| m.id == "fake-model"));
    Ok(())
}

#[tokio::test]
async fn api_errors_are_parsed() -> TestResult {
    let (up, client) = client().await?;
    // 4xx other than 429: async-openai does not retry these.
    up.set_defaults(fake_upstream::Controls {
        status: Some(403),
        error_message: Some("nope".into()),
        ..Default::default()
    });
    let err = client.models().list().await.err().ok_or("expected an error")?;
    match err {
        async_openai::error::OpenAIError::ApiError(e) => {
            assert_eq!(e.message, "nope");
            assert_eq!(e.r#type.as_deref(), Some("permission_denied_error"));
        }
        other => return Err(format!("unexpected error {other:?}").into()),
    }
    Ok(())
}
