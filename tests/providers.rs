//! `flowc::run::providers::complete` against a real HTTP server on 127.0.0.1
//! speaking the OpenAI-compatible and Anthropic APIs (tests/support).

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use flowc::exec::{ModelFamily, Protocol};
use flowc::run::error::{CallError, ErrorClass};
use flowc::run::providers::{
    complete, ChatRequest, ChatResponse, Endpoint, Message, ResponseSchema, Secret, ToolCall,
    ToolSpec, Usage,
};
use serde_json::{json, Value};
use support::mock_server::{http_date, refused_base_url, MockServer, Reply, CHAT, MESSAGES};

const KEY: &str = "sk-test-SUPERSECRET-0123456789abcdef";
const TIMEOUT: Duration = Duration::from_secs(5);

fn endpoint(server: &MockServer, protocol: Protocol) -> Endpoint {
    let base_url = match protocol {
        Protocol::OpenAi => server.openai_base_url(),
        Protocol::Anthropic => server.anthropic_base_url(),
    };
    Endpoint {
        protocol,
        base_url,
        api_key: Some(Secret::new(KEY.to_string())),
    }
}

fn route(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::OpenAi => CHAT,
        Protocol::Anthropic => MESSAGES,
    }
}

const BOTH: [Protocol; 2] = [Protocol::OpenAi, Protocol::Anthropic];

fn request(prompt: &str) -> ChatRequest {
    ChatRequest {
        model: "test-model".into(),
        family: ModelFamily::Standard,
        system: Some("You are terse.".into()),
        messages: vec![Message::User(prompt.into())],
        max_tokens: 256,
        temperature: Some(0.2),
        response_schema: None,
        tools: vec![],
        extra: vec![("top_p".into(), json!(0.9))],
    }
}

fn weather_tool() -> ToolSpec {
    ToolSpec {
        name: "get_weather".into(),
        description: "Current weather for a city".into(),
        parameters: json!({
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        }),
    }
}

async fn call(
    server: &MockServer,
    protocol: Protocol,
    req: &ChatRequest,
) -> Result<ChatResponse, CallError> {
    complete(
        &reqwest::Client::new(),
        &endpoint(server, protocol),
        req,
        TIMEOUT,
    )
    .await
}

/// Scripts one reply on the protocol's route and makes one call.
async fn one(protocol: Protocol, reply: Reply) -> (MockServer, Result<ChatResponse, CallError>) {
    let server = MockServer::start();
    server.push(route(protocol), reply);
    let result = call(&server, protocol, &request("hi")).await;
    (server, result)
}

fn expect_err(result: Result<ChatResponse, CallError>) -> CallError {
    match result {
        Ok(reply) => panic!("expected an error, got {reply:?}"),
        Err(error) => error,
    }
}

// ---- OpenAI-compatible ----------------------------------------------------

