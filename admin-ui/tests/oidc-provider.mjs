// A real OpenID provider for the browser tests: the certified `oidc-provider` package with one
// static client and its development login form (any user name signs in; no password check).
// Usage: node oidc-provider.mjs <port> <redirect_uri>
// Users: <name>@acme.test; groups come from the name: "root" is in gw-admins, everyone is in
// "acme" and in "team:Research".
// Tests may set an account's claims first: POST /test/claims with JSON {"login", "email",
// "email_verified" (true, false, or null for no claim), "groups"}; unset fields keep the
// defaults above. The subject is always the login name.
import Provider from "oidc-provider";

const [port, redirectUri] = process.argv.slice(2);
if (!port || !redirectUri) {
  console.error("usage: node oidc-provider.mjs <port> <redirect_uri>");
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

const groupsOf = (name) => {
  const groups = ["acme", "team:Research"];
  if (name === "root") groups.push("gw-admins");
  return groups;
};

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: "aqueduct",
      client_secret: "aqueduct-test-secret",
      redirect_uris: [redirectUri],
      grant_types: ["authorization_code"],
      response_types: ["code"],
    },
  ],
  async findAccount(_ctx, id) {
    return {
      accountId: id,
      async claims() {
        const claims = { sub: id, email: `${id}@acme.test`, email_verified: true, groups: groupsOf(id) };
        Object.assign(claims, overrides.get(id) ?? {});
        if (claims.email_verified === null) delete claims.email_verified;
        return claims;
      },
    };
  },
  claims: { openid: ["sub"], email: ["email", "email_verified"], groups: ["groups"] },
  scopes: ["openid", "email", "groups"],
  // Put the scopes' claims in the ID token itself (the gateway reads them from there).
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ["browser-test-cookie-key"] },
});
const overrides = new Map();
provider.use(async (ctx, next) => {
  if (ctx.method !== "POST" || ctx.path !== "/test/claims") return next();
  let body = "";
  for await (const chunk of ctx.req) body += chunk;
  const { login, ...claims } = JSON.parse(body);
  overrides.set(login, claims);
  ctx.status = 204;
});
const server = provider.listen(Number(port), "127.0.0.1", () => {
  console.log(`oidc-provider ready at ${issuer}`);
});
const stop = () => server.close(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
