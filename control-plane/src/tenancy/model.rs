//! Types shared by the tenancy store, the API and the policy builder.

use serde::{Deserialize, Serialize};

/// A list of names (models or MCP servers) stored as a JSON array in a TEXT column, so both
/// SQLite and PostgreSQL read it the same way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NameList(pub Vec<String>);

impl TryFrom<String> for NameList {
    type Error = serde_json::Error;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        serde_json::from_str(&s).map(NameList)
    }
}

impl NameList {
    /// The JSON text stored in the database.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_else(|_| "[]".into())
    }
}

/// The policy fields of an org, team, user, service account or token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct PolicyFields {
    /// Models this entity (and everything below it that merges) may not use.
    #[sqlx(try_from = "String")]
    #[schema(value_type = Vec<String>)]
    pub excluded_models: NameList,
    /// When false, this level does not inherit the model exclusions of the levels above it.
    pub merge_excluded_models: bool,
    /// MCP servers this entity may not use.
    #[sqlx(try_from = "String")]
    #[schema(value_type = Vec<String>)]
    pub excluded_mcp_servers: NameList,
    /// When false, this level does not inherit the MCP exclusions of the levels above it.
    pub merge_excluded_mcp_servers: bool,
    /// Cap on all requests of this entity per minute.
    pub requests_per_minute: Option<i64>,
    /// Cap on all input tokens of this entity per minute.
    pub input_tokens_per_minute: Option<i64>,
    /// Cap on all output tokens of this entity per minute.
    pub output_tokens_per_minute: Option<i64>,
    /// Per-key request cap inherited by every key below this level.
    pub key_requests_per_minute: Option<i64>,
    /// Per-key input-token cap inherited by every key below this level.
    pub key_input_tokens_per_minute: Option<i64>,
    /// Per-key output-token cap inherited by every key below this level.
    pub key_output_tokens_per_minute: Option<i64>,
}

impl Default for PolicyFields {
    fn default() -> Self {
        Self {
            excluded_models: NameList::default(),
            merge_excluded_models: true,
            excluded_mcp_servers: NameList::default(),
            merge_excluded_mcp_servers: true,
            requests_per_minute: None,
            input_tokens_per_minute: None,
            output_tokens_per_minute: None,
            key_requests_per_minute: None,
            key_input_tokens_per_minute: None,
            key_output_tokens_per_minute: None,
        }
    }
}

/// Column list of the policy fields, for SELECTs (prefix with a table alias as needed).
pub const POLICY_COLUMNS: &[&str] = &[
    "excluded_models",
    "merge_excluded_models",
    "excluded_mcp_servers",
    "merge_excluded_mcp_servers",
    "requests_per_minute",
    "input_tokens_per_minute",
    "output_tokens_per_minute",
    "key_requests_per_minute",
    "key_input_tokens_per_minute",
    "key_output_tokens_per_minute",
];

/// `alias.col AS prefix_col, ...` for every policy column.
pub fn policy_select(alias: &str, prefix: &str) -> String {
    POLICY_COLUMNS.iter().map(|c| format!("{alias}.{c} AS {prefix}{c}")).collect::<Vec<_>>().join(", ")
}

/// A user's global role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Own keys, read own teams.
    User,
    /// Everything inside their org below org level.
    OrgAdmin,
    /// Everything, every org.
    Admin,
}

impl Role {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::OrgAdmin => "org-admin",
            Role::Admin => "admin",
        }
    }

    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(Role::User),
            "org-admin" => Some(Role::OrgAdmin),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}