#[tokio::test]
async fn openai_text_reply_and_request_shape() {
    let server = MockServer::start();
    server.push(CHAT, Reply::chat_text("Hello there.").with_usage(31, 4));
    let reply = call(&server, Protocol::OpenAi, &request("Say hello"))
        .await
        .unwrap();
    assert_eq!(reply.text.as_deref(), Some("Hello there."));
    assert!(reply.tool_calls.is_empty());
    assert_eq!(
        reply.usage,
        Usage {
            input_tokens: 31,
            output_tokens: 4
        }
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!((sent.method.as_str(), sent.path.as_str()), ("POST", CHAT));
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert!(sent
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(
        sent.body,
        json!({
            "model": "test-model",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Say hello"},
            ],
            "max_tokens": 256,
            "temperature": 0.2,
            "top_p": 0.9,
        })
    );
    assert_eq!(server.tokens_served(), 35);
}

#[tokio::test]
async fn openai_without_a_key_sends_no_authorization() {
    let server = MockServer::start();
    server.push(CHAT, Reply::chat_text("local"));
    let mut endpoint = endpoint(&server, Protocol::OpenAi);
    endpoint.api_key = None;
    endpoint.base_url.push('/'); // a trailing slash is tolerated
    let reply = complete(&reqwest::Client::new(), &endpoint, &request("hi"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(reply.text.as_deref(), Some("local"));
    let sent = &server.requests()[0];
    assert_eq!(sent.path, CHAT);
    assert_eq!(sent.header("authorization"), None);
}

#[tokio::test]
async fn openai_structured_output_sends_the_schema() {
    let server = MockServer::start();
    server.push(
        CHAT,
        Reply::chat_json(json!({"label": "spam", "score": 0.93})),
    );
    let schema = json!({
        "type": "object",
        "properties": {"label": {"enum": ["spam", "ham"]}, "score": {"type": "number"}},
        "required": ["label", "score"],
    });
    let mut req = request("Classify");
    req.response_schema = Some(ResponseSchema::new(schema.clone()));
    let reply = call(&server, Protocol::OpenAi, &req).await.unwrap();
    let value: Value = serde_json::from_str(reply.text.as_deref().unwrap()).unwrap();
    assert_eq!(value, json!({"label": "spam", "score": 0.93}));
    assert_eq!(
        server.requests()[0].body["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": false}})
    );
}

#[tokio::test]
async fn openai_tool_calls_and_tool_history() {
    let server = MockServer::start();
    server.push(
        CHAT,
        Reply::chat_tool_calls([
            ("get_weather", json!({"city": "Oslo"})),
            ("get_weather", json!({"city": "Lima"})),
        ])
        .with_usage(50, 20),
    );
    server.push(
        CHAT,
        Reply::chat_tool_call_raw("get_weather", "{\"city\": \"Par"),
    );
    let mut req = request("Weather?");
    req.tools = vec![weather_tool()];
    req.messages.push(Message::Assistant {
        text: None,
        tool_calls: vec![ToolCall {
            id: "call_1".into(),
            name: "get_weather".into(),
            arguments: json!({"city": "Rome"}),
        }],
    });
    req.messages.push(Message::ToolResult {
        call_id: "call_1".into(),
        content: "{\"temp\": 21}".into(),
    });

    let reply = call(&server, Protocol::OpenAi, &req).await.unwrap();
    assert_eq!(reply.text, None);
    assert_eq!(
        reply.usage,
        Usage {
            input_tokens: 50,
            output_tokens: 20
        }
    );
    let calls: Vec<(&str, &Value)> = reply
        .tool_calls
        .iter()
        .map(|c| (c.name.as_str(), &c.arguments))
        .collect();
    assert_eq!(
        calls,
        [
            ("get_weather", &json!({"city": "Oslo"})),
            ("get_weather", &json!({"city": "Lima"}))
        ]
    );
    assert_ne!(reply.tool_calls[0].id, reply.tool_calls[1].id);

    // Arguments that are not JSON are kept as the string the model sent.
    let reply = call(&server, Protocol::OpenAi, &req).await.unwrap();
    assert_eq!(
        reply.tool_calls[0].arguments,
        Value::String("{\"city\": \"Par".into())
    );

    let body = &server.requests()[0].body;
    assert_eq!(
        body["tools"],
        json!([{"type": "function", "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": weather_tool().parameters,
        }}])
    );
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4);
    assert_eq!(
        messages[2],
        json!({"role": "assistant", "content": null, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"},
        }]})
    );
    assert_eq!(
        messages[3],
        json!({"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21}"})
    );
}

#[tokio::test]
async fn openai_reply_without_usage_is_charged_conservatively() {
    let body =
        json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}]});
    let (_server, result) = one(Protocol::OpenAi, Reply::ok(body)).await;
    let reply = result.unwrap();
    assert_eq!(reply.text.as_deref(), Some("ok"));
    assert_eq!(
        reply.usage.output_tokens, 256,
        "max_tokens when the provider does not say"
    );
    assert!(reply.usage.input_tokens > 0);
}

#[tokio::test]
async fn openai_refusal_is_invalid() {
    let body = json!({
        "choices": [{"message": {"role": "assistant", "content": null, "refusal": "I can't help with that."}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 5},
    });
    let (_server, result) = one(Protocol::OpenAi, Reply::ok(body)).await;
    let error = expect_err(result);
    assert_eq!(error.class, ErrorClass::Invalid);
    assert!(
        error.message.contains("refused: I can't help with that."),
        "{error}"
    );
}

#[tokio::test]
async fn error_inside_a_success_body_is_classified() {
    let body = json!({"error": {"message": "Upstream rate limited", "code": 429}});
    let (_server, result) = one(Protocol::OpenAi, Reply::ok(body)).await;
    let error = expect_err(result);
    assert_eq!(error.class, ErrorClass::RateLimit);
    assert!(error.message.contains("Upstream rate limited"), "{error}");
}

// ---- Anthropic -------------------------------------------------------------

#[tokio::test]
async fn anthropic_text_reply_and_request_shape() {
    let server = MockServer::start();
    server.push(MESSAGES, Reply::chat_text("Bonjour.").with_usage(40, 3));
    let reply = call(
        &server,
        Protocol::Anthropic,
        &request("Say hello in French"),
    )
    .await
    .unwrap();
    assert_eq!(reply.text.as_deref(), Some("Bonjour."));
    assert_eq!(
        reply.usage,
        Usage {
            input_tokens: 40,
            output_tokens: 3
        }
    );

    let sent = &server.requests()[0];
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        ("POST", MESSAGES)
    );
    assert_eq!(sent.header("x-api-key"), Some(KEY));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent.header("authorization"), None);
    assert_eq!(
        sent.body,
        json!({
            "model": "test-model",
            "system": "You are terse.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello in French"}]}],
            "max_tokens": 256,
            "temperature": 0.2,
            "top_p": 0.9,
        })
    );
}

