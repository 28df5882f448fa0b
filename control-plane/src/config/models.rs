//! The models file: which model names clients may ask for and where each is served.
//!
//! The format is the LiteLLM router's `model_list` YAML, so that an existing
//! deployment can point Aqueduct at the file it already has. Only the subset the
//! gateway can honour is interpreted; everything else is accepted with a warning
//! so that a migration never fails on a setting we merely ignore.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use yaml_serde::{Mapping, Value};

/// Where a model is sent when its entry has no `api_base`, as in LiteLLM.
pub const DEFAULT_API_BASE: &str = "https://api.openai.com/v1";

/// Provider prefixes of `litellm_params.model` that speak the OpenAI API, so the
/// gateway can forward requests to them unchanged apart from the model name.
pub const OPENAI_COMPATIBLE_PROVIDERS: &[&str] =
    &["openai", "hosted_vllm", "vllm", "openai_like", "text-completion-openai"];

/// Longest model name or alias accepted; names travel in request bodies, metrics
/// labels and xDS config, so they are kept bounded.
pub const MAX_NAME_LEN: usize = 256;

/// Prefix by which LiteLLM configs refer to an environment variable instead of a literal.
const ENV_PREFIX: &str = "os.environ/";

/// One model name as clients see it, possibly served by several deployments
/// (entries with the same `model_name`).
///
/// Every field except the endpoints is shared by all deployments, because the
/// gateway rewrites the request (model name, Authorization) before Envoy picks
/// the endpoint that will receive it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelGroup {
    /// The `model_name` clients put in requests.
    pub name: String,
    /// Other names clients may use for this model (`model_info.aliases`).
    pub aliases: Vec<String>,
    /// The kind of API this model serves (`chat`, `embedding`, ...), when declared.
    pub mode: Option<String>,
    /// Scales per-key request limits for this model, so that expensive models
    /// can be given a smaller share than cheap ones.
    pub request_limit_multiplier: f64,
    /// The model name the provider expects, written into the upstream request body.
    pub provider_model: String,
    /// The key sent upstream as a bearer token; `None` sends no Authorization header.
    pub api_key: Option<String>,
    /// How long an upstream request may take, when limited.
    pub timeout: Option<Duration>,
    /// Where the provider is reached.
    pub upstream: Upstream,
}

/// The provider side of a model group, shaped like an Envoy cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Whether to speak TLS to the endpoints (`https` api_base).
    pub tls: bool,
    /// Path prefix of the provider's API, e.g. `/v1`, or empty; never ends with `/`.
    pub base_path: String,
    /// The deployments of the model, load-balanced by Envoy.
    pub endpoints: Vec<Endpoint>,
}

/// One address serving a model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// DNS name (lowercased), IPv4 address, or IPv6 address without brackets,
    /// as Envoy's socket address expects.
    pub host: String,
    /// TCP port; defaults to the scheme's port when the api_base names none.
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The whole models file, ready to be turned into routes and clusters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelsConfig {
    /// Model groups in the order their names first appear in the file, so the
    /// generated config is stable across reloads.
    pub groups: Vec<ModelGroup>,
    /// Things that were accepted but ignored or guessed, for the operator to review.
    pub warnings: Vec<String>,
}

/// Why a models file was rejected. Each message names the model, alias or
/// entry (counted from 1) at fault so the operator can find it in the file.
#[derive(thiserror::Error, Debug)]
pub enum ModelsError {
    /// The file could not be read.
    #[error("cannot read models file {}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    /// The file is not valid YAML; yaml_serde's message carries line and column.
    #[error("invalid models yaml: {0}")]
    Yaml(yaml_serde::Error),
    /// The document is valid YAML but not a mapping of top-level keys.
    #[error("models file must be a mapping with a model_list key at the top level")]
    TopLevelNotMapping,
    /// `model_list` is present but not a list.
    #[error("model_list must be a list of model entries")]
    ModelListNotList,
    /// One `model_list` entry is malformed or has an unusable value.
    #[error("model_list entry {entry}{}: {problem}", model_suffix(.model))]
    Entry { entry: usize, model: Option<String>, problem: String },
    /// An `os.environ/NAME` reference names a variable that is not set.
    #[error("model_list entry {entry} (model {model:?}): {field}: environment variable {var} is not set")]
    EnvVarUnset { entry: usize, model: String, field: String, var: String },
    /// Two deployments of one model differ in something the gateway applies
    /// before Envoy chooses between them.
    #[error(
        "model {model:?}: model_list entries {first_entry} and {entry} disagree on {field}{detail}; all deployments of one model must agree on it"
    )]
    Disagreement {
        model: String,
        field: &'static str,
        /// The differing values, or empty when they are secret.
        detail: String,
        first_entry: usize,
        entry: usize,
    },
    /// The same address is listed twice for one model.
    #[error("model {model:?}: model_list entries {first_entry} and {entry} both use endpoint {endpoint}")]
    DuplicateEndpoint { model: String, endpoint: Endpoint, first_entry: usize, entry: usize },
    /// An alias repeats the name of the model it belongs to.
    #[error("alias {alias:?} of model {model:?} is the model's own name")]
    AliasIsOwnName { alias: String, model: String },
    /// An alias equals the name of another model, so a request would be ambiguous.
    #[error("alias {alias:?} of model {model:?} is also the name of another model")]
    AliasIsModelName { alias: String, model: String },
    /// Two models claim the same alias.
    #[error("alias {alias:?} is declared by both model {first:?} and model {second:?}")]
    DuplicateAlias { alias: String, first: String, second: String },
}

fn model_suffix(model: &Option<String>) -> String {
    match model {
        Some(m) => format!(" (model {m:?})"),
        None => String::new(),
    }
}

