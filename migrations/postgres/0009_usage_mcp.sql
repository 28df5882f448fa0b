-- MCP requests in the usage ledger: which server, JSON-RPC method and tool.
ALTER TABLE usage_events ADD COLUMN mcp_server TEXT;
ALTER TABLE usage_events ADD COLUMN mcp_method TEXT;
ALTER TABLE usage_events ADD COLUMN mcp_tool TEXT;