#[tokio::test]
async fn anthropic_usage_includes_cached_input() {
    let body = json!({
        "type": "message", "role": "assistant",
        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 10, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 7, "output_tokens": 2},
    });
    let (server, result) = one(Protocol::Anthropic, Reply::ok(body)).await;
    let reply = result.unwrap();
    assert_eq!(reply.text.as_deref(), Some("ab"));
    assert_eq!(
        reply.usage,
        Usage {
            input_tokens: 117,
            output_tokens: 2
        }
    );
    assert_eq!(
        server.usage_served(),
        (10, 2),
        "the server counts the usage fields it sent"
    );
}

#[tokio::test]
async fn anthropic_structured_output_is_a_forced_tool_call() {
    let server = MockServer::start();
    server.push(
        MESSAGES,
        Reply::chat_tool_call("output", json!({"label": "ham"})).with_usage(30, 9),
    );
    let schema = json!({"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]});
    let mut req = request("Classify");
    req.response_schema = Some(ResponseSchema::new(schema.clone()));
    let reply = call(&server, Protocol::Anthropic, &req).await.unwrap();
    assert_eq!(
        reply.text.as_deref(),
        Some(r#"{"label":"ham"}"#),
        "the tool's input is the reply"
    );
    assert!(reply.tool_calls.is_empty(), "{:?}", reply.tool_calls);

    let body = &server.requests()[0].body;
    assert_eq!(
        body["tools"],
        json!([{"name": "output",
                "description": "Give your answer: call this tool once, with the answer as its input.",
                "input_schema": schema}])
    );
    assert_eq!(
        body["tool_choice"],
        json!({"type": "tool", "name": "output"})
    );
    assert_eq!(
        body["system"],
        json!("You are terse."),
        "no instruction added"
    );
    assert!(body.get("response_format").is_none());
}

#[tokio::test]
async fn anthropic_structured_output_that_is_not_an_object_is_wrapped() {
    let server = MockServer::start();
    server.push(
        MESSAGES,
        Reply::chat_tool_call("output", json!({"value": [{"n": 1}, {"n": 2}]})),
    );
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "array",
        "items": {"$ref": "#/$defs/Item"},
        "$defs": {"Item": {"type": "object", "properties": {"n": {"type": "integer"}}}},
    });
    let mut req = request("List");
    req.response_schema = Some(ResponseSchema::new(schema));
    let reply = call(&server, Protocol::Anthropic, &req).await.unwrap();
    assert_eq!(reply.text.as_deref(), Some(r#"[{"n":1},{"n":2}]"#));
    let input_schema = &server.requests()[0].body["tools"][0]["input_schema"];
    assert_eq!(
        input_schema,
        &json!({
            "type": "object",
            "properties": {"value": {"type": "array", "items": {"$ref": "#/$defs/Item"}}},
            "required": ["value"],
            "additionalProperties": false,
            "$defs": {"Item": {"type": "object", "properties": {"n": {"type": "integer"}}}},
            "$schema": "https://json-schema.org/draft/2020-12/schema",
        }),
        "the $defs stay at the root, where the $ref points"
    );
}

#[tokio::test]
async fn anthropic_text_answer_to_a_forced_tool_is_still_read() {
    // An emulator that ignores `tool_choice` and answers in text.
    let server = MockServer::start();
    server.push(MESSAGES, Reply::chat_text("{\"label\": \"spam\"}"));
    let mut req = request("Classify");
    req.response_schema = Some(ResponseSchema::new(json!({"type": "object"})));
    let reply = call(&server, Protocol::Anthropic, &req).await.unwrap();
    assert_eq!(reply.text.as_deref(), Some("{\"label\": \"spam\"}"));
}

#[tokio::test]
async fn anthropic_base_url_is_the_host_as_the_sdk_reads_it() {
    let server = MockServer::start();
    server.always(MESSAGES, Reply::chat_text("ok"));
    for base_url in [
        server.base_url(),
        format!("{}/", server.base_url()),
        server.anthropic_base_url(),
    ] {
        let endpoint = Endpoint {
            protocol: Protocol::Anthropic,
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key: Some(Secret::new(KEY.to_string())),
        };
        let reply = complete(&reqwest::Client::new(), &endpoint, &request("hi"), TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{base_url}: {e}"));
        assert_eq!(reply.text.as_deref(), Some("ok"));
    }
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, [MESSAGES; 3]);
}

#[tokio::test]
async fn a_404_on_the_messages_path_says_what_the_base_url_should_hold() {
    let server = MockServer::start();
    let endpoint = Endpoint {
        protocol: Protocol::Anthropic,
        base_url: format!("{}/anthropic", server.base_url()),
        api_key: Some(Secret::new(KEY.to_string())),
    };
    let error = complete(&reqwest::Client::new(), &endpoint, &request("hi"), TIMEOUT)
        .await
        .expect_err("nothing is served there");
    assert_eq!(error.status, Some(404));
    assert_eq!(error.class, ErrorClass::Client);
    let tried = format!("POST {}/anthropic/v1/messages", server.base_url());
    assert!(error.message.contains(&tried), "{error}");
    assert!(
        error
            .message
            .contains("the API's host, as in https://api.anthropic.com"),
        "{error}"
    );
    assert_eq!(server.requests()[0].path, "/anthropic/v1/messages");
}

#[tokio::test]
async fn openai_reasoning_models_bound_the_output_with_max_completion_tokens() {
    let server = MockServer::start();
    server.always(
        CHAT,
        Reply::chat_text("thought about it").with_usage(20, 180),
    );
    let mut req = request("Think");
    req.temperature = None;
    req.extra.clear();
    req.family = ModelFamily::OpenAiReasoning;
    let reply = call(&server, Protocol::OpenAi, &req).await.unwrap();
    assert_eq!(
        reply.usage.output_tokens, 180,
        "reasoning tokens are output"
    );
    let body = &server.requests()[0].body;
    assert_eq!(body["max_completion_tokens"], json!(256));
    assert!(body.get("max_tokens").is_none(), "{body}");

    req.family = ModelFamily::Standard;
    call(&server, Protocol::OpenAi, &req).await.unwrap();
    let body = &server.requests()[1].body;
    assert_eq!(body["max_tokens"], json!(256));
    assert!(body.get("max_completion_tokens").is_none(), "{body}");
}

#[test]
fn model_families_are_decided_from_protocol_and_model_id() {
    for (protocol, id, family) in [
        (Protocol::OpenAi, "o3-mini", ModelFamily::OpenAiReasoning),
        (Protocol::OpenAi, "o1", ModelFamily::OpenAiReasoning),
        (
            Protocol::OpenAi,
            "o4-mini-2025-04-16",
            ModelFamily::OpenAiReasoning,
        ),
        (Protocol::OpenAi, "gpt-5-mini", ModelFamily::OpenAiReasoning),
        (Protocol::OpenAi, "openai/o3", ModelFamily::OpenAiReasoning),
        (Protocol::OpenAi, "gpt-4o-mini", ModelFamily::Standard),
        (Protocol::OpenAi, "omni-moderation", ModelFamily::Standard),
        (Protocol::Anthropic, "o3", ModelFamily::Standard),
    ] {
        assert_eq!(ModelFamily::of(protocol, id), family, "{id}");
    }
}

#[tokio::test]
async fn anthropic_tool_use_and_tool_history() {
    let server = MockServer::start();
    server.push(
        MESSAGES,
        Reply::chat_tool_call("get_weather", json!({"city": "Oslo"}))
            .with_text("Let me check.")
            .with_usage(60, 25),
    );
    let mut req = request("Weather?");
    req.tools = vec![weather_tool()];
    req.messages.push(Message::Assistant {
        text: Some("Checking two cities.".into()),
        tool_calls: vec![
            ToolCall {
                id: "toolu_1".into(),
                name: "get_weather".into(),
                arguments: json!({"city": "Rome"}),
            },
            ToolCall {
                id: "toolu_2".into(),
                name: "get_weather".into(),
                arguments: json!({"city": "Pisa"}),
            },
        ],
    });
    req.messages.push(Message::ToolResult {
        call_id: "toolu_1".into(),
        content: "sunny".into(),
    });
    req.messages.push(Message::ToolResult {
        call_id: "toolu_2".into(),
        content: "rain".into(),
    });
    req.messages.push(Message::User("And Oslo?".into()));

    let reply = call(&server, Protocol::Anthropic, &req).await.unwrap();
    assert_eq!(reply.text.as_deref(), Some("Let me check."));
    assert_eq!(reply.tool_calls.len(), 1);
    assert_eq!(reply.tool_calls[0].name, "get_weather");
    assert_eq!(reply.tool_calls[0].arguments, json!({"city": "Oslo"}));
    assert!(!reply.tool_calls[0].id.is_empty());
    assert_eq!(
        reply.usage,
        Usage {
            input_tokens: 60,
            output_tokens: 25
        }
    );

    let body = &server.requests()[0].body;
    assert_eq!(
        body["tools"],
        json!([{"name": "get_weather", "description": "Current weather for a city", "input_schema": weather_tool().parameters}])
    );
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking two cities."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Rome"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Pisa"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "rain"},
                {"type": "text", "text": "And Oslo?"},
            ]},
        ])
    );
}

