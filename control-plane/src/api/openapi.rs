//! The OpenAPI 3.1 document of the management API, served at `GET /api/v1/openapi.json`,
//! generated from the route list (`management_routes!` in `api/mod.rs`) and the request and
//! answer types each route names (their `utoipa` schemas): a route cannot be served without
//! being described, and the document cannot describe a field a type does not have.

use serde_json::{json, Map, Value};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

/// The document under construction.
#[derive(Default)]
pub struct Builder {
    paths: Map<String, Value>,
    components: Vec<(String, RefOr<Schema>)>,
}

fn s(t: &str) -> Value {
    json!({"type": t})
}

impl Builder {
    /// `T`'s schema, inline; the named schemas it refers to join the components.
    pub fn schema<T: ToSchema>(&mut self) -> Value {
        T::schemas(&mut self.components);
        serde_json::to_value(T::schema()).unwrap_or(Value::Null)
    }

    /// Adds one operation.
    pub fn operation(
        &mut self,
        method: &str,
        path: &str,
        summary: &str,
        body: Option<Value>,
        status: u16,
        answer: Option<Value>,
    ) {
        let method = method.to_ascii_lowercase();
        let mut op = json!({"summary": summary, "responses": {}});
        let mut params = Vec::new();
        for p in ["id", "user_id", "name"] {
            if path.contains(&format!("{{{p}}}")) {
                params.push(json!({"name": p, "in": "path", "required": true, "schema": s("string")}));
            }
        }
        let short = path.trim_start_matches("/api/v1");
        if short.starts_with("/usage") {
            params.extend(usage_params(short.ends_with("/requests")));
        } else if method == "get" && answer.as_ref().is_some_and(|a| a["properties"]["has_more"].is_object()) {
            params.push(json!({"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}));
            params.push(json!({"name": "after", "in": "query", "required": false, "schema": s("string"), "description": "Only ids above this one."}));
        }
        if !params.is_empty() {
            op["parameters"] = params.into();
        }
        op["security"] = json!([{"bearer": []}, {"session": []}]);
        if let Some(b) = body {
            op["requestBody"] = json!({"required": !path.contains("/members/"),
                "content": {"application/json": {"schema": b}}});
        }
        let mut ok = json!({"description": "Success"});
        if let Some(a) = &answer {
            ok["content"] = json!({"application/json": {"schema": a}});
        }
        op["responses"][status.to_string()] = ok;
        if method == "put" && path.contains("/members/") {
            op["responses"]["200"] = json!({"description": "Membership updated",
                "content": {"application/json": {"schema": answer.unwrap_or(Value::Null)}}});
        }
        for (code, desc) in [
            ("400", "Bad input; `param` names the field"),
            ("401", "Missing, invalid, revoked or expired key"),
            ("403", "The caller's role does not allow this"),
            ("404", "Not found, or not visible to the caller"),
            ("409", "Uniqueness violation, a cap reached, or a state conflict"),
        ] {
            op["responses"][code] = json!({"description": desc,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
        }
        let entry = self.paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[method] = op;
    }
}

/// Query parameters of the usage API.
fn usage_params(log: bool) -> Vec<Value> {
    let q = |name: &str, schema: Value, desc: &str| json!({"name": name, "in": "query", "required": false, "schema": schema, "description": desc});
    let mut out = vec![
        q("from", json!({"type": "string", "format": "date-time"}), "Start (inclusive); default 24 h before `to`"),
        q("to", json!({"type": "string", "format": "date-time"}), "End (exclusive); default now"),
        q("format", json!({"type": "string", "enum": ["json", "csv"]}), "csv: a CSV file instead of JSON"),
    ];
    for d in ["org_id", "team_id", "user_id", "service_account_id", "token_id", "model", "end_user"] {
        out.push(q(d, s("string"), "Exact match"));
    }
    out.push(q("status", s("integer"), "Exact HTTP status"));
    if log {
        out.push(q(
            "limit",
            json!({"type": "integer", "minimum": 1, "maximum": 10000, "default": 100}),
            "Rows per page",
        ));
        out.push(q("after", s("string"), "`next` of the previous page"));
    } else {
        out.push(q(
            "bucket",
            json!({"type": "string", "enum": ["minute", "hour", "day"], "default": "hour"}),
            "Series granularity",
        ));
        out.push(q(
            "group_by",
            s("string"),
            "Comma list of org_id, team_id, user_id, service_account_id, token_id, model, end_user, status",
        ));
    }
    out
}

/// The document.
pub fn document() -> Value {
    let mut b = Builder::default();
    super::operations(&mut b);
    b.paths.insert(
        "/api/v1/openapi.json".into(),
        json!({"get": {"summary": "This document (no key needed)",
            "responses": {"200": {"description": "Success", "content": {"application/json": {"schema": s("object")}}}}}}),
    );
    let mut schemas: Map<String, Value> =
        b.components.into_iter().map(|(n, sc)| (n, serde_json::to_value(sc).unwrap_or(Value::Null))).collect();
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "required": ["error"], "properties": {"error": {"type": "object",
            "required": ["message", "type"], "properties": {
            "message": s("string"), "type": s("string"),
            "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}),
    );
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Aqueduct management API", "version": env!("CARGO_PKG_VERSION")},
        "paths": b.paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": crate::auth::SESSION_COOKIE,
                    "description": "The admin UI's session; requests other than GET also need the session's CSRF token in the x-csrf-token header."}
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    /// Every served route is described with its method; the document is a valid OpenAPI 3.1
    /// document (it reads back as one) and every reference in it resolves.
    #[test]
    fn the_document_describes_every_route_and_validates() {
        let doc = document();
        for (method, path) in super::super::MANAGEMENT_ROUTES {
            let op = &doc["paths"][*path][method.to_ascii_lowercase()];
            assert!(op["summary"].is_string() && op["responses"].is_object(), "{method} {path} is not described");
        }
        let parsed: utoipa::openapi::OpenApi = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            serde_json::to_value(&parsed).unwrap()["paths"].as_object().map(Map::len),
            doc["paths"].as_object().map(Map::len)
        );
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{r}"));
            assert!(doc["components"]["schemas"][name].is_object(), "unresolved {r}");
        }
    }

    /// The fields a body accepts are the fields its schema documents.
    #[test]
    fn bodies_accept_exactly_their_documented_fields() {
        use crate::domain::input::{field_names, Input};
        use crate::tenancy::input::NewOrg;
        let names = field_names::<NewOrg>();
        assert!(names.contains(&"name".to_string()) && names.contains(&"requests_per_minute".to_string()), "{names:?}");
        assert_eq!(names.len(), 1 + crate::tenancy::model::POLICY_COLUMNS.len(), "{names:?}");
        let e = NewOrg::parse(json!({"name": "a", "colour": "red"})).err().map(|e| (e.status(), e.1));
        assert_eq!(e, Some((400, Some("colour".to_string()))));
        let doc = document();
        let body = &doc["paths"]["/api/v1/orgs"]["post"]["requestBody"]["content"]["application/json"]["schema"];
        let mut documented: Vec<String> = Vec::new();
        fn props(v: &Value, out: &mut Vec<String>) {
            if let Some(m) = v["properties"].as_object() {
                out.extend(m.keys().cloned());
            }
            for k in ["allOf", "oneOf"] {
                if let Some(a) = v[k].as_array() {
                    a.iter().for_each(|x| props(x, out));
                }
            }
        }
        props(body, &mut documented);
        documented.sort();
        let mut names = names;
        names.sort();
        assert_eq!(documented, names);
    }
}
