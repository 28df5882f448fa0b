//! Input every transport shares: strict JSON objects (unknown fields, wrong types and bad
//! values are 400s naming the field), ids as strings, pagination, policy fields, and the
//! tenancy settings. The API hands its parsed body here; the admin UI builds the same values
//! from its forms.

use super::Error;
use crate::tenancy::model::{NameList, PolicyFields};
use crate::tenancy::store::{Sql, Val};
use aqueduct_policy::ApiError;
use serde_json::{Map, Value};

/// Tenancy settings the API enforces.
#[derive(Debug, Clone, Copy)]
pub struct TenancySettings {
    /// Live service accounts per team.
    pub max_service_accounts_per_team: i64,
    /// Live (not revoked) personal keys per user.
    pub max_keys_per_user: i64,
}

impl Default for TenancySettings {
    fn default() -> Self {
        Self { max_service_accounts_per_team: 10, max_keys_per_user: 10 }
    }
}

/// Longest name (org, team, service account, key).
pub const MAX_NAME: usize = 255;
/// Longest email.
pub const MAX_EMAIL: usize = 320;
/// Longest excluded model / MCP server name.
pub const MAX_EXCLUDED_NAME: usize = 256;
/// Longest description or OIDC group.
pub const MAX_TEXT: usize = 4096;

/// Limit columns of the policy fields (the last six of the shared column list).
pub const LIMIT_FIELDS: &[&str] = crate::tenancy::model::POLICY_COLUMNS.split_at(4).1;
/// Exclusion fields of the policy fields (the first four).
pub const EXCLUSION_FIELDS: &[&str] = crate::tenancy::model::POLICY_COLUMNS.split_at(4).0;

/// A 400 naming `param`.
pub fn bad(param: &str, msg: impl Into<String>) -> Error {
    Error::from(ApiError::bad_request(msg.into())).with_param(param)
}

/// A 403.
pub fn forbidden(msg: impl Into<String>) -> Error {
    ApiError::new(403, msg.into()).code("forbidden").into()
}

/// A 404 for `what` `id` (also used for entities the caller may not see).
pub fn not_found(what: &str, id: &str) -> Error {
    ApiError::new(404, format!("{what} {id} not found.")).code("not_found").into()
}

/// A 409 naming `param`.
pub fn conflict(param: &str, msg: impl Into<String>) -> Error {
    Error::from(ApiError::new(409, msg.into()).code("conflict")).with_param(param)
}

/// Maps a unique-constraint violation to 409 on `param`; anything else stays a database error.
pub fn unique_or(e: sqlx::Error, param: &str, msg: &str) -> Error {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => conflict(param, msg),
        _ => e.into(),
    }
}

/// Parses a path or body id (`"17"`); anything else is `None`.
pub fn parse_id(s: &str) -> Option<i64> {
    s.parse::<i64>().ok().filter(|i| *i > 0)
}

/// An id as the API shows it.
pub fn id_str(id: i64) -> String {
    id.to_string()
}

/// Unix seconds as RFC 3339.
pub fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).map(|t| t.to_rfc3339()).unwrap_or_default()
}

/// A request body parsed by the transport but not yet looked at: a service checks who may act
/// (and on what) before it reads the body, so a caller learns nothing about entities it cannot
/// see or change from how their bodies are judged.
pub type Parsed<T> = Result<T, Error>;

/// A typed request body. Its accepted fields are its documented schema's properties
/// ([`field_names`]): a field the document does not name is refused, and a field the type reads
/// is documented.
pub trait Input: utoipa::ToSchema + Sized {
    /// Reads the fields, each checked (the 400 names the field).
    fn take(f: &mut Fields) -> Result<Self, Error>;

    /// Parses a JSON value: an object with only the documented fields, each checked.
    fn parse(v: Value) -> Result<Self, Error> {
        let names = field_names::<Self>();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        Self::take(&mut Fields::parse(v, &names)?)
    }
}