#[tokio::test]
async fn invented_tool_names_and_repeated_calls_are_returned_as_sent() {
    // Checking names against the offered tools is the agent loop's job.
    for protocol in BOTH {
        let server = MockServer::start();
        server.push(
            route(protocol),
            Reply::chat_tool_call("launch_rockets", json!({})),
        );
        server.script(
            route(protocol),
            Reply::chat_tool_call("get_weather", json!({"city": "Oslo"})).times(3),
        );
        let mut req = request("Weather?");
        req.tools = vec![weather_tool()];
        let reply = call(&server, protocol, &req).await.unwrap();
        assert_eq!(reply.tool_calls[0].name, "launch_rockets");
        let mut ids = Vec::new();
        for _ in 0..3 {
            let reply = call(&server, protocol, &req).await.unwrap();
            assert_eq!(reply.tool_calls[0].arguments, json!({"city": "Oslo"}));
            ids.push(reply.tool_calls[0].id.clone());
        }
        ids.dedup();
        assert_eq!(
            ids.len(),
            3,
            "{protocol:?}: each reply's call has its own id"
        );
        assert_eq!(server.tokens_served(), 4 * 15);
    }
}

// ---- Failures --------------------------------------------------------------

#[tokio::test]
async fn rate_limit_with_retry_after_seconds() {
    for protocol in BOTH {
        let (_server, result) = one(protocol, Reply::rate_limited(7)).await;
        let error = expect_err(result);
        assert_eq!(error.class, ErrorClass::RateLimit, "{protocol:?}");
        assert_eq!(error.status, Some(429));
        assert_eq!(
            error.retry_after,
            Some(Duration::from_secs(7)),
            "{protocol:?}"
        );
        assert!(error.message.contains("Rate limit reached"), "{error}");
    }
}

