//! Renders what Envoy needs from our state: the public listener, its routes, one cluster per
//! model, the control-plane cluster, and the filter configuration carrying the policy snapshot.

use super::cache::{resource, Resource};
use crate::config::models::{ModelGroup, ModelsConfig};
use aqueduct_policy::filter::ROUTE_HEADER;
use envoy_types::pb::envoy::config::accesslog::v3::{access_log_filter, AccessLogFilter, ResponseFlagFilter};
use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::{
    address, async_data_source, config_source, data_source, socket_address, transport_socket, Address,
    AggregatedConfigSource, ApiVersion, AsyncDataSource, ConfigSource, DataSource, ExtensionConfigSource, HeaderValue,
    HeaderValueOption, SocketAddress, SubstitutionFormatString, TransportSocket, TypedExtensionConfig,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher, retry_policy, route, route_action, route_match, DirectResponseAction, HeaderMatcher, RetryPolicy,
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::filters::network::connection_limit::v3::ConnectionLimit;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager, http_filter, HttpConnectionManager, HttpFilter, LocalReplyConfig, Rds, ResponseMapper,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context, CertificateValidationContext, CommonTlsContext, UpstreamTlsContext,
};
use envoy_types::pb::envoy::extensions::wasm::v3::{plugin_config, FailurePolicy, PluginConfig, VmConfig};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, StringMatcher};
use envoy_types::pb::google::protobuf::{Any, BoolValue, BytesValue, Duration, UInt32Value, UInt64Value};
use prost::Name;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Name of the public listener.
pub const LISTENER_NAME: &str = "aqueduct";
/// Name of the route configuration.
pub const ROUTE_CONFIG_NAME: &str = "aqueduct";
/// Name of the filter's ECDS resource; an existing Envoy's `config_discovery` names it.
pub const FILTER_CONFIG_NAME: &str = "aqueduct.filter";
/// Cluster of the control plane's HTTP side (management API, UI).
pub const CONTROL_PLANE_CLUSTER: &str = "aqueduct_control_plane";
/// Timeout for a model request when the models file sets none (LiteLLM's default is 600 s too).
pub const DEFAULT_MODEL_TIMEOUT_SECS: u64 = 600;
/// CA bundle used to verify HTTPS providers.
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Where things are: what resources need to know beyond the models.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The gateway's public address (Envoy's listener).
    pub listen: SocketAddr,
    /// The control plane's HTTP address, reached by Envoy.
    pub control_plane_http: SocketAddr,
    /// Absolute path of the filter's `.wasm` on Envoy's host.
    pub wasm_path: PathBuf,
    /// Largest accepted request body.
    pub max_body_bytes: u64,
    /// Connection limits and timeouts of the public listener.
    pub limits: ListenerLimits,
}

/// What one client may hold open on the public listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// A connection must send its request headers within this (Envoy's
    /// `request_headers_timeout`), or Envoy answers 408 and closes it: slow-header clients
    /// cannot hold connections open.
    pub request_headers_timeout: std::time::Duration,
    /// A stream with no activity in either direction for this long is reset (the connection
    /// manager's `stream_idle_timeout`). Model routes wait for their own timeout instead, and
    /// MCP routes for [`MCP_IDLE_TIMEOUT_SECS`], so a slow model or a quiet stream is not cut.
    pub stream_idle_timeout: std::time::Duration,
    /// Most connections open at once on the listener, across Envoy's workers; further ones are
    /// closed as they arrive (`envoy.filters.network.connection_limit`).
    pub max_connections: u64,
}

