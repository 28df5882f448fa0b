#!/usr/bin/env bash
# `make run`: the control plane (which runs Envoy) and, for the demo models, the fake upstream.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${ENVOY:?set ENVOY to an envoy binary (make run does)}"
export AQUEDUCT_ENVOY="${AQUEDUCT_ENVOY:-$ENVOY}"
export AQUEDUCT_MODELS="${AQUEDUCT_MODELS:-examples/models.yaml}"

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# The demo models point at the project's fake upstream; start it when they are in use.
if [ "$AQUEDUCT_MODELS" = "examples/models.yaml" ]; then
    target/release/fake-upstream --listen "${FAKE_UPSTREAM_LISTEN:-127.0.0.1:18090}" &
    pids+=($!)
fi

# The example MCP servers file names the MCP reference server on :3001; start it too.
export AQUEDUCT_MCP_SERVERS="${AQUEDUCT_MCP_SERVERS:-examples/mcp.json}"
if [ "$AQUEDUCT_MCP_SERVERS" = "examples/mcp.json" ] && [ -x tools/mcp-test/node_modules/.bin/mcp-server-everything ]; then
    PORT=3001 tools/mcp-test/node_modules/.bin/mcp-server-everything streamableHttp >/dev/null 2>&1 &
    pids+=($!)
fi

target/release/aqueduct serve &
pids+=($!)
sleep 1
cat <<MSG

  Admin UI: http://${AQUEDUCT_LISTEN:-127.0.0.1:8080}/ (sign in as admin@localhost with the password
  printed once on first start, 'Admin UI password ...' above).
  Try it. The control plane prints the admin key once, on first start ('Admin key ...' above);
  'target/release/aqueduct admin create-key' makes another:
    curl http://${AQUEDUCT_LISTEN:-127.0.0.1:8080}/v1/chat/completions -H "Authorization: Bearer \$KEY" \\
         -H 'content-type: application/json' -d '{"model":"demo","messages":[{"role":"user","content":"hi"}]}'
  MCP (any MCP client, Streamable HTTP, same key as a bearer token):
    http://${AQUEDUCT_LISTEN:-127.0.0.1:8080}/mcp-servers/everything/mcp   one server
    http://${AQUEDUCT_LISTEN:-127.0.0.1:8080}/mcp                          every server the key may use

MSG
wait "${pids[-1]}"