#[tokio::test]
async fn rate_limit_with_retry_after_as_http_date() {
    let at = SystemTime::now() + Duration::from_secs(30);
    let reply = Reply::json(429, json!({"error": {"message": "slow down"}}))
        .with_header("Retry-After", http_date(at));
    let (_server, result) = one(Protocol::OpenAi, reply).await;
    let error = expect_err(result);
    assert_eq!(error.class, ErrorClass::RateLimit);
    let wait = error.retry_after.expect("a Retry-After date");
    assert!(
        wait > Duration::from_secs(27) && wait <= Duration::from_secs(30),
        "{wait:?}"
    );
}

#[tokio::test]
async fn rate_limit_wait_from_the_provider_body() {
    let message =
        "Rate limit reached for gpt-4o-mini on tokens per min. Please try again in 1.5s. Visit …";
    let (_server, result) = one(
        Protocol::OpenAi,
        Reply::json(429, json!({"error": {"message": message}})),
    )
    .await;
    let error = expect_err(result);
    assert_eq!(error.class, ErrorClass::RateLimit);
    assert_eq!(error.retry_after, Some(Duration::from_millis(1500)));

    let reply = Reply::json(429, json!({"error": {"message": "busy"}}))
        .with_header("retry-after-ms", "250");
    let (_server, result) = one(Protocol::OpenAi, reply).await;
    assert_eq!(
        expect_err(result).retry_after,
        Some(Duration::from_millis(250))
    );

    let (_server, result) = one(
        Protocol::OpenAi,
        Reply::json(429, json!({"error": {"message": "busy"}})),
    )
    .await;
    assert_eq!(expect_err(result).retry_after, None);
}

#[tokio::test]
async fn server_errors() {
    for protocol in BOTH {
        let (_server, result) = one(protocol, Reply::server_error()).await;
        let error = expect_err(result);
        assert_eq!(error.class, ErrorClass::ServerError, "{protocol:?}");
        assert_eq!(error.status, Some(500));
        assert!(error.message.contains("The server had an error"), "{error}");
    }
    let (_server, result) = one(Protocol::Anthropic, Reply::error(529, "Overloaded")).await;
    let error = expect_err(result);
    assert_eq!(
        (error.class, error.status),
        (ErrorClass::ServerError, Some(529))
    );
    assert!(
        error.message.contains("Overloaded [overloaded_error]"),
        "{error}"
    );

    let (_server, result) = one(
        Protocol::OpenAi,
        Reply::raw(502, "<html>Bad Gateway</html>"),
    )
    .await;
    let error = expect_err(result);
    assert_eq!(error.class, ErrorClass::ServerError);
    assert!(
        error.message.contains("<html>Bad Gateway</html>"),
        "{error}"
    );
}

#[tokio::test]
async fn request_timeout_status_is_a_timeout() {
    let (_server, result) = one(Protocol::OpenAi, Reply::error(408, "Request Timeout")).await;
    let error = expect_err(result);
    assert_eq!(
        (error.class, error.status),
        (ErrorClass::Timeout, Some(408))
    );
}