impl ModelsConfig {
    /// Parses a models file; `env` supplies `os.environ/NAME` values so that
    /// tests and callers decide where secrets come from.
    pub fn parse(yaml: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<ModelsConfig, ModelsError> {
        let mut root: Value = yaml_serde::from_str(yaml).map_err(ModelsError::Yaml)?;
        // LiteLLM (PyYAML) honours `<<: *anchor`; so must we for files to carry over.
        root.apply_merge().map_err(ModelsError::Yaml)?;

        let mut warnings = Vec::new();
        let mut model_list = None;
        match &root {
            Value::Null => {}
            Value::Mapping(top) => {
                for (key, value) in top {
                    if key.as_str() == Some("model_list") {
                        model_list = Some(value);
                    } else {
                        warnings.push(format!("{}: unknown top-level key, ignored", key_name(key)));
                    }
                }
            }
            _ => return Err(ModelsError::TopLevelNotMapping),
        }

        let entries: &[Value] = match model_list {
            None => {
                warnings.push("model_list is missing: no models are served".to_owned());
                &[]
            }
            Some(Value::Null) => {
                warnings.push("model_list is empty: no models are served".to_owned());
                &[]
            }
            Some(Value::Sequence(seq)) => {
                if seq.is_empty() {
                    warnings.push("model_list is empty: no models are served".to_owned());
                }
                seq
            }
            Some(_) => return Err(ModelsError::ModelListNotList),
        };

        let mut parser = EntryParser { env, warnings };
        let mut deployments = Vec::with_capacity(entries.len());
        for (i, value) in entries.iter().enumerate() {
            deployments.push(parser.entry(i + 1, value)?);
        }
        let groups = merge(deployments)?;
        check_aliases(&groups)?;
        Ok(ModelsConfig { groups, warnings: parser.warnings })
    }

    /// Reads and parses the models file with the process environment, logging
    /// warnings so they are visible even if the caller drops them.
    pub fn load(path: &Path) -> Result<ModelsConfig, ModelsError> {
        let yaml = std::fs::read_to_string(path).map_err(|error| ModelsError::Read { path: path.to_owned(), error })?;
        let config = Self::parse(&yaml, &|name| std::env::var(name).ok())?;
        for warning in &config.warnings {
            tracing::warn!(path = %path.display(), "models file: {warning}");
        }
        Ok(config)
    }

    /// Finds the group a client's model name refers to, by name or by alias.
    pub fn resolve(&self, name_or_alias: &str) -> Option<&ModelGroup> {
        self.groups
            .iter()
            .find(|g| g.name == name_or_alias)
            .or_else(|| self.groups.iter().find(|g| g.aliases.iter().any(|a| a == name_or_alias)))
    }
}

/// One `model_list` entry after validation, before entries are grouped.
struct Deployment {
    entry: usize,
    name: String,
    aliases: Vec<String>,
    mode: Option<String>,
    multiplier: f64,
    provider_model: String,
    api_key: Option<String>,
    timeout: Option<Duration>,
    tls: bool,
    base_path: String,
    endpoint: Endpoint,
}

/// The interpreted `litellm_params` of one entry.
struct Params {
    provider_model: String,
    api_key: Option<String>,
    timeout: Option<Duration>,
    tls: bool,
    base_path: String,
    endpoint: Endpoint,
}

/// Parses entries while collecting warnings.
struct EntryParser<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    warnings: Vec<String>,
}

/// Identifies an entry in messages.
struct Loc<'a> {
    entry: usize,
    model: Option<&'a str>,
}

impl Loc<'_> {
    fn err(&self, problem: impl Into<String>) -> ModelsError {
        ModelsError::Entry { entry: self.entry, model: self.model.map(str::to_owned), problem: problem.into() }
    }

    fn warning(&self, message: impl fmt::Display) -> String {
        format!("model_list entry {}{}: {message}", self.entry, model_suffix(&self.model.map(str::to_owned)))
    }
}

