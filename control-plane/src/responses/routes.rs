//! The HTTP handlers: the filter's ownership check and the four id-based calls.

use super::proxy::{self, Op};
use super::service::{self, Error};
use super::{store, Responses};
use crate::auth::identity::Identity;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// `GET /internal/v1/responses/{id}/owner`: whether the caller the filter vouches for owns `id`.
/// 204 (no body) when it does; 404 (OpenAI error) when not, after waiting for a record still in
/// flight; 401 without the deployment's secret and the caller's ids.
pub async fn owner(State(r): State<Arc<Responses>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let who = match Identity::from_headers(&headers, &r.secret) {
        Ok(who) => who,
        Err(e) => return Error::Untrusted(e).into_response(),
    };
    match service::owned(&r.gw.db, &id, &who, r.grace).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Checks the caller owns `id`, forwards `op` to the provider of the model that made it, and
/// relays the answer. Nothing is forwarded for a response that is not the caller's.
async fn call(r: &Responses, id: &str, op: Op, query: Option<String>, headers: &HeaderMap, body: Bytes) -> Response {
    let who = match Identity::from_headers(headers, &r.secret) {
        Ok(who) => who,
        Err(e) => return Error::Untrusted(e).into_response(),
    };
    let owner = match service::owned(&r.gw.db, id, &who, r.grace).await {
        Ok(owner) => owner,
        Err(e) => return e.into_response(),
    };
    let group = match service::group(&r.gw.models(), &owner) {
        Ok(group) => group,
        Err(e) => return e.into_response(),
    };
    let answer = match proxy::forward(&r.client, &group, id, op, query.as_deref(), headers, body).await {
        Ok(answer) => answer,
        Err(e) => return e.into_response(),
    };
    // Deleted, or gone at the provider already: nothing is left to own.
    if op == Op::Delete && (answer.status().is_success() || answer.status() == StatusCode::NOT_FOUND) {
        if let Err(e) = store::delete(&r.gw.db, id).await {
            // The record expires with its TTL; the provider's answer stands.
            tracing::warn!(response = id, error = %e, "cannot delete a Responses API owner record");
        }
    }
    proxy::relay(answer)
}

/// `GET /v1/responses/{id}` (and `/responses/{id}`): retrieve, `?stream=true` as SSE.
pub async fn retrieve(
    State(r): State<Arc<Responses>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    call(&r, &id, Op::Retrieve, query, &headers, Bytes::new()).await
}

/// `DELETE /v1/responses/{id}`: delete at the provider, and the owner record with it.
pub async fn delete(
    State(r): State<Arc<Responses>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    call(&r, &id, Op::Delete, query, &headers, Bytes::new()).await
}

/// `POST /v1/responses/{id}/cancel`: cancel a background response.
pub async fn cancel(
    State(r): State<Arc<Responses>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    call(&r, &id, Op::Cancel, query, &headers, body).await
}

/// `GET /v1/responses/{id}/input_items`: the response's input items, paginated by the provider.
pub async fn input_items(
    State(r): State<Arc<Responses>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    call(&r, &id, Op::InputItems, query, &headers, Bytes::new()).await
}

#[cfg(test)]
mod tests {
    use super::super::router;
    use super::*;
    use crate::config::models::ModelsConfig;
    use crate::db::testing;
    use crate::gateway::Gateway;
    use crate::xds::resources::{Layout, ListenerLimits};
    use aqueduct_policy::filter::{SECRET_HEADER, SERVICE_ACCOUNT_ID_HEADER, TOKEN_ID_HEADER, USER_ID_HEADER};
    use axum::extract::Request;
    use std::sync::Mutex;
    use std::time::Duration;

    /// What a fake provider deployment saw: method, path and query, and the request's headers.
    type Seen = Arc<Mutex<Vec<(String, String, HeaderMap)>>>;

    /// A provider deployment on a local port: `holds` says whether it has the responses (404
    /// otherwise, like a deployment that did not make them).
    async fn provider(holds: bool) -> (u16, Seen) {
        let seen: Seen = Arc::default();
        let app = axum::Router::new().fallback({
            let seen = seen.clone();
            move |req: Request| {
                let seen = seen.clone();
                async move {
                    let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
                    seen.lock().unwrap().push((req.method().to_string(), path.clone(), req.headers().clone()));
                    if !holds {
                        return (StatusCode::NOT_FOUND, [("content-type", "application/json")], "{}".to_string());
                    }
                    let body =
                        if path.contains("stream=true") { "event: response.created\ndata: {}\n\n" } else { "{}" };
                    let ct = if path.contains("stream=true") { "text/event-stream" } else { "application/json" };
                    (StatusCode::OK, [("content-type", ct)], format!("{}{body}", req.method()))
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (port, seen)
    }

    /// The control plane's Responses routes over `models`, with a short grace; its base URL.
    async fn control_plane(db: crate::db::Db, models: &str) -> String {
        let layout = Layout {
            listen: ([127, 0, 0, 1], 8080).into(),
            control_plane_http: ([127, 0, 0, 1], 18001).into(),
            wasm_path: "/f.wasm".into(),
            max_body_bytes: 1 << 20,
            limits: ListenerLimits::default(),
        };
        let models = ModelsConfig::parse(models, &|_| None).unwrap();
        let gw = Arc::new(Gateway::new(db, layout, "models.yaml".into(), models));
        let mut state = Responses::new(gw, "s3cret".into()).unwrap();
        state.grace = Duration::from_millis(100);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router(Arc::new(state))).await });
        base
    }

    fn deployment(name: &str, port: u16) -> String {
        format!(
            "  - model_name: {name}\n    litellm_params:\n      model: openai/up\n      \
             api_base: http://127.0.0.1:{port}/v1\n      api_key: sk-provider\n"
        )
    }

    async fn own(db: &crate::db::Db, id: &str, user: i64, sa: Option<i64>, model: &str) {
        let now = chrono::Utc::now().timestamp();
        let owner = store::Owner {
            response_id: id.into(),
            owner_user_id: user,
            owner_service_account_id: sa,
            token_id: 1,
            model: model.into(),
            created_at: now,
            expires_at: now + 60,
        };
        crate::with_pool!(db, p => {
            store::insert_claims(std::slice::from_ref(&owner)).build().execute(p).await.unwrap();
        });
    }

    /// A request as the filter hands it over for user `user` (and service account `sa`).
    fn from_filter(req: reqwest::RequestBuilder, user: i64, sa: Option<i64>) -> reqwest::RequestBuilder {
        let req = req.header(SECRET_HEADER, "s3cret").header(TOKEN_ID_HEADER, "1").header(USER_ID_HEADER, user);
        match sa {
            Some(sa) => req.header(SERVICE_ACCOUNT_ID_HEADER, sa),
            None => req,
        }
    }

    async fn error_code(resp: reqwest::Response) -> (u16, String) {
        let status = resp.status().as_u16();
        let v: serde_json::Value = resp.json().await.unwrap();
        (status, v["error"]["code"].as_str().unwrap_or_default().to_string())
    }

    #[tokio::test]
    async fn owned_responses_are_forwarded_to_their_models_provider_and_others_are_not() {
        for t in testing::all().await {
            let (empty_port, empty) = provider(false).await;
            let (holder_port, holder) = provider(true).await;
            let (_, unused) = provider(true).await;
            let closed = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let models = format!(
                "model_list:\n{}{}{}",
                deployment("m", empty_port),
                deployment("m", holder_port),
                deployment("down", closed)
            );
            let base = control_plane(t.db.clone(), &models).await;
            own(&t.db, "resp_mine", 3, None, "m").await;
            own(&t.db, "resp_acct", 3, Some(7), "m").await;
            own(&t.db, "resp_old", 3, None, "retired").await;
            own(&t.db, "resp_down", 3, None, "down").await;
            let http = reqwest::Client::new();

            // The filter's ownership check.
            let owner = |id: &str, user: i64, sa: Option<i64>| {
                from_filter(http.get(format!("{base}/internal/v1/responses/{id}/owner")), user, sa).send()
            };
            let r = owner("resp_mine", 3, None).await.unwrap();
            assert_eq!(r.status(), StatusCode::NO_CONTENT);
            assert!(r.bytes().await.unwrap().is_empty());
            assert_eq!(owner("resp_acct", 9, Some(7)).await.unwrap().status(), StatusCode::NO_CONTENT);
            for (id, user, sa) in
                [("resp_mine", 4, None), ("resp_mine", 3, Some(7)), ("resp_acct", 3, None), ("resp_x", 3, None)]
            {
                assert_eq!(error_code(owner(id, user, sa).await.unwrap()).await, (404, "response_not_found".into()));
            }
            let r = http.get(format!("{base}/internal/v1/responses/resp_mine/owner")).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "no secret");
            let r = http
                .get(format!("{base}/internal/v1/responses/resp_mine/owner"))
                .header(SECRET_HEADER, "wrong")
                .header(TOKEN_ID_HEADER, "1")
                .header(USER_ID_HEADER, "3")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "a wrong secret");

            // Retrieve: the deployment without it answers 404, the next one has it.
            let q = "include%5B%5D=message.output_text.logprobs&stream=false";
            let r = from_filter(http.get(format!("{base}/v1/responses/resp_mine?{q}")), 3, None)
                .header("authorization", "Bearer client-key")
                .header("openai-beta", "responses=v1")
                .header("x-other", "dropped")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.text().await.unwrap(), "GET{}");
            let seen = holder.lock().unwrap().pop().unwrap();
            assert_eq!((seen.0.as_str(), seen.1.as_str()), ("GET", format!("/v1/responses/resp_mine?{q}").as_str()));
            assert_eq!(seen.2["authorization"], "Bearer sk-provider", "the provider key, never the client's");
            assert_eq!(seen.2["openai-beta"], "responses=v1");
            assert!(seen.2.keys().all(|k| !k.as_str().starts_with("x-aqueduct-") && k != "x-other"), "{:?}", seen.2);
            assert_eq!(empty.lock().unwrap().len(), 1, "the first deployment was asked first");

            // Streamed retrieve, bare path, cancel and input items.
            let r = from_filter(http.get(format!("{base}/responses/resp_acct?stream=true")), 5, Some(7))
                .send()
                .await
                .unwrap();
            assert_eq!(r.headers()["content-type"], "text/event-stream");
            assert!(r.text().await.unwrap().contains("event: response.created"));
            let r =
                from_filter(http.post(format!("{base}/v1/responses/resp_mine/cancel")), 3, None).send().await.unwrap();
            assert_eq!(r.text().await.unwrap(), "POST{}");
            let r =
                from_filter(http.get(format!("{base}/v1/responses/resp_mine/input_items?limit=2&order=asc")), 3, None)
                    .send()
                    .await
                    .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(
                holder.lock().unwrap().last().unwrap().1,
                "/v1/responses/resp_mine/input_items?limit=2&order=asc"
            );

            // Not the caller's: 404, and nothing reaches a provider.
            let before = holder.lock().unwrap().len() + empty.lock().unwrap().len();
            for req in [
                http.get(format!("{base}/v1/responses/resp_mine")),
                http.delete(format!("{base}/v1/responses/resp_mine")),
                http.post(format!("{base}/v1/responses/resp_mine/cancel")),
                http.get(format!("{base}/v1/responses/resp_mine/input_items")),
            ] {
                assert_eq!(error_code(from_filter(req, 4, None).send().await.unwrap()).await.0, 404);
            }
            assert_eq!(holder.lock().unwrap().len() + empty.lock().unwrap().len(), before, "nothing forwarded");
            assert!(unused.lock().unwrap().is_empty());
            let r = http.get(format!("{base}/v1/responses/resp_mine")).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

            // The model is gone from the models file, or its provider is unreachable.
            let r = from_filter(http.get(format!("{base}/v1/responses/resp_old")), 3, None).send().await.unwrap();
            assert_eq!(error_code(r).await, (404, "model_not_found".into()));
            let r = from_filter(http.get(format!("{base}/v1/responses/resp_down")), 3, None).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::BAD_GATEWAY);

            // Delete: forwarded, and the record goes with it.
            let r = from_filter(http.delete(format!("{base}/v1/responses/resp_mine")), 3, None).send().await.unwrap();
            assert_eq!(r.text().await.unwrap(), "DELETE{}");
            assert_eq!(error_code(owner("resp_mine", 3, None).await.unwrap()).await.0, 404, "forgotten");
        }
    }
}