#[tokio::test]
async fn a_hung_server_times_out_within_the_timeout() {
    for protocol in BOTH {
        for reply in [
            Reply::hang(),
            Reply::stall_body(),
            Reply::delay(5_000, Reply::chat_text("late")),
        ] {
            let server = MockServer::start();
            server.push(route(protocol), reply.clone());
            let timeout = Duration::from_millis(300);
            let started = Instant::now();
            let result = complete(
                &reqwest::Client::new(),
                &endpoint(&server, protocol),
                &request("hi"),
                timeout,
            )
            .await;
            let elapsed = started.elapsed();
            let error = expect_err(result);
            assert_eq!(
                error.class,
                ErrorClass::Timeout,
                "{protocol:?} {reply:?}: {error}"
            );
            assert!(elapsed >= timeout, "{elapsed:?}");
            assert!(
                elapsed < timeout + Duration::from_millis(500),
                "{protocol:?} {reply:?} took {elapsed:?}"
            );
            assert!(error.message.contains("300ms"), "{error}");
        }
    }
}

#[tokio::test]
async fn malformed_json_is_invalid() {
    for protocol in BOTH {
        let (_server, result) = one(protocol, Reply::malformed()).await;
        let error = expect_err(result);
        assert_eq!(error.class, ErrorClass::Invalid, "{protocol:?}");
        assert!(error.message.contains("not JSON"), "{error}");
        assert!(
            error.message.contains("{\"id\": \"broken\""),
            "the start of the body is quoted: {error}"
        );
    }
}

#[tokio::test]
async fn a_body_without_the_expected_fields_is_invalid() {
    let cases = [
        (
            Protocol::OpenAi,
            json!({"id": "x", "object": "chat.completion"}),
            "`choices`",
        ),
        (Protocol::OpenAi, json!({"choices": []}), "`choices`"),
        (
            Protocol::OpenAi,
            json!({"choices": [{"index": 0}]}),
            "`choices[0].message`",
        ),
        (
            Protocol::OpenAi,
            json!({"choices": [{"message": {"tool_calls": [{"id": "c", "function": {"arguments": "{}"}}]}}]}),
            "tool_calls[0].function.name",
        ),
        (
            Protocol::OpenAi,
            json!({"choices": [{"message": {"content": null}}]}),
            "neither content nor tool calls",
        ),
        (
            Protocol::Anthropic,
            json!({"id": "msg", "type": "message"}),
            "`content`",
        ),
        (
            Protocol::Anthropic,
            json!({"content": [{"type": "tool_use", "id": "t"}]}),
            "`content[0].name`",
        ),
        (
            Protocol::Anthropic,
            json!({"content": [], "stop_reason": "max_tokens"}),
            "stop_reason: max_tokens",
        ),
    ];
    for (protocol, body, missing) in cases {
        let (_server, result) = one(protocol, Reply::ok(body.clone())).await;
        let error = expect_err(result);
        assert_eq!(error.class, ErrorClass::Invalid, "{body}");
        assert!(error.message.contains(missing), "{body}: {error}");
    }
}

#[tokio::test]
async fn unauthorised_is_a_client_error_with_the_provider_message() {
    for protocol in BOTH {
        let (_server, result) = one(protocol, Reply::error(401, "invalid x-api-key")).await;
        let error = expect_err(result);
        assert_eq!(
            (error.class, error.status),
            (ErrorClass::Client, Some(401)),
            "{protocol:?}"
        );
        assert!(error.message.contains("invalid x-api-key"), "{error}");
        assert_eq!(error.retry_after, None);
    }
    let (_server, result) = one(
        Protocol::OpenAi,
        Reply::json(400, json!({"detail": "model not found"})),
    )
    .await;
    let error = expect_err(result);
    assert_eq!(error.class, ErrorClass::Client);
    assert!(error.message.contains("model not found"), "{error}");
}