impl EntryParser<'_> {
    fn entry(&mut self, entry: usize, value: &Value) -> Result<Deployment, ModelsError> {
        let anon = Loc { entry, model: None };
        let Value::Mapping(map) = value else {
            return Err(anon.err("entry must be a mapping with model_name and litellm_params"));
        };

        let name = match map.get("model_name") {
            None | Some(Value::Null) => return Err(anon.err("model_name is missing")),
            Some(Value::String(s)) if s.is_empty() => return Err(anon.err("model_name is empty")),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(anon.err("model_name must be a string (quote it)")),
        };
        if let Err(why) = validate_name(&name) {
            return Err(anon.err(format!("model_name {name:?} is invalid: {why}")));
        }
        let loc = Loc { entry, model: Some(&name) };
        if name.contains('*') {
            self.warnings
                .push(loc.warning("model_name: wildcard routing is not supported; the name is matched literally"));
        }

        for key in map.keys() {
            if !matches!(key.as_str(), Some("model_name" | "litellm_params" | "model_info")) {
                self.warnings.push(loc.warning(format_args!("{}: unknown key, ignored", key_name(key))));
            }
        }

        let params = match map.get("litellm_params") {
            None | Some(Value::Null) => return Err(loc.err("litellm_params is missing")),
            Some(Value::Mapping(m)) => m,
            Some(_) => return Err(loc.err("litellm_params must be a mapping")),
        };
        let params = self.params(&loc, params)?;

        let (aliases, mode, multiplier) = match map.get("model_info") {
            None | Some(Value::Null) => (Vec::new(), None, 1.0),
            Some(Value::Mapping(info)) => self.model_info(&loc, info)?,
            Some(_) => return Err(loc.err("model_info must be a mapping")),
        };

        Ok(Deployment {
            entry,
            name: name.clone(),
            aliases,
            mode,
            multiplier,
            provider_model: params.provider_model,
            api_key: params.api_key,
            timeout: params.timeout,
            tls: params.tls,
            base_path: params.base_path,
            endpoint: params.endpoint,
        })
    }

    fn params(&mut self, loc: &Loc<'_>, params: &Mapping) -> Result<Params, ModelsError> {
        for key in params.keys() {
            if !matches!(key.as_str(), Some("model" | "api_base" | "api_key" | "timeout")) {
                self.warnings.push(loc.warning(format_args!("litellm_params.{}: unknown key, ignored", key_name(key))));
            }
        }

        let model = match params.get("model") {
            None | Some(Value::Null) => return Err(loc.err("litellm_params.model is missing")),
            Some(Value::String(s)) if s.trim().is_empty() => return Err(loc.err("litellm_params.model is empty")),
            Some(Value::String(s)) => s.trim(),
            Some(_) => return Err(loc.err("litellm_params.model must be a string")),
        };
        let provider_model = self.provider_model(loc, model)?;

        let api_base = match params.get("api_base") {
            None | Some(Value::Null) => DEFAULT_API_BASE.to_owned(),
            Some(Value::String(s)) => {
                let resolved = self.resolve_env(loc, "litellm_params.api_base", s)?;
                if resolved.trim().is_empty() {
                    return Err(loc.err("litellm_params.api_base is empty"));
                }
                resolved
            }
            Some(_) => return Err(loc.err("litellm_params.api_base must be a string")),
        };
        let (tls, base_path, endpoint) = parse_api_base(api_base.trim())
            .map_err(|why| loc.err(format!("litellm_params.api_base is invalid: {why}")))?;

        let api_key = match params.get("api_key") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                let resolved = self.resolve_env(loc, "litellm_params.api_key", s)?;
                let key = resolved.trim();
                if key.chars().any(char::is_control) {
                    // Never echo the key: it is a secret.
                    return Err(loc.err("litellm_params.api_key contains control characters"));
                }
                if key.is_empty() {
                    if let Some(var) = s.strip_prefix(ENV_PREFIX) {
                        self.warnings.push(loc.warning(format_args!(
                            "litellm_params.api_key: environment variable {var} is empty; no Authorization header is sent upstream"
                        )));
                    }
                    None
                } else {
                    Some(key.to_owned())
                }
            }
            Some(_) => return Err(loc.err("litellm_params.api_key must be a string")),
        };

        let timeout = match params.get("timeout") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(self.timeout(loc, n.as_f64())?),
            Some(Value::String(s)) => {
                let resolved = self.resolve_env(loc, "litellm_params.timeout", s)?;
                Some(self.timeout(loc, resolved.trim().parse::<f64>().ok())?)
            }
            Some(_) => return Err(loc.err("litellm_params.timeout must be a number of seconds")),
        };

        Ok(Params { provider_model, api_key, timeout, tls, base_path, endpoint })
    }

    fn provider_model(&mut self, loc: &Loc<'_>, model: &str) -> Result<String, ModelsError> {
        match model.split_once('/') {
            Some((provider, rest)) if OPENAI_COMPATIBLE_PROVIDERS.contains(&provider) => {
                if rest.is_empty() {
                    return Err(loc.err(format!("litellm_params.model {model:?} has no model name after the provider")));
                }
                Ok(rest.to_owned())
            }
            Some((provider, _)) => {
                self.warnings.push(loc.warning(format_args!(
                    "litellm_params.model: provider {provider:?} is not a known OpenAI-compatible provider; {model:?} is sent upstream as-is"
                )));
                Ok(model.to_owned())
            }
            None => {
                self.warnings.push(loc.warning(format_args!(
                    "litellm_params.model: {model:?} has no provider prefix such as \"openai/\"; it is sent upstream as-is to an OpenAI-compatible API"
                )));
                Ok(model.to_owned())
            }
        }
    }

    fn timeout(&self, loc: &Loc<'_>, secs: Option<f64>) -> Result<Duration, ModelsError> {
        let secs = secs.ok_or_else(|| loc.err("litellm_params.timeout must be a number of seconds"))?;
        if !(secs.is_finite() && secs > 0.0) {
            return Err(loc.err(format!("litellm_params.timeout must be a positive number of seconds, got {secs}")));
        }
        Duration::try_from_secs_f64(secs).map_err(|_| loc.err(format!("litellm_params.timeout {secs} is too large")))
    }

    fn model_info(&mut self, loc: &Loc<'_>, info: &Mapping) -> Result<(Vec<String>, Option<String>, f64), ModelsError> {
        for key in info.keys() {
            if !matches!(key.as_str(), Some("id" | "mode" | "aliases" | "request_limit_multiplier")) {
                self.warnings.push(loc.warning(format_args!("model_info.{}: unknown key, ignored", key_name(key))));
            }
        }

        let mode = match info.get("mode") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => return Err(loc.err("model_info.mode is empty")),
            Some(Value::String(s)) => Some(s.trim().to_owned()),
            Some(_) => return Err(loc.err("model_info.mode must be a string")),
        };

        let mut aliases: Vec<String> = Vec::new();
        match info.get("aliases") {
            None | Some(Value::Null) => {}
            Some(Value::Sequence(seq)) => {
                for item in seq {
                    let Value::String(alias) = item else {
                        return Err(loc.err("model_info.aliases must be a list of strings"));
                    };
                    if let Err(why) = validate_name(alias) {
                        return Err(loc.err(format!("model_info.aliases: alias {alias:?} is invalid: {why}")));
                    }
                    if !aliases.contains(alias) {
                        aliases.push(alias.clone());
                    }
                }
            }
            Some(_) => return Err(loc.err("model_info.aliases must be a list of strings")),
        }

        let multiplier = match info.get("request_limit_multiplier") {
            None | Some(Value::Null) => 1.0,
            Some(Value::Number(n)) => match n.as_f64() {
                Some(m) if m.is_finite() && m > 0.0 => m,
                _ => {
                    return Err(loc.err(format!(
                        "model_info.request_limit_multiplier must be a finite number greater than 0, got {n}"
                    )))
                }
            },
            Some(_) => {
                return Err(loc.err("model_info.request_limit_multiplier must be a finite number greater than 0"))
            }
        };

        Ok((aliases, mode, multiplier))
    }

    /// Applies LiteLLM's `os.environ/NAME` indirection.
    fn resolve_env(&self, loc: &Loc<'_>, field: &str, raw: &str) -> Result<String, ModelsError> {
        let Some(var) = raw.trim().strip_prefix(ENV_PREFIX) else {
            return Ok(raw.to_owned());
        };
        if var.is_empty() {
            return Err(loc.err(format!("{field}: {ENV_PREFIX} must be followed by a variable name")));
        }
        (self.env)(var).ok_or_else(|| ModelsError::EnvVarUnset {
            entry: loc.entry,
            model: loc.model.unwrap_or_default().to_owned(),
            field: field.to_owned(),
            var: var.to_owned(),
        })
    }
}

/// Renders a mapping key for a warning, whatever its YAML type.
fn key_name(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_owned(),
        _ => "<non-scalar key>".to_owned(),
    }
}

/// Model names and aliases must be safe to put in logs, metrics and headers.
fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("it is longer than 256 bytes");
    }
    if name.chars().any(char::is_whitespace) {
        return Err("it contains whitespace");
    }
    if name.chars().any(char::is_control) {
        return Err("it contains control characters");
    }
    Ok(())
}

/// Splits an api_base into what an Envoy cluster and route need: TLS or not,
/// path prefix, and address.
fn parse_api_base(url: &str) -> Result<(bool, String, Endpoint), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("expected a URL such as https://api.openai.com/v1".to_owned());
    };
    let tls = if scheme.eq_ignore_ascii_case("https") {
        true
    } else if scheme.eq_ignore_ascii_case("http") {
        false
    } else {
        return Err(format!("scheme {scheme:?} is not http or https"));
    };
    let default_port = if tls { 443 } else { 80 };

    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.contains('?') || authority.contains('#') || path.contains('?') || path.contains('#') {
        return Err("a query or fragment is not supported".to_owned());
    }
    if authority.contains('@') {
        return Err("credentials in the URL are not supported; use api_key".to_owned());
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the path contains whitespace or control characters".to_owned());
    }
    let base_path = path.trim_end_matches('/').to_owned();

    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((ip, after)) = bracketed.split_once(']') else {
            return Err("unterminated [ in IPv6 host".to_owned());
        };
        if ip.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{ip:?} is not a valid IPv6 address"));
        }
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(p) => Some(p),
                None => return Err("unexpected characters after the IPv6 address".to_owned()),
            },
        };
        (ip.to_ascii_lowercase(), port)
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        (validate_host(host)?, port)
    };
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("port {p:?} is not a number from 1 to 65535")),
        },
    };
    Ok((tls, base_path, Endpoint { host, port }))
}