/// Default [`ListenerLimits::request_headers_timeout`], in milliseconds.
pub const DEFAULT_REQUEST_HEADERS_TIMEOUT_MS: u64 = 10_000;
/// Default [`ListenerLimits::stream_idle_timeout`], in seconds (Envoy's own default).
pub const DEFAULT_STREAM_IDLE_TIMEOUT_SECS: u64 = 300;
/// Default [`ListenerLimits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: u64 = 10_000;

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            request_headers_timeout: std::time::Duration::from_millis(DEFAULT_REQUEST_HEADERS_TIMEOUT_MS),
            stream_idle_timeout: std::time::Duration::from_secs(DEFAULT_STREAM_IDLE_TIMEOUT_SECS),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// The Envoy cluster serving a model group.
pub fn model_cluster_name(group: &ModelGroup) -> String {
    format!("aqueduct_model_{}", group.name)
}

/// Value of the routing header the filter sets for a model; also the route's match.
pub fn model_route_key(group: &ModelGroup) -> String {
    group.name.clone()
}

fn pack<M: prost::Message + Name>(m: &M) -> Any {
    Any { type_url: M::type_url(), value: m.encode_to_vec() }
}

fn secs(s: u64) -> Duration {
    Duration { seconds: i64::try_from(s).unwrap_or(i64::MAX), nanos: 0 }
}