#[tokio::test]
async fn connection_refused_is_a_connection_error() {
    for protocol in BOTH {
        let endpoint = Endpoint {
            protocol,
            base_url: format!("{}/v1", refused_base_url()),
            api_key: Some(Secret::new(KEY.into())),
        };
        let started = Instant::now();
        let error =
            expect_err(complete(&reqwest::Client::new(), &endpoint, &request("hi"), TIMEOUT).await);
        assert_eq!(error.class, ErrorClass::Connection, "{error}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(error.message.contains("could not connect"), "{error}");
    }
}

#[tokio::test]
async fn an_invalid_base_url_is_a_client_error() {
    let endpoint = Endpoint {
        protocol: Protocol::OpenAi,
        base_url: "not a url".into(),
        api_key: None,
    };
    let error =
        expect_err(complete(&reqwest::Client::new(), &endpoint, &request("hi"), TIMEOUT).await);
    assert_eq!(error.class, ErrorClass::Client, "{error}");
}

#[tokio::test]
async fn the_api_key_never_appears_in_errors() {
    let echo_key = |status: u16| {
        Reply::from_fn(move |req| {
            let seen = req
                .header("authorization")
                .or(req.header("x-api-key"))
                .unwrap_or_default()
                .to_string();
            Reply::error(status, format!("Incorrect API key provided: {seen}"))
        })
    };
    let echo_body = Reply::from_fn(|req| Reply::raw(200, format!("not json {}", req.raw_body)));
    let mut errors = Vec::new();
    for protocol in BOTH {
        for reply in [
            echo_key(401),
            echo_key(429),
            echo_key(500),
            echo_key(400),
            Reply::from_fn(move |req| {
                Reply::raw(
                    200,
                    format!("{{\"key\": \"{}\"", req.header("x-api-key").unwrap_or(KEY)),
                )
            }),
            echo_body.clone(),
            Reply::malformed(),
            Reply::hang(),
        ] {
            let server = MockServer::start();
            server.push(route(protocol), reply);
            let mut req = request(&format!("my key is {KEY}"));
            req.system = Some(KEY.into());
            let timeout = Duration::from_millis(200);
            errors.push(expect_err(
                complete(
                    &reqwest::Client::new(),
                    &endpoint(&server, protocol),
                    &req,
                    timeout,
                )
                .await,
            ));
        }
        let refused = Endpoint {
            protocol,
            base_url: format!("{}/v1?key={KEY}", refused_base_url()),
            api_key: Some(Secret::new(KEY.into())),
        };
        errors.push(expect_err(
            complete(&reqwest::Client::new(), &refused, &request("hi"), TIMEOUT).await,
        ));
        let bad_header = Endpoint {
            api_key: Some(Secret::new(format!("{KEY}\n"))),
            ..refused.clone()
        };
        errors.push(expect_err(
            complete(
                &reqwest::Client::new(),
                &bad_header,
                &request("hi"),
                TIMEOUT,
            )
            .await,
        ));
        let plain = Endpoint {
            base_url: refused_base_url(),
            ..refused
        };
        assert!(!format!("{plain:?}").contains(KEY));
    }
    assert!(errors
        .iter()
        .any(|e| e.message.contains("Incorrect API key provided: <redacted>")));
    for error in &errors {
        let shown = format!("{error} {error:?} {error:#?}");
        assert!(!shown.contains(KEY), "the key leaked: {shown}");
        assert!(
            !shown.contains("SUPERSECRET"),
            "part of the key leaked: {shown}"
        );
    }
}

#[tokio::test]
async fn concurrent_calls_are_served_concurrently() {
    let server = MockServer::start();
    server.always(
        CHAT,
        Reply::delay(200, Reply::chat_text("done").with_usage(3, 2)),
    );
    let http = reqwest::Client::new();
    let endpoint = Arc::new(endpoint(&server, Protocol::OpenAi));
    let started = Instant::now();
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let (http, endpoint) = (http.clone(), endpoint.clone());
            tokio::spawn(async move {
                complete(&http, &endpoint, &request(&format!("call {i}")), TIMEOUT).await
            })
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.await.unwrap().unwrap().text.as_deref(), Some("done"));
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(1500),
        "20 calls of 200 ms took {elapsed:?}"
    );
    assert_eq!(server.hits(CHAT), 20);
    assert_eq!(server.tokens_served(), 100);
}

// ---- The mock server itself ------------------------------------------------