/// Accepts IPv4 addresses and DNS names, returning the lowercased host.
fn validate_host(host: &str) -> Result<String, String> {
    if host.is_empty() {
        return Err("the host is missing".to_owned());
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(host.to_owned());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.len() > 253 {
        return Err("the host name is longer than 253 characters".to_owned());
    }
    let bad = || format!("{host:?} is not a valid host name or IPv4 address");
    let mut last_label = "";
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(bad());
        }
        last_label = label;
    }
    // A numeric last label means a mistyped IPv4 address, not a DNS name.
    if last_label.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    Ok(host.to_ascii_lowercase())
}

/// Groups deployments by model name, insisting they agree on everything the
/// gateway applies before Envoy picks one of them.
fn merge(deployments: Vec<Deployment>) -> Result<Vec<ModelGroup>, ModelsError> {
    struct Pending {
        group: ModelGroup,
        first_entry: usize,
        endpoint_entries: Vec<usize>,
    }
    let mut pending: Vec<Pending> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();

    for d in deployments {
        let Some(&i) = index.get(&d.name) else {
            index.insert(d.name.clone(), pending.len());
            pending.push(Pending {
                first_entry: d.entry,
                endpoint_entries: vec![d.entry],
                group: ModelGroup {
                    name: d.name,
                    aliases: d.aliases,
                    mode: d.mode,
                    request_limit_multiplier: d.multiplier,
                    provider_model: d.provider_model,
                    api_key: d.api_key,
                    timeout: d.timeout,
                    upstream: Upstream { tls: d.tls, base_path: d.base_path, endpoints: vec![d.endpoint] },
                },
            });
            continue;
        };
        let p = &mut pending[i];
        let g = &mut p.group;
        let disagree = |field: &'static str, detail: String| ModelsError::Disagreement {
            model: d.name.clone(),
            field,
            detail,
            first_entry: p.first_entry,
            entry: d.entry,
        };
        if g.provider_model != d.provider_model {
            return Err(disagree(
                "litellm_params.model",
                format!(" ({:?} vs {:?})", g.provider_model, d.provider_model),
            ));
        }
        if g.api_key != d.api_key {
            return Err(disagree("litellm_params.api_key", String::new()));
        }
        if g.upstream.tls != d.tls {
            return Err(disagree("the api_base scheme", " (http vs https)".to_owned()));
        }
        if g.upstream.base_path != d.base_path {
            return Err(disagree("the api_base path", format!(" ({:?} vs {:?})", g.upstream.base_path, d.base_path)));
        }
        if g.timeout != d.timeout {
            return Err(disagree("litellm_params.timeout", format!(" ({:?} vs {:?})", g.timeout, d.timeout)));
        }
        if g.mode != d.mode {
            return Err(disagree("model_info.mode", format!(" ({:?} vs {:?})", g.mode, d.mode)));
        }
        if g.request_limit_multiplier != d.multiplier {
            return Err(disagree(
                "model_info.request_limit_multiplier",
                format!(" ({} vs {})", g.request_limit_multiplier, d.multiplier),
            ));
        }
        if let Some(k) = g.upstream.endpoints.iter().position(|e| *e == d.endpoint) {
            return Err(ModelsError::DuplicateEndpoint {
                model: d.name,
                endpoint: d.endpoint,
                first_entry: p.endpoint_entries[k],
                entry: d.entry,
            });
        }
        g.upstream.endpoints.push(d.endpoint);
        p.endpoint_entries.push(d.entry);
        for alias in d.aliases {
            if !g.aliases.contains(&alias) {
                g.aliases.push(alias);
            }
        }
    }
    Ok(pending.into_iter().map(|p| p.group).collect())
}

