-- MCP gateway: sessions kept in the store so they survive a control-plane restart, and the
-- servers managed through the API. (The identity secret lives in gateway_secrets, 0004.)

-- One row per gateway session (the Mcp-Session-Id the client sees).
CREATE TABLE mcp_sessions (
    id                TEXT    PRIMARY KEY,
    -- The key that created the session; any other key gets 404 for it.
    token_id          BIGINT  NOT NULL,
    -- The server of a /mcp-servers/{name}/mcp session; NULL for the aggregated /mcp endpoint.
    server            TEXT,
    -- The upstream's own session id (per-server sessions; NULL if the upstream is stateless).
    upstream_session  TEXT,
    created_at        BIGINT  NOT NULL,
    last_used_at      BIGINT  NOT NULL
);
CREATE INDEX mcp_sessions_last_used ON mcp_sessions (last_used_at);

-- The aggregated endpoint's sessions with each upstream, opened on first use.
CREATE TABLE mcp_upstream_sessions (
    session_id        TEXT    NOT NULL REFERENCES mcp_sessions (id) ON DELETE CASCADE,
    server            TEXT    NOT NULL,
    upstream_session  TEXT,
    protocol_version  TEXT    NOT NULL,
    PRIMARY KEY (session_id, server)
);

-- MCP servers managed through /api/v1/mcp-servers (the file's servers are not stored here).
CREATE TABLE mcp_servers (
    name        TEXT    PRIMARY KEY,
    -- The entry in mcp.json's per-server form (JSON): type, url, description, tags, icon_url, headers.
    config      TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);