#[tokio::test]
async fn mock_server_tool_routes_queues_and_shutdown() {
    let server = MockServer::start();
    let http = reqwest::Client::new();
    server.script(
        "POST /tools/send",
        [Reply::ok(json!({"sent": 1})), Reply::error(503, "down")],
    );
    server.always(
        "/tools/echo",
        Reply::from_fn(|req| Reply::ok(json!({"method": req.method, "got": req.body}))),
    );

    let sent = http
        .post(server.url("/tools/send"))
        .json(&json!({"to": "a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    assert_eq!(sent.json::<Value>().await.unwrap(), json!({"sent": 1}));
    assert_eq!(server.pending("POST /tools/send"), 1);
    assert_eq!(
        http.get(server.url("/tools/send"))
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "only POST is scripted"
    );
    assert_eq!(
        http.post(server.url("/tools/send"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );

    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let reply = http
            .request(method.clone(), server.url("/tools/echo?x=1"))
            .json(&json!([1]))
            .send()
            .await
            .unwrap();
        assert_eq!(
            reply.json::<Value>().await.unwrap(),
            json!({"method": method.as_str(), "got": [1]})
        );
    }
    let unscripted = http.post(server.url(CHAT)).send().await.unwrap();
    assert_eq!(unscripted.status(), 404);
    assert!(unscripted
        .text()
        .await
        .unwrap()
        .contains("nothing scripted for POST /v1/chat/completions"));

    let requests = server.requests();
    assert_eq!(requests.len(), 7);
    assert_eq!(requests[0].body, json!({"to": "a"}));
    assert_eq!(requests[3].query.as_deref(), Some("x=1"));
    assert!(requests
        .windows(2)
        .all(|w| w[0].seq + 1 == w[1].seq && w[0].received <= w[1].received));

    // A hung request does not keep the server (or the test) alive.
    server.push("/tools/slow", Reply::hang());
    let slow = tokio::spawn({
        let (http, url) = (http.clone(), server.url("/tools/slow"));
        async move { http.get(url).send().await }
    });
    while server.hits("/tools/slow") == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let addr = server.addr();
    drop(server);
    assert!(
        slow.await.unwrap().is_err(),
        "the hung request ends when the server stops"
    );
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "nothing listens after drop"
    );
}

#[test]
fn http_dates_format() {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
    assert_eq!(http_date(at), "Sun, 06 Nov 1994 08:49:37 GMT");
    let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(1_835_481_599);
    assert_eq!(http_date(leap), "Tue, 29 Feb 2028 23:59:59 GMT");
}

// ---- Through `flowc run` ----------------------------------------------------

const TYPED_ON_ANTHROPIC: &str = r#"
use std.models.{anthropic, openai}

type Verdict { label: "ham" | "spam", score: number }

model judge = anthropic("claude-haiku-4-5") { max_tokens: 300 }

flow classify(text: string) -> Verdict {
  budget { tokens 10k, cost $0.10, steps 5, wall 1m }
  let verdict = llm judge -> Verdict {
    prompt "Classify this message: {text}"
    retry 1 on invalid
  }
  return verdict
}
"#;

/// `ANTHROPIC_BASE_URL` as the SDK documents it (the host, no `/v1`), a
/// typed step answered through the forced tool, an invalid first answer
/// fed back, and a summary whose tiny cost is not `$0.0000`.
#[test]
fn a_typed_step_on_anthropic_through_the_real_binary() {
    let server = MockServer::start();
    server.script(
        MESSAGES,
        [
            Reply::chat_tool_call("output", json!({"label": "maybe", "score": 0.5})),
            Reply::chat_tool_call("output", json!({"label": "spam", "score": 0.97}))
                .with_usage(12, 7),
        ],
    );
    let outcome = support::cli::Test::new()
        .file("classify.flow", TYPED_ON_ANTHROPIC)
        .args([
            "run",
            "classify.flow",
            "--input",
            r#"{"text": "WIN A PRIZE"}"#,
        ])
        .env("ANTHROPIC_BASE_URL", &server.base_url())
        .env("ANTHROPIC_API_KEY", KEY)
        .run();
    assert_eq!(outcome.json(), json!({"label": "spam", "score": 0.97}));

    let sent = server.requests_to(MESSAGES);
    assert_eq!(sent.len(), 2, "one invalid answer, one retry");
    for request in &sent {
        assert_eq!(request.path, MESSAGES);
        assert_eq!(
            request.body["tool_choice"],
            json!({"type": "tool", "name": "output"})
        );
        let schema = &request.body["tools"][0]["input_schema"];
        assert_eq!(
            schema["properties"]["label"]["enum"],
            json!(["ham", "spam"]),
            "{schema}"
        );
    }
    let feedback = sent[1].body["messages"].to_string();
    assert!(
        feedback.contains("maybe") && feedback.contains("not valid"),
        "{feedback}"
    );

    // claude-haiku-4-5 at $1 / $5 per million: 10+12 in, 5+7 out.
    let expected = (22.0 * 1.0 + 12.0 * 5.0) / 1e6;
    assert_eq!(flowc::exec::dollars(expected), "$0.000082");
    assert!(
        outcome.stderr.contains("cost $0.000082,"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn sampling_parameters_on_a_reasoning_model_are_refused_at_check_time() {
    let outcome = support::cli::Test::new()
        .file(
            "m.flow",
            "use std.models.{openai}\nmodel thinker = openai(\"o3-mini\") { temperature: 0.2, top_p: 0.9, max_tokens: 500 }\n",
        )
        .args(["check", "--format", "short", "m.flow"])
        .status(1)
        .run();
    assert!(
        outcome.stdout.contains(
            "error[T007]: `o3-mini` is an OpenAI reasoning model, whose API refuses `temperature`"
        ) && outcome.stdout.contains("refuses `top_p`"),
        "{}",
        outcome.stdout
    );
}