/// Every name a client may send must resolve to exactly one model.
fn check_aliases(groups: &[ModelGroup]) -> Result<(), ModelsError> {
    let mut owners: HashMap<&str, &str> = HashMap::new();
    for g in groups {
        for alias in &g.aliases {
            if *alias == g.name {
                return Err(ModelsError::AliasIsOwnName { alias: alias.clone(), model: g.name.clone() });
            }
            if groups.iter().any(|other| other.name == *alias) {
                return Err(ModelsError::AliasIsModelName { alias: alias.clone(), model: g.name.clone() });
            }
            if let Some(first) = owners.insert(alias, &g.name) {
                return Err(ModelsError::DuplicateAlias {
                    alias: alias.clone(),
                    first: first.to_owned(),
                    second: g.name.clone(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(yaml: &str) -> Result<ModelsConfig, ModelsError> {
        ModelsConfig::parse(yaml, &no_env)
    }

    fn ok(yaml: &str) -> ModelsConfig {
        match parse(yaml) {
            Ok(c) => c,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn err(yaml: &str) -> String {
        match parse(yaml) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn assert_contains(haystack: &str, needles: &[&str]) {
        for n in needles {
            assert!(haystack.contains(n), "{haystack:?} should contain {n:?}");
        }
    }

    fn assert_message_style(msg: &str) {
        let first = msg.chars().next().unwrap_or('x');
        assert!(!first.is_uppercase(), "message should start lowercase: {msg:?}");
        assert!(!msg.ends_with('.'), "message should not end with a period: {msg:?}");
    }

    const FULL: &str = r#"
model_list:
  - model_name: gpt-4.1-nano
    litellm_params:
      model: openai/gpt-4.1-nano
      api_base: https://api.openai.com/v1
      api_key: os.environ/OPENAI_API_KEY
      timeout: 60
      rpm: 100
    model_info:
      id: gpt-4.1-nano
      mode: chat
      aliases: [nano, small]
      request_limit_multiplier: 2.0
router_settings:
  routing_strategy: simple-shuffle
"#;

    #[test]
    fn parses_the_documented_example() {
        let env = |name: &str| (name == "OPENAI_API_KEY").then(|| "sk-test".to_owned());
        let c = ModelsConfig::parse(FULL, &env).unwrap();
        assert_eq!(
            c.groups,
            vec![ModelGroup {
                name: "gpt-4.1-nano".into(),
                aliases: vec!["nano".into(), "small".into()],
                mode: Some("chat".into()),
                request_limit_multiplier: 2.0,
                provider_model: "gpt-4.1-nano".into(),
                api_key: Some("sk-test".into()),
                timeout: Some(Duration::from_secs(60)),
                upstream: Upstream {
                    tls: true,
                    base_path: "/v1".into(),
                    endpoints: vec![Endpoint { host: "api.openai.com".into(), port: 443 }],
                },
            }]
        );
        assert_eq!(
            c.warnings,
            vec![
                "router_settings: unknown top-level key, ignored".to_owned(),
                "model_list entry 1 (model \"gpt-4.1-nano\"): litellm_params.rpm: unknown key, ignored".to_owned(),
            ]
        );
    }

    #[test]
    fn defaults_apply_when_optional_fields_are_absent() {
        let c = ok("model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/gpt-4o\n");
        let g = &c.groups[0];
        assert_eq!(g.aliases, Vec::<String>::new());
        assert_eq!(g.mode, None);
        assert_eq!(g.request_limit_multiplier, 1.0);
        assert_eq!(g.api_key, None);
        assert_eq!(g.timeout, None);
        assert_eq!(g.provider_model, "gpt-4o");
        assert_eq!(
            g.upstream,
            Upstream {
                tls: true,
                base_path: "/v1".into(),
                endpoints: vec![Endpoint { host: "api.openai.com".into(), port: 443 }],
            }
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    fn one(params: &str) -> Result<ModelsConfig, ModelsError> {
        parse(&format!("model_list:\n  - model_name: m\n    litellm_params:\n{params}"))
    }

    fn one_ok(params: &str) -> ModelsConfig {
        match one(params) {
            Ok(c) => c,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn one_err(params: &str) -> String {
        match one(params) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn provider_prefix_is_stripped_for_openai_compatible_providers() {
        for (model, expected) in [
            ("openai/gpt-4.1-nano", "gpt-4.1-nano"),
            ("openai/openai/gpt-x", "openai/gpt-x"),
            ("hosted_vllm/meta-llama/Llama-3-8B", "meta-llama/Llama-3-8B"),
            ("vllm/qwen", "qwen"),
            ("openai_like/foo", "foo"),
            ("text-completion-openai/gpt-3.5-turbo-instruct", "gpt-3.5-turbo-instruct"),
        ] {
            let c = one_ok(&format!("      model: {model}\n"));
            assert_eq!(c.groups[0].provider_model, expected, "{model}");
            assert!(c.warnings.is_empty(), "{model}: {:?}", c.warnings);
        }
    }

    #[test]
    fn unknown_provider_or_missing_prefix_is_kept_and_warned() {
        let c = one_ok("      model: anthropic/claude-3\n");
        assert_eq!(c.groups[0].provider_model, "anthropic/claude-3");
        assert_eq!(c.warnings.len(), 1);
        assert_contains(&c.warnings[0], &["model_list entry 1", "\"m\"", "\"anthropic\"", "as-is"]);

        let c = one_ok("      model: gpt-4o\n");
        assert_eq!(c.groups[0].provider_model, "gpt-4o");
        assert_eq!(c.warnings.len(), 1);
        assert_contains(&c.warnings[0], &["model_list entry 1", "no provider prefix"]);
    }

    #[test]
    fn provider_prefix_without_model_is_an_error() {
        let e = one_err("      model: openai/\n");
        assert_contains(&e, &["model_list entry 1", "\"m\"", "litellm_params.model", "\"openai/\""]);
    }

    #[test]
    fn api_base_forms() {
        let cases: &[(&str, bool, &str, &str, u16)] = &[
            ("https://api.openai.com/v1", true, "/v1", "api.openai.com", 443),
            ("https://api.openai.com/v1/", true, "/v1", "api.openai.com", 443),
            ("http://127.0.0.1:18090/v1", false, "/v1", "127.0.0.1", 18090),
            ("http://localhost", false, "", "localhost", 80),
            ("http://localhost/", false, "", "localhost", 80),
            ("http://localhost:8000", false, "", "localhost", 8000),
            ("HTTPS://Example.COM:8443/openai/v1//", true, "/openai/v1", "example.com", 8443),
            ("http://[::1]:8080/v1", false, "/v1", "::1", 8080),
            ("https://[2001:DB8::1]/v1", true, "/v1", "2001:db8::1", 443),
            ("http://vllm_server.internal:8000/v1", false, "/v1", "vllm_server.internal", 8000),
        ];
        for &(base, tls, path, host, port) in cases {
            let c = one_ok(&format!("      model: openai/x\n      api_base: \"{base}\"\n"));
            let u = &c.groups[0].upstream;
            assert_eq!(u.tls, tls, "{base}");
            assert_eq!(u.base_path, path, "{base}");
            assert_eq!(u.endpoints, vec![Endpoint { host: host.into(), port }], "{base}");
        }
    }

    #[test]
    fn invalid_api_base_is_an_error_naming_the_model() {
        for (base, why) in [
            ("ftp://example.com/v1", "scheme \"ftp\""),
            ("example.com/v1", "expected a URL"),
            ("http:///v1", "host is missing"),
            ("http://example.com:0/v1", "port \"0\""),
            ("http://example.com:99999", "port \"99999\""),
            ("http://example.com:/v1", "port \"\""),
            ("http://example.com:+80", "port \"+80\""),
            ("http://exa mple.com/v1", "not a valid host name"),
            ("http://256.1.1.1/v1", "not a valid host name"),
            ("http://-bad.com", "not a valid host name"),
            ("http://[::1/v1", "unterminated"),
            ("http://[nope]:80/v1", "not a valid IPv6 address"),
            ("http://[::1]x/v1", "after the IPv6 address"),
            ("http://user:pw@example.com/v1", "credentials"),
            ("http://example.com/v1?x=1", "query or fragment"),
            ("http://example.com/v 1", "whitespace"),
        ] {
            let e = one_err(&format!("      model: openai/x\n      api_base: \"{base}\"\n"));
            assert_contains(&e, &["model_list entry 1 (model \"m\")", "litellm_params.api_base", why]);
            assert_message_style(&e);
            assert!(!e.contains("pw@"), "credentials must not be echoed: {e}");
        }
        let e = one_err("      model: openai/x\n      api_base: 42\n");
        assert_contains(&e, &["\"m\"", "api_base must be a string"]);
        let e = one_err("      model: openai/x\n      api_base: \"\"\n");
        assert_contains(&e, &["\"m\"", "api_base is empty"]);
    }

    #[test]
    fn api_key_literal_env_empty_and_absent() {
        let c = one_ok("      model: openai/x\n      api_key: sk-literal\n");
        assert_eq!(c.groups[0].api_key.as_deref(), Some("sk-literal"));

        let c = one_ok("      model: openai/x\n      api_key: \"\"\n");
        assert_eq!(c.groups[0].api_key, None);

        let c = one_ok("      model: openai/x\n      api_key:\n");
        assert_eq!(c.groups[0].api_key, None);

        let env = |name: &str| match name {
            "KEY" => Some("sk-env".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let yaml = "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/x\n      api_key: os.environ/KEY\n";
        let c = ModelsConfig::parse(yaml, &env).unwrap();
        assert_eq!(c.groups[0].api_key.as_deref(), Some("sk-env"));

        let c = ModelsConfig::parse(&yaml.replace("KEY", "EMPTY"), &env).unwrap();
        assert_eq!(c.groups[0].api_key, None);
        assert_eq!(c.warnings.len(), 1);
        assert_contains(&c.warnings[0], &["\"m\"", "EMPTY", "no Authorization"]);
    }

    #[test]
    fn unset_env_var_is_an_error_naming_model_and_variable() {
        let e = one_err("      model: openai/x\n      api_key: os.environ/OPENAI_API_KEY\n");
        assert_contains(&e, &["model_list entry 1", "\"m\"", "OPENAI_API_KEY", "not set", "api_key"]);
        assert_message_style(&e);

        let e = one_err("      model: openai/x\n      api_key: os.environ/\n");
        assert_contains(&e, &["\"m\"", "api_key", "variable name"]);

        let e = one_err("      model: openai/x\n      api_base: os.environ/VLLM_BASE\n");
        assert_contains(&e, &["\"m\"", "VLLM_BASE", "api_base"]);
    }

    #[test]
    fn api_key_errors_never_echo_the_key() {
        let e = one_err("      model: openai/x\n      api_key: \"sk-sec\\nret\"\n");
        assert_contains(&e, &["\"m\"", "api_key", "control characters"]);
        assert!(!e.contains("sk-sec"), "{e}");
        let e = one_err("      model: openai/x\n      api_key: [1]\n");
        assert_contains(&e, &["\"m\"", "api_key must be a string"]);
    }

    #[test]
    fn api_base_and_timeout_may_come_from_the_environment() {
        let env = |name: &str| match name {
            "BASE" => Some("http://10.0.0.5:8000/v1".to_owned()),
            "TMO" => Some("2.5".to_owned()),
            _ => None,
        };
        let yaml = "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/x\n      api_base: os.environ/BASE\n      timeout: os.environ/TMO\n";
        let c = ModelsConfig::parse(yaml, &env).unwrap();
        let g = &c.groups[0];
        assert_eq!(g.upstream.endpoints[0], Endpoint { host: "10.0.0.5".into(), port: 8000 });
        assert_eq!(g.timeout, Some(Duration::from_millis(2500)));
    }

    #[test]
    fn timeout_accepts_int_and_float_and_rejects_the_rest() {
        let c = one_ok("      model: openai/x\n      timeout: 30\n");
        assert_eq!(c.groups[0].timeout, Some(Duration::from_secs(30)));
        let c = one_ok("      model: openai/x\n      timeout: 0.5\n");
        assert_eq!(c.groups[0].timeout, Some(Duration::from_millis(500)));
        let c = one_ok("      model: openai/x\n      timeout: \"10\"\n");
        assert_eq!(c.groups[0].timeout, Some(Duration::from_secs(10)));

        for bad in ["0", "-1", ".inf", ".nan", "true", "abc", "[1]", "1e300"] {
            let e = one_err(&format!("      model: openai/x\n      timeout: {bad}\n"));
            assert_contains(&e, &["model_list entry 1 (model \"m\")", "litellm_params.timeout"]);
            assert_message_style(&e);
        }
    }

    fn info(model_info: &str) -> Result<ModelsConfig, ModelsError> {
        parse(&format!(
            "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/x\n    model_info:\n{model_info}"
        ))
    }

    #[test]
    fn model_info_fields() {
        let c =
            info("      id: abc\n      mode: embedding\n      aliases: [a, b, a]\n      request_limit_multiplier: 3\n")
                .unwrap();
        let g = &c.groups[0];
        assert_eq!(g.mode.as_deref(), Some("embedding"));
        assert_eq!(g.aliases, vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(g.request_limit_multiplier, 3.0);
        assert!(c.warnings.is_empty(), "id is accepted silently: {:?}", c.warnings);

        let c = info("      mode: rerank\n").unwrap();
        assert_eq!(c.groups[0].mode.as_deref(), Some("rerank"));

        let c = parse("model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/x\n    model_info:\n")
            .unwrap();
        assert_eq!(c.groups[0].request_limit_multiplier, 1.0);
    }

    #[test]
    fn invalid_multiplier_is_an_error() {
        for bad in ["0", "-2", ".inf", ".nan", "\"2\"", "true"] {
            let e = info(&format!("      request_limit_multiplier: {bad}\n")).unwrap_err().to_string();
            assert_contains(&e, &["model_list entry 1 (model \"m\")", "request_limit_multiplier", "greater than 0"]);
            assert_message_style(&e);
        }
    }

    #[test]
    fn invalid_model_info_values_are_errors() {
        for (yaml, needle) in [
            ("      mode: 3\n", "model_info.mode must be a string"),
            ("      mode: \"\"\n", "model_info.mode is empty"),
            ("      aliases: nano\n", "aliases must be a list of strings"),
            ("      aliases: [1]\n", "aliases must be a list of strings"),
            ("      aliases: [\"a b\"]\n", "alias \"a b\" is invalid: it contains whitespace"),
            ("      aliases: [\"\"]\n", "alias \"\" is invalid: it is empty"),
            ("      aliases: [\"a\\tb\"]\n", "alias \"a\\tb\" is invalid"),
            ("      aliases: [\"a\\u0001b\"]\n", "it contains control characters"),
        ] {
            let e = info(yaml).unwrap_err().to_string();
            assert_contains(&e, &["model_list entry 1 (model \"m\")", needle]);
            assert_message_style(&e);
        }
        let e =
            parse("model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/x\n    model_info: [1]\n")
                .unwrap_err()
                .to_string();
        assert_contains(&e, &["\"m\"", "model_info must be a mapping"]);

        let long = "a".repeat(MAX_NAME_LEN + 1);
        let e = info(&format!("      aliases: [{long}]\n")).unwrap_err().to_string();
        assert_contains(&e, &["\"m\"", "longer than 256 bytes"]);
        assert!(info(&format!("      aliases: [{}]\n", "a".repeat(MAX_NAME_LEN))).is_ok());
    }

    #[test]
    fn deployments_with_one_name_form_one_group() {
        let c = ok(r#"
model_list:
  - model_name: llama
    litellm_params: {model: hosted_vllm/llama-3, api_base: "http://10.0.0.1:8000/v1"}
    model_info: {mode: chat, aliases: [l3]}
  - model_name: other
    litellm_params: {model: openai/o}
  - model_name: llama
    litellm_params: {model: hosted_vllm/llama-3, api_base: "http://10.0.0.2:8000/v1/"}
    model_info: {mode: chat, aliases: [l3, llama3]}
"#);
        assert_eq!(c.groups.len(), 2);
        assert_eq!(c.groups[0].name, "llama");
        assert_eq!(c.groups[1].name, "other");
        let g = &c.groups[0];
        assert_eq!(g.aliases, vec!["l3".to_owned(), "llama3".to_owned()]);
        assert_eq!(
            g.upstream.endpoints,
            vec![Endpoint { host: "10.0.0.1".into(), port: 8000 }, Endpoint { host: "10.0.0.2".into(), port: 8000 },]
        );
        assert_eq!(g.upstream.base_path, "/v1");
    }

    #[test]
    fn deployments_of_one_model_must_agree() {
        let base = |a: &str, b: &str| {
            format!(
                "model_list:\n  - model_name: m\n    litellm_params: {{model: openai/x, api_base: \"http://h1/v1\"{a}}}\n  - model_name: m\n    litellm_params: {{model: openai/x, api_base: \"http://h2/v1\"{b}}}\n"
            )
        };
        let cases = [
            (
                base("", "").replacen("openai/x", "openai/y", 2).replacen("openai/y", "openai/x", 1),
                "litellm_params.model",
            ),
            (base(", api_key: k1", ", api_key: k2"), "litellm_params.api_key"),
            (base(", api_key: k1", ""), "litellm_params.api_key"),
            (base("", "").replace("http://h2", "https://h2"), "api_base scheme"),
            (base("", "").replace("h2/v1", "h2/v2"), "api_base path"),
            (base(", timeout: 5", ", timeout: 6"), "litellm_params.timeout"),
            (base(", timeout: 5", ""), "litellm_params.timeout"),
        ];
        for (yaml, field) in cases {
            let e = err(&yaml);
            assert_contains(&e, &["model \"m\"", "entries 1 and 2", field]);
            assert!(!e.contains("k1") && !e.contains("k2"), "keys must not be echoed: {e}");
            assert_message_style(&e);
        }

        let with_info = |a: &str, b: &str| {
            format!(
                "model_list:\n  - model_name: m\n    litellm_params: {{model: openai/x, api_base: \"http://h1\"}}\n    model_info: {{{a}}}\n  - model_name: m\n    litellm_params: {{model: openai/x, api_base: \"http://h2\"}}\n    model_info: {{{b}}}\n"
            )
        };
        let e = err(&with_info("mode: chat", "mode: embedding"));
        assert_contains(&e, &["model \"m\"", "model_info.mode"]);
        let e = err(&with_info("mode: chat", ""));
        assert_contains(&e, &["model \"m\"", "model_info.mode"]);
        let e = err(&with_info("request_limit_multiplier: 2", ""));
        assert_contains(&e, &["model \"m\"", "model_info.request_limit_multiplier"]);
        // Defaults compare equal to explicit defaults.
        assert!(parse(&with_info("request_limit_multiplier: 1", "")).is_ok());
    }

    #[test]
    fn duplicate_endpoint_is_an_error() {
        let e = err(r#"
model_list:
  - model_name: m
    litellm_params: {model: openai/x, api_base: "http://h1:8000/v1"}
  - model_name: m
    litellm_params: {model: openai/x, api_base: "http://H1:8000/v1/"}
"#);
        assert_contains(&e, &["model \"m\"", "entries 1 and 2", "h1:8000"]);
        assert_message_style(&e);

        // Same host on the default port, written both ways.
        let e = err(r#"
model_list:
  - model_name: m
    litellm_params: {model: openai/x}
  - model_name: m
    litellm_params: {model: openai/x, api_base: "https://api.openai.com:443/v1"}
"#);
        assert_contains(&e, &["model \"m\"", "api.openai.com:443"]);
    }

    #[test]
    fn alias_conflicts_are_errors() {
        let e = err(
            "model_list:\n  - model_name: a\n    litellm_params: {model: openai/x}\n    model_info: {aliases: [a]}\n",
        );
        assert_contains(&e, &["alias \"a\"", "model \"a\"", "own name"]);
        assert_message_style(&e);

        let e = err(
            "model_list:\n  - model_name: a\n    litellm_params: {model: openai/x}\n    model_info: {aliases: [b]}\n  - model_name: b\n    litellm_params: {model: openai/y}\n",
        );
        assert_contains(&e, &["alias \"b\"", "model \"a\"", "name of another model"]);
        assert_message_style(&e);

        let e = err(
            "model_list:\n  - model_name: a\n    litellm_params: {model: openai/x}\n    model_info: {aliases: [shared]}\n  - model_name: b\n    litellm_params: {model: openai/y}\n    model_info: {aliases: [shared]}\n",
        );
        assert_contains(&e, &["alias \"shared\"", "model \"a\"", "model \"b\""]);
        assert_message_style(&e);
    }

    #[test]
    fn missing_entry_fields_name_the_entry() {
        let cases = [
            ("  - litellm_params: {model: openai/x}\n", "model_list entry 2: model_name is missing"),
            (
                "  - model_name: \"\"\n    litellm_params: {model: openai/x}\n",
                "model_list entry 2: model_name is empty",
            ),
            (
                "  - model_name: 5\n    litellm_params: {model: openai/x}\n",
                "model_list entry 2: model_name must be a string",
            ),
            (
                "  - model_name: \"a b\"\n    litellm_params: {model: openai/x}\n",
                "model_list entry 2: model_name \"a b\" is invalid: it contains whitespace",
            ),
            ("  - model_name: n\n", "model_list entry 2 (model \"n\"): litellm_params is missing"),
            (
                "  - model_name: n\n    litellm_params: openai/x\n",
                "model_list entry 2 (model \"n\"): litellm_params must be a mapping",
            ),
            (
                "  - model_name: n\n    litellm_params: {api_base: \"http://h\"}\n",
                "model_list entry 2 (model \"n\"): litellm_params.model is missing",
            ),
            (
                "  - model_name: n\n    litellm_params: {model: \"\"}\n",
                "model_list entry 2 (model \"n\"): litellm_params.model is empty",
            ),
            (
                "  - model_name: n\n    litellm_params: {model: [x]}\n",
                "model_list entry 2 (model \"n\"): litellm_params.model must be a string",
            ),
            ("  - just-a-string\n", "model_list entry 2: entry must be a mapping"),
        ];
        for (second, expected) in cases {
            let yaml = format!("model_list:\n  - model_name: first\n    litellm_params: {{model: openai/x}}\n{second}");
            let e = err(&yaml);
            assert_contains(&e, &[expected]);
            assert_message_style(&e);
        }
        let long = "m".repeat(MAX_NAME_LEN + 1);
        let e = err(&format!("model_list:\n  - model_name: {long}\n    litellm_params: {{model: openai/x}}\n"));
        assert_contains(&e, &["model_list entry 1", "longer than 256 bytes"]);
    }

    #[test]
    fn unknown_keys_at_every_level_are_warned() {
        let c = ok(r#"
general_settings: {master_key: x}
litellm_settings: {}
model_list:
  - model_name: m
    litellm_params:
      model: openai/x
      rpm: 10
      tpm: 1000
    model_info:
      id: m1
      base_model: gpt-4
    extra_entry_key: 1
"#);
        assert_eq!(
            c.warnings,
            vec![
                "general_settings: unknown top-level key, ignored",
                "litellm_settings: unknown top-level key, ignored",
                "model_list entry 1 (model \"m\"): extra_entry_key: unknown key, ignored",
                "model_list entry 1 (model \"m\"): litellm_params.rpm: unknown key, ignored",
                "model_list entry 1 (model \"m\"): litellm_params.tpm: unknown key, ignored",
                "model_list entry 1 (model \"m\"): model_info.base_model: unknown key, ignored",
            ]
        );
    }

    #[test]
    fn empty_or_missing_model_list_is_valid_but_warned() {
        for yaml in ["", "# only a comment\n", "model_list: []\n", "model_list:\n", "router_settings: {}\n"] {
            let c = ok(yaml);
            assert!(c.groups.is_empty(), "{yaml:?}");
            assert!(c.warnings.iter().any(|w| w.starts_with("model_list is")), "{yaml:?}: {:?}", c.warnings);
        }
    }

    #[test]
    fn structural_errors() {
        let e = err("- a\n- b\n");
        assert_contains(&e, &["top level"]);
        assert_message_style(&e);
        let e = err("model_list: {a: 1}\n");
        assert_contains(&e, &["model_list must be a list"]);
        assert_message_style(&e);
    }

    #[test]
    fn duplicate_yaml_keys_are_rejected() {
        let e = err("model_list:\n  - model_name: m\n    model_name: n\n    litellm_params: {model: openai/x}\n");
        assert_contains(&e, &["invalid models yaml", "duplicate", "model_name"]);
    }

    #[test]
    fn invalid_yaml_reports_the_position() {
        let e = err("model_list:\n  - model_name: m\n    litellm_params: {model: openai/x\n");
        assert_contains(&e, &["invalid models yaml", "line"]);
        assert_message_style(&e);
        let e = err("model_list:\n  - model_name: [\n");
        assert_contains(&e, &["invalid models yaml", "line"]);
    }

    #[test]
    fn yaml_merge_keys_are_honoured() {
        let c = ok(r#"
x-vllm: &vllm
  model: hosted_vllm/llama
  api_base: http://10.0.0.1:8000/v1
model_list:
  - model_name: llama
    litellm_params:
      <<: *vllm
  - model_name: llama
    litellm_params:
      <<: *vllm
      api_base: http://10.0.0.2:8000/v1
"#);
        let g = &c.groups[0];
        assert_eq!(g.provider_model, "llama");
        assert_eq!(g.upstream.endpoints.len(), 2);
    }

    #[test]
    fn wildcard_model_names_are_warned() {
        let c = ok("model_list:\n  - model_name: \"openai/*\"\n    litellm_params: {model: \"openai/*\"}\n");
        assert!(c.warnings.iter().any(|w| w.contains("wildcard")), "{:?}", c.warnings);
    }

    #[test]
    fn resolve_by_name_and_alias() {
        let c = ok(r#"
model_list:
  - model_name: a
    litellm_params: {model: openai/x}
    model_info: {aliases: [a1, a2]}
  - model_name: b
    litellm_params: {model: openai/y}
"#);
        assert_eq!(c.resolve("a").map(|g| g.name.as_str()), Some("a"));
        assert_eq!(c.resolve("a2").map(|g| g.name.as_str()), Some("a"));
        assert_eq!(c.resolve("b").map(|g| g.name.as_str()), Some("b"));
        assert!(c.resolve("A").is_none());
        assert!(c.resolve("c").is_none());
        assert!(c.resolve("").is_none());
    }

    #[test]
    fn load_reads_files_and_reports_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("models.yaml");
        std::fs::write(&path, "model_list:\n  - model_name: m\n    litellm_params: {model: openai/x}\n").unwrap();
        let c = ModelsConfig::load(&path).unwrap();
        assert_eq!(c.groups[0].name, "m");

        let missing = dir.path().join("nope.yaml");
        let e = ModelsConfig::load(&missing).unwrap_err().to_string();
        assert_contains(&e, &["cannot read models file", "nope.yaml"]);
        assert_message_style(&e);
    }

    #[test]
    fn endpoint_display_brackets_ipv6() {
        assert_eq!(Endpoint { host: "::1".into(), port: 80 }.to_string(), "[::1]:80");
        assert_eq!(Endpoint { host: "h".into(), port: 80 }.to_string(), "h:80");
    }

    #[test]
    fn example_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/models.yaml");
        let yaml = std::fs::read_to_string(&path).unwrap();
        let c = ModelsConfig::parse(&yaml, &no_env).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let fake = Upstream {
            tls: false,
            base_path: "/v1".into(),
            endpoints: vec![Endpoint { host: "127.0.0.1".into(), port: 18090 }],
        };
        // (name, provider model, mode, multiplier, aliases)
        type Row<'a> = (&'a str, &'a str, Option<&'a str>, f64, Vec<&'a str>);
        let summary: Vec<Row<'_>> = c
            .groups
            .iter()
            .map(|g| {
                assert_eq!(g.upstream, fake, "{}", g.name);
                assert_eq!(g.api_key, None, "{}", g.name);
                (
                    g.name.as_str(),
                    g.provider_model.as_str(),
                    g.mode.as_deref(),
                    g.request_limit_multiplier,
                    g.aliases.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("fake-chat", "fake-chat", Some("chat"), 1.0, vec!["demo", "gpt-demo"]),
                ("fake-chat-large", "fake-chat-large", Some("chat"), 0.5, vec![]),
                ("fake-embed", "fake-embed", Some("embedding"), 1.0, vec![]),
                ("fake-tts", "fake-tts", Some("audio_speech"), 1.0, vec![]),
                ("fake-whisper", "fake-whisper", Some("audio_transcription"), 1.0, vec![]),
                ("fake-image", "fake-image", Some("image_generation"), 1.0, vec![]),
            ]
        );
        assert_eq!(c.resolve("demo").map(|g| g.name.as_str()), Some("fake-chat"));
    }
}