fn duration(d: std::time::Duration) -> Duration {
    Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn socket(host: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: host.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

fn static_cluster(name: &str, endpoints: &[(String, u16)], dns: bool) -> Cluster {
    let lb_endpoints = endpoints
        .iter()
        .map(|(h, p)| LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(socket(h, *p)),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    let kind = if dns { cluster::DiscoveryType::StrictDns } else { cluster::DiscoveryType::Static };
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(kind as i32)),
        connect_timeout: Some(secs(5)),
        dns_lookup_family: cluster::DnsLookupFamily::V4Preferred as i32,
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.to_string(),
            endpoints: vec![LocalityLbEndpoints { lb_endpoints, ..Default::default() }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn tls_socket(sni: &str) -> TransportSocket {
    let ctx = UpstreamTlsContext {
        sni: sni.to_string(),
        common_tls_context: Some(CommonTlsContext {
            validation_context_type: Some(common_tls_context::ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(DataSource {
                        specifier: Some(data_source::Specifier::Filename(CA_BUNDLE.to_string())),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack(&ctx))),
    }
}

/// The control-plane cluster plus one cluster per model group.
pub fn clusters(layout: &Layout, models: &ModelsConfig) -> Vec<Resource> {
    let cp_host = if layout.control_plane_http.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        layout.control_plane_http.ip().to_string()
    };
    let mut out = vec![resource(
        CONTROL_PLANE_CLUSTER,
        &static_cluster(CONTROL_PLANE_CLUSTER, &[(cp_host, layout.control_plane_http.port())], false),
    )];
    for g in &models.groups {
        let name = model_cluster_name(g);
        let eps: Vec<(String, u16)> = g.upstream.endpoints.iter().map(|e| (e.host.clone(), e.port)).collect();
        let dns = eps.iter().any(|(h, _)| h.parse::<std::net::IpAddr>().is_err());
        let mut c = static_cluster(&name, &eps, dns);
        if g.upstream.tls {
            let sni = eps.first().map(|(h, _)| h.clone()).unwrap_or_default();
            c.transport_socket = Some(tls_socket(&sni));
        }
        out.push(resource(name, &c));
    }
    out
}

/// The Wasm filter configuration carrying `policy`, the encoded policy snapshot (binary form,
/// or JSON; Envoy hands a `BytesValue` to the filter as raw bytes).
pub fn wasm_filter(wasm_path: &str, policy: Vec<u8>) -> Wasm {
    Wasm {
        config: Some(PluginConfig {
            name: "aqueduct".into(),
            root_id: "aqueduct".into(),
            vm: Some(plugin_config::Vm::VmConfig(VmConfig {
                vm_id: "aqueduct".into(),
                runtime: "envoy.wasm.runtime.v8".into(),
                code: Some(AsyncDataSource {
                    specifier: Some(async_data_source::Specifier::Local(DataSource {
                        specifier: Some(data_source::Specifier::Filename(wasm_path.to_string())),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            configuration: Some(pack(&BytesValue { value: policy })),
            // A trap fails only its own request; the next one gets a fresh VM. Never FAIL_OPEN.
            failure_policy: FailurePolicy::FailReload as i32,
            // The body decides the route, so the filter must hold headers until it has read it.
            allow_on_headers_stop_iteration: Some(BoolValue { value: true }),
            ..Default::default()
        }),
    }
}

/// The ECDS resource for the filter.
pub fn filter_config(layout: &Layout, policy: Vec<u8>) -> Resource {
    let wasm = wasm_filter(&layout.wasm_path.to_string_lossy(), policy);
    resource(
        FILTER_CONFIG_NAME,
        &TypedExtensionConfig { name: FILTER_CONFIG_NAME.into(), typed_config: Some(pack(&wasm)) },
    )
}

/// The filter as an HTTP filter fetched over ECDS from `source`.
pub fn filter_via_ecds(source: ConfigSource) -> HttpFilter {
    HttpFilter {
        name: FILTER_CONFIG_NAME.into(),
        config_type: Some(http_filter::ConfigType::ConfigDiscovery(ExtensionConfigSource {
            config_source: Some(source),
            type_urls: vec![Wasm::type_url()],
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Envoy's own local replies (upstream unreachable, timeout, no route) in OpenAI's error shape.
fn local_replies() -> LocalReplyConfig {
    let mapper = |flags: &[&str], kind: &str, code: &str, message: &str| ResponseMapper {
        filter: Some(AccessLogFilter {
            filter_specifier: Some(access_log_filter::FilterSpecifier::ResponseFlagFilter(ResponseFlagFilter {
                flags: flags.iter().map(|f| f.to_string()).collect(),
            })),
        }),
        body_format_override: Some(SubstitutionFormatString {
            format: Some(
                envoy_types::pb::envoy::config::core::v3::substitution_format_string::Format::TextFormatSource(
                    DataSource {
                        specifier: Some(data_source::Specifier::InlineString(format!(
                            r#"{{"error":{{"message":"{message}","type":"{kind}","param":null,"code":"{code}"}}}}"#
                        ))),
                        ..Default::default()
                    },
                ),
            ),
            content_type: "application/json".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    LocalReplyConfig {
        mappers: vec![
            mapper(&["UT"], "timeout_error", "upstream_timeout", "The upstream service did not answer in time."),
            mapper(
                &["UF", "UH", "URX", "UO", "UC", "UR"],
                "server_error",
                "upstream_unavailable",
                "The upstream service could not be reached.",
            ),
            mapper(&["NR"], "not_found_error", "unknown_url", "No route for this request."),
        ],
        ..Default::default()
    }
}

/// The public listener: HCM with the filter (via ECDS) and the router, routes via RDS.
pub fn listener(layout: &Layout) -> Listener {
    let router = HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack(&Router::default()))),
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: "aqueduct".into(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: ROUTE_CONFIG_NAME.into(),
        })),
        http_filters: vec![filter_via_ecds(ads()), router],
        local_reply_config: Some(local_replies()),
        // Envoy appends the connecting address to X-Forwarded-For (and, as an edge proxy,
        // treats the client's x-envoy-* headers as untrusted): the filter reads the ledger's
        // client address from the header instead of asking Envoy for it per request.
        use_remote_address: Some(BoolValue { value: true }),
        request_headers_timeout: Some(duration(layout.limits.request_headers_timeout)),
        stream_idle_timeout: Some(duration(layout.limits.stream_idle_timeout)),
        ..Default::default()
    };
    // Counted across workers; a connection over the limit is closed at once, before any byte
    // of it is read.
    let limit = ConnectionLimit {
        stat_prefix: "aqueduct".into(),
        max_connections: Some(UInt64Value { value: layout.limits.max_connections }),
        ..Default::default()
    };
    // Envoy's own buffer limit sits above the filter's so the filter answers 413 in OpenAI's
    // shape first; Envoy's limit only guards against a filter that stopped reading.
    let buffer = layout.max_body_bytes.saturating_add(1 << 20).min(u64::from(u32::MAX));
    Listener {
        name: LISTENER_NAME.into(),
        address: Some(socket(&layout.listen.ip().to_string(), layout.listen.port())),
        per_connection_buffer_limit_bytes: Some(UInt32Value { value: u32::try_from(buffer).unwrap_or(u32::MAX) }),
        filter_chains: vec![FilterChain {
            filters: vec![
                Filter {
                    name: "envoy.filters.network.connection_limit".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(pack(&limit))),
                },
                Filter {
                    name: "envoy.filters.network.http_connection_manager".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(pack(&hcm))),
                },
            ],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The listener as a resource.
pub fn listeners(layout: &Layout) -> Vec<Resource> {
    vec![resource(LISTENER_NAME, &listener(layout))]
}

fn exact_header(name: &str, value: &str) -> HeaderMatcher {
    HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(value.into())),
            ignore_case: false,
        })),
        ..Default::default()
    }
}

/// Which client paths a model route takes. Clients call with or without `/v1`; each form has a
/// route of its own so that the path is rewritten by replacing a prefix, not by a regex (RE2 on
/// every request cost Envoy some 7,500 instructions, about 4 % of a proxied request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientPath {
    /// `/v1/…`: the prefix becomes the provider's base path (nothing to do when that is `/v1`).
    V1,
    /// The bare endpoint paths (`/chat/completions`): the provider's base path goes in front.
    Bare,
}

/// The route to a model group's cluster for one form of client path, selected by the filter's
/// routing header.
pub fn model_route(group: &ModelGroup, form: ClientPath) -> Route {
    let endpoints = group.upstream.endpoints.len();
    let retries = u32::try_from(endpoints).unwrap_or(1).saturating_sub(1).max(1);
    let timeout = group.timeout.map_or(secs(DEFAULT_MODEL_TIMEOUT_SECS), duration);
    // A model may think for as long as its timeout allows before the first byte (or between
    // chunks of a stream): the listener's shorter stream idle timeout must not cut it first.
    // A timeout of 0 (none) leaves the listener's idle timeout in force.
    let idle_timeout = (timeout.seconds > 0 || timeout.nanos > 0).then_some(timeout);
    let base = &group.upstream.base_path;
    let (name, prefix, rewrite) = match form {
        ClientPath::V1 => (format!("model:{}", group.name), "/v1/", base != "/v1"),
        ClientPath::Bare => (format!("model:{}:bare", group.name), "/", !base.is_empty()),
    };
    // Another endpoint only exists to try with more than one; with one, a retry goes to the
    // same host (a pooled connection the provider closed as the request went out).
    let several = endpoints > 1;
    let retry_host_predicate = if several {
        vec![retry_policy::RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".into(),
            config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(pack(
                &PreviousHostsPredicate {},
            ))),
        }]
    } else {
        Vec::new()
    };
    Route {
        name,
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix(prefix.into())),
            headers: vec![exact_header(ROUTE_HEADER, &model_route_key(group))],
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(model_cluster_name(group))),
            timeout: Some(timeout),
            idle_timeout,
            // The provider gets its own base path; the query string is kept.
            prefix_rewrite: if rewrite { format!("{base}/") } else { String::new() },
            host_rewrite_specifier: Some(route_action::HostRewriteSpecifier::AutoHostRewrite(BoolValue {
                value: true,
            })),
            retry_policy: Some(RetryPolicy {
                // Only failures before the provider saw the request: retrying is always safe.
                retry_on: "connect-failure,refused-stream,reset-before-request".into(),
                num_retries: Some(UInt32Value { value: retries }),
                host_selection_retry_max_attempts: if several { 3 } else { 0 },
                retry_host_predicate,
                ..Default::default()
            }),
            ..Default::default()
        })),
        // The routing header has done its job; the provider never sees our internals.
        request_headers_to_remove: vec![ROUTE_HEADER.into()],
        ..Default::default()
    }
}

/// The control plane's `/metrics` (for scrapers) and `/internal/` (usage ingestion from the
/// filter) are for its own address, not for the public.
fn blocked(name: &str, specifier: route_match::PathSpecifier, shown: &str) -> Route {
    Route {
        name: name.into(),
        r#match: Some(RouteMatch { path_specifier: Some(specifier), ..Default::default() }),
        action: Some(route::Action::DirectResponse(DirectResponseAction {
            status: 404,
            body: Some(DataSource {
                specifier: Some(data_source::Specifier::InlineString(format!(
                    r#"{{"error":{{"message":"Unknown request URL: {shown}.","type":"not_found_error","param":null,"code":"unknown_url"}}}}"#
                ))),
                ..Default::default()
            }),
            ..Default::default()
        })),
        response_headers_to_add: vec![HeaderValueOption {
            header: Some(HeaderValue {
                key: "content-type".into(),
                value: "application/json".into(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn health_route(path: &str) -> Route {
    Route {
        name: "health".into(),
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Path(path.into())),
            ..Default::default()
        }),
        action: Some(route::Action::DirectResponse(DirectResponseAction {
            status: 200,
            body: Some(DataSource {
                specifier: Some(data_source::Specifier::InlineString("ok".into())),
                ..Default::default()
            }),
            ..Default::default()
        })),
        response_headers_to_add: vec![HeaderValueOption {
            header: Some(HeaderValue { key: "content-type".into(), value: "text/plain".into(), ..Default::default() }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// `/ready` goes to the control plane, which checks its database and configuration; with the
/// control plane away Envoy answers 503 itself. `/health` (above) is Envoy's own: liveness.
fn ready_route() -> Route {
    Route {
        name: "ready".into(),
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Path("/ready".into())),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(CONTROL_PLANE_CLUSTER.into())),
            timeout: Some(secs(5)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// MCP traffic to the control plane. Server streams (GET) and long tool calls (SSE) stay open
/// for as long as they run, so there is no overall timeout; a stream silent for an hour ends.
fn mcp_route(name: &str, path: route_match::PathSpecifier) -> Route {
    Route {
        name: name.into(),
        r#match: Some(RouteMatch { path_specifier: Some(path), ..Default::default() }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(CONTROL_PLANE_CLUSTER.into())),
            timeout: Some(secs(0)),
            idle_timeout: Some(secs(MCP_IDLE_TIMEOUT_SECS)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Id-based Responses API calls (`/v1/responses/{id}…`, authenticated by the filter) to the
/// control plane, which serves them to the response's owner from its provider. A retrieve can
/// stream a background response for as long as the model runs: no overall timeout, and a
/// model's default timeout of silence.
fn responses_route(name: &str, prefix: &str) -> Route {
    Route {
        name: name.into(),
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix(prefix.into())),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(CONTROL_PLANE_CLUSTER.into())),
            timeout: Some(secs(0)),
            idle_timeout: Some(secs(DEFAULT_MODEL_TIMEOUT_SECS)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// How long an MCP stream may stay silent before Envoy ends it.
pub const MCP_IDLE_TIMEOUT_SECS: u64 = 3600;

/// The route table: health, one route per model, MCP, and everything else to the control plane.
pub fn route_config(models: &ModelsConfig) -> RouteConfiguration {
    let mut routes = vec![
        health_route("/health"),
        health_route("/health/"),
        ready_route(),
        blocked("metrics", route_match::PathSpecifier::Path("/metrics".into()), "/metrics"),
        blocked("internal", route_match::PathSpecifier::Prefix("/internal/".into()), "/internal/"),
    ];
    // Every model's `/v1/` route before any bare one: a `/v1/` request (nearly all) is matched
    // among as many routes as before, a bare one passes the `/v1/` prefixes first, cheaply.
    routes.extend(models.groups.iter().map(|g| model_route(g, ClientPath::V1)));
    routes.extend(models.groups.iter().map(|g| model_route(g, ClientPath::Bare)));
    // After the model routes: a create (`POST /v1/responses`) carries the routing header and
    // goes to its model; the id-based calls below it never do.
    routes.push(responses_route("responses", "/v1/responses/"));
    routes.push(responses_route("responses:bare", "/responses/"));
    routes.push(mcp_route("mcp-servers", route_match::PathSpecifier::Prefix("/mcp-servers/".into())));
    routes.push(mcp_route("mcp", route_match::PathSpecifier::Path("/mcp".into())));
    routes.push(Route {
        name: "control-plane".into(),
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(CONTROL_PLANE_CLUSTER.into())),
            timeout: Some(secs(60)),
            ..Default::default()
        })),
        ..Default::default()
    });
    RouteConfiguration {
        name: ROUTE_CONFIG_NAME.into(),
        virtual_hosts: vec![VirtualHost {
            name: "aqueduct".into(),
            domains: vec!["*".into()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The route configuration as a resource.
pub fn routes(models: &ModelsConfig) -> Vec<Resource> {
    vec![resource(ROUTE_CONFIG_NAME, &route_config(models))]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::models::ModelsConfig;

    fn models(yaml: &str) -> ModelsConfig {
        match ModelsConfig::parse(yaml, &|_| None) {
            Ok(m) => m,
            Err(e) => panic!("models: {e}"),
        }
    }

    /// The model routes in order: (name, prefix, prefix_rewrite, host predicates, selection attempts).
    fn model_routes(m: &ModelsConfig) -> Vec<(String, String, String, usize, u32)> {
        route_config(m).virtual_hosts[0]
            .routes
            .iter()
            .filter(|r| r.name.starts_with("model:"))
            .map(|r| {
                let prefix = match r.r#match.as_ref().and_then(|m| m.path_specifier.clone()) {
                    Some(route_match::PathSpecifier::Prefix(p)) => p,
                    other => panic!("{}: {other:?}", r.name),
                };
                let Some(route::Action::Route(a)) = &r.action else { panic!("{}: not a route", r.name) };
                let retry = a.retry_policy.clone().unwrap_or_default();
                assert!(a.regex_rewrite.is_none(), "{}: no regex on the request path", r.name);
                assert_eq!(r.request_headers_to_remove, vec![ROUTE_HEADER.to_string()]);
                (
                    r.name.clone(),
                    prefix,
                    a.prefix_rewrite.clone(),
                    retry.retry_host_predicate.len(),
                    retry.host_selection_retry_max_attempts as u32,
                )
            })
            .collect()
    }

    fn route(
        name: &str,
        prefix: &str,
        rewrite: &str,
        predicates: usize,
        attempts: u32,
    ) -> (String, String, String, usize, u32) {
        (name.into(), prefix.into(), rewrite.into(), predicates, attempts)
    }

    #[test]
    fn each_model_has_a_v1_and_a_bare_route_rewriting_a_prefix() {
        let m = models(
            "model_list:
  - model_name: a
    litellm_params: { model: openai/a, api_base: \"http://127.0.0.1:9001/v1\" }
  - model_name: b
    litellm_params: { model: openai/b, api_base: \"http://127.0.0.1:9002/openai/v1/\" }
  - model_name: c
    litellm_params: { model: openai/c, api_base: \"http://127.0.0.1:9003\" }
",
        );
        assert_eq!(
            model_routes(&m),
            vec![
                // Every /v1/ route first: the common form is matched among as many routes as models.
                route("model:a", "/v1/", "", 0, 0),
                route("model:b", "/v1/", "/openai/v1/", 0, 0),
                route("model:c", "/v1/", "/", 0, 0),
                route("model:a:bare", "/", "/v1/", 0, 0),
                route("model:b:bare", "/", "/openai/v1/", 0, 0),
                route("model:c:bare", "/", "", 0, 0),
            ]
        );
    }

    #[test]
    fn the_listener_limits_slow_headers_and_connections() {
        let layout = Layout {
            listen: ([127, 0, 0, 1], 8080).into(),
            control_plane_http: ([127, 0, 0, 1], 18001).into(),
            wasm_path: PathBuf::from("/f.wasm"),
            max_body_bytes: 1,
            limits: ListenerLimits {
                request_headers_timeout: std::time::Duration::from_millis(1500),
                max_connections: 7,
                ..Default::default()
            },
        };
        let l = listener(&layout);
        let filters = &l.filter_chains[0].filters;
        let names: Vec<&str> = filters.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            ["envoy.filters.network.connection_limit", "envoy.filters.network.http_connection_manager"],
            "the limit is counted before HTTP is parsed"
        );
        let typed = |i: usize| match &filters[i].config_type {
            Some(filter::ConfigType::TypedConfig(a)) => a.value.clone(),
            other => panic!("{other:?}"),
        };
        let limit = <ConnectionLimit as prost::Message>::decode(typed(0).as_slice()).unwrap();
        assert_eq!(limit.max_connections, Some(UInt64Value { value: 7 }));
        let hcm = <HttpConnectionManager as prost::Message>::decode(typed(1).as_slice()).unwrap();
        assert_eq!(hcm.request_headers_timeout, Some(Duration { seconds: 1, nanos: 500_000_000 }));
        assert_eq!(hcm.stream_idle_timeout, Some(secs(DEFAULT_STREAM_IDLE_TIMEOUT_SECS)));
    }

    #[test]
    fn a_model_may_stay_silent_for_its_whole_timeout() {
        let m = models(
            "model_list:
  - model_name: slow
    litellm_params: { model: openai/a, api_base: \"http://127.0.0.1:9001/v1\", timeout: 1800 }
  - model_name: default
    litellm_params: { model: openai/b, api_base: \"http://127.0.0.1:9002/v1\" }
",
        );
        let idle: Vec<(String, Option<Duration>)> = route_config(&m).virtual_hosts[0]
            .routes
            .iter()
            .filter(|r| r.name.starts_with("model:") && !r.name.ends_with(":bare"))
            .map(|r| match &r.action {
                Some(route::Action::Route(a)) => (r.name.clone(), a.idle_timeout),
                _ => panic!("not a route"),
            })
            .collect();
        assert_eq!(
            idle,
            vec![
                ("model:slow".to_string(), Some(secs(1800))),
                ("model:default".to_string(), Some(secs(DEFAULT_MODEL_TIMEOUT_SECS)))
            ],
            "longer than the listener's {DEFAULT_STREAM_IDLE_TIMEOUT_SECS} s stream idle timeout"
        );
    }

    #[test]
    fn other_hosts_are_preferred_on_retry_only_when_there_are_other_hosts() {
        let m = models(
            "model_list:
  - model_name: a
    litellm_params: { model: openai/a, api_base: \"http://127.0.0.1:9001/v1\" }
  - model_name: a
    litellm_params: { model: openai/a, api_base: \"http://127.0.0.1:9002/v1\" }
",
        );
        assert_eq!(
            model_routes(&m),
            vec![route("model:a", "/v1/", "", 1, 3), route("model:a:bare", "/", "/v1/", 1, 3)]
        );
        let config = route_config(&m);
        let first = config.virtual_hosts[0].routes.iter().find(|r| r.name == "model:a");
        let Some(route::Action::Route(a)) = first.and_then(|r| r.action.as_ref()) else { panic!("not a route") };
        assert_eq!(a.retry_policy.as_ref().and_then(|r| r.num_retries), Some(UInt32Value { value: 1 }));
    }
}