/// The property names of `T`'s schema (with its flattened parts).
pub fn field_names<T: utoipa::PartialSchema>() -> Vec<String> {
    use utoipa::openapi::schema::Schema;
    use utoipa::openapi::RefOr;
    fn walk(s: &RefOr<Schema>, out: &mut Vec<String>) {
        match s {
            RefOr::T(Schema::Object(o)) => out.extend(o.properties.keys().cloned()),
            RefOr::T(Schema::AllOf(a)) => a.items.iter().for_each(|i| walk(i, out)),
            // A flattened part with its own description is wrapped in a one-item `oneOf`.
            RefOr::T(Schema::OneOf(o)) => o.items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&T::schema(), &mut out);
    out
}

/// A JSON object body, checked field by field.
pub struct Fields(Map<String, Value>);

impl Fields {
    /// Accepts only an object whose keys are all in `allowed`.
    pub fn parse(v: Value, allowed: &[&str]) -> Result<Self, Error> {
        let Value::Object(map) = v else {
            return Err(ApiError::bad_request("The request body must be a JSON object.").into());
        };
        if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(bad(k, format!("Unknown field '{k}'.")));
        }
        Ok(Self(map))
    }

    /// Whether `k` was given.
    pub fn has(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }

    /// Keys given.
    pub fn keys(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    fn take(&mut self, k: &str) -> Option<Value> {
        self.0.remove(k)
    }

    /// The fields not taken yet (for a type that reads them as a whole).
    pub fn rest(&mut self) -> Map<String, Value> {
        std::mem::take(&mut self.0)
    }

    /// A required string of 1..=`max` characters (trimmed).
    pub fn req_str(&mut self, k: &str, max: usize) -> Result<String, Error> {
        self.opt_str(k, max)?.ok_or_else(|| bad(k, format!("'{k}' is required.")))
    }

    /// An optional string of 1..=`max` characters (trimmed); null counts as absent.
    pub fn opt_str(&mut self, k: &str, max: usize) -> Result<Option<String>, Error> {
        match self.take(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                let s = s.trim().to_string();
                if s.is_empty() || s.chars().count() > max {
                    Err(bad(k, format!("'{k}' must be 1 to {max} characters.")))
                } else {
                    Ok(Some(s))
                }
            }
            Some(_) => Err(bad(k, format!("'{k}' must be a string."))),
        }
    }

    /// An optional name (1..=255 characters).
    pub fn req_str_opt(&mut self, k: &str) -> Result<Option<String>, Error> {
        self.opt_str(k, MAX_NAME)
    }

    /// An optional string of 1..=`max` characters.
    pub fn req_str_opt_max(&mut self, k: &str, max: usize) -> Result<Option<String>, Error> {
        self.opt_str(k, max)
    }

    /// An optional free-text string of at most `max` characters (may be empty).
    pub fn opt_text(&mut self, k: &str, max: usize) -> Result<Option<String>, Error> {
        match self.take(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s)),
            Some(Value::String(_)) => Err(bad(k, format!("'{k}' must be at most {max} characters."))),
            Some(_) => Err(bad(k, format!("'{k}' must be a string."))),
        }
    }

    /// An optional boolean.
    pub fn opt_bool(&mut self, k: &str) -> Result<Option<bool>, Error> {
        match self.take(k) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(bad(k, format!("'{k}' must be true or false."))),
        }
    }

    /// An optional id: a string of digits (a JSON integer is accepted too).
    pub fn opt_id(&mut self, k: &str) -> Result<Option<i64>, Error> {
        match self.take(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                parse_id(&s).map(Some).ok_or_else(|| bad(k, format!("'{k}' must be an id like \"17\".")))
            }
            Some(Value::Number(n)) => n
                .as_i64()
                .filter(|i| *i > 0)
                .map(Some)
                .ok_or_else(|| bad(k, format!("'{k}' must be an id like \"17\"."))),
            Some(_) => Err(bad(k, format!("'{k}' must be an id like \"17\"."))),
        }
    }

    /// A required id.
    pub fn req_id(&mut self, k: &str) -> Result<i64, Error> {
        self.opt_id(k)?.ok_or_else(|| bad(k, format!("'{k}' is required.")))
    }

    /// An optional RFC 3339 time as unix seconds; null counts as absent.
    pub fn opt_time(&mut self, k: &str) -> Result<Option<Option<i64>>, Error> {
        match self.take(k) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(&s)
                .map(|t| Some(Some(t.timestamp())))
                .map_err(|_| bad(k, format!("'{k}' must be an RFC 3339 time."))),
            Some(_) => Err(bad(k, format!("'{k}' must be an RFC 3339 time."))),
        }
    }

    /// The policy fields given, validated.
    pub fn policy(&mut self) -> Result<PolicyPatch, Error> {
        let mut sets = Vec::new();
        for k in ["excluded_models", "excluded_mcp_servers"] {
            match self.take(k) {
                None => {}
                Some(Value::Array(items)) => {
                    let mut names = Vec::with_capacity(items.len());
                    for it in items {
                        match it {
                            Value::String(s) if !s.trim().is_empty() && s.chars().count() <= MAX_EXCLUDED_NAME => {
                                names.push(s.trim().to_string());
                            }
                            _ => {
                                return Err(bad(
                                    k,
                                    format!("Each of '{k}' must be a string of 1 to {MAX_EXCLUDED_NAME} characters."),
                                ))
                            }
                        }
                    }
                    names.sort();
                    names.dedup();
                    sets.push((k, Val::Text(NameList(names).to_json())));
                }
                Some(_) => return Err(bad(k, format!("'{k}' must be an array of names."))),
            }
        }
        for k in ["merge_excluded_models", "merge_excluded_mcp_servers"] {
            if let Some(b) = self.opt_bool(k)? {
                sets.push((k, Val::Bool(b)));
            }
        }
        for k in LIMIT_FIELDS {
            match self.take(k) {
                None => {}
                Some(Value::Null) => sets.push((k, Val::Int(None))),
                Some(Value::Number(n)) => match n.as_i64() {
                    Some(i) if i >= 0 => sets.push((k, Val::Int(Some(i)))),
                    _ => {
                        return Err(bad(
                            k,
                            format!("'{k}' must be a whole number ≥ 0 (0 allows nothing), or null to unset."),
                        ))
                    }
                },
                Some(_) => return Err(bad(k, format!("'{k}' must be a whole number ≥ 0, or null to unset."))),
            }
        }
        Ok(PolicyPatch(sets))
    }
}

/// Policy columns to set.
#[derive(Debug, Default, Clone)]
pub struct PolicyPatch(pub Vec<(&'static str, Val)>);

/// The policy fields as a request documents them: every one optional; a limit may be `null`
/// to unset it. The properties are [`crate::tenancy::model::POLICY_COLUMNS`], the list
/// [`Fields::policy`] reads, so the document cannot name another set.
impl utoipa::PartialSchema for PolicyPatch {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
        let mut o = ObjectBuilder::new();
        for &k in crate::tenancy::model::POLICY_COLUMNS {
            let field: utoipa::openapi::schema::Schema = if k.starts_with("merge_") {
                ObjectBuilder::new()
                    .schema_type(Type::Boolean)
                    .description(Some(
                        "Whether this level inherits the exclusions of the levels above it (default true).",
                    ))
                    .into()
            } else if k.starts_with("excluded_") {
                ArrayBuilder::new()
                    .items(ObjectBuilder::new().schema_type(Type::String).max_length(Some(MAX_EXCLUDED_NAME)))
                    .description(Some("Names this level may not use."))
                    .into()
            } else {
                ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::SchemaType::from_iter([Type::Integer, Type::Null]))
                    .minimum(Some(0))
                    .description(Some("A cap per minute (0 allows nothing); null unsets it."))
                    .into()
            };
            o = o.property(k, field);
        }
        o.into()
    }
}

impl utoipa::ToSchema for PolicyPatch {}

impl PolicyPatch {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first field set, for errors.
    pub fn first(&self) -> Option<&'static str> {
        self.0.first().map(|(k, _)| *k)
    }
}

/// The policy fields as JSON members of `v`.
pub fn with_policy(mut v: Value, p: &PolicyFields) -> Value {
    if let (Value::Object(m), Ok(Value::Object(pm))) = (&mut v, serde_json::to_value(p)) {
        m.extend(pm);
    }
    v
}

/// `limit` and `after` of a list.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// Rows per page.
    pub limit: i64,
    /// Only ids above this.
    pub after: i64,
}

/// Query string of a list.
#[derive(Debug, serde::Deserialize)]
pub struct PageQuery {
    limit: Option<String>,
    after: Option<String>,
}

impl PageQuery {
    /// The largest page (1000 rows), for the admin UI's one-page lists.
    pub fn largest() -> Self {
        Self { limit: Some("1000".into()), after: None }
    }

    /// Validated.
    pub fn page(&self) -> Result<Page, Error> {
        let limit = match &self.limit {
            None => 100,
            Some(s) => s
                .parse::<i64>()
                .ok()
                .filter(|l| (1..=1000).contains(l))
                .ok_or_else(|| bad("limit", "'limit' must be 1 to 1000."))?,
        };
        let after = match &self.after {
            None => 0,
            Some(s) => s
                .parse::<i64>()
                .ok()
                .filter(|a| *a >= 0)
                .ok_or_else(|| bad("after", "'after' must be an id like \"17\"."))?,
        };
        Ok(Page { limit, after })
    }
}

/// Appends ` AND id > after ORDER BY id LIMIT limit + 1` for `alias`.
pub fn paginate(sql: &mut Sql, alias: &str, page: Page) {
    sql.push(&format!(" AND {alias}.id > "))
        .id(page.after)
        .push(&format!(" ORDER BY {alias}.id LIMIT "))
        .arg(Val::Int(Some(page.limit + 1)));
}

#[cfg(test)]
mod field_list_tests {
    use super::*;

    #[test]
    fn policy_columns_split_into_exclusions_and_limits() {
        assert_eq!(EXCLUSION_FIELDS.len(), 4);
        assert!(EXCLUSION_FIELDS.iter().all(|f| f.contains("excluded")));
        assert_eq!(LIMIT_FIELDS.len(), 6);
        assert!(LIMIT_FIELDS.iter().all(|f| f.ends_with("_per_minute")));
    }
}
