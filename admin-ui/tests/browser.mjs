// Browser flows of the admin UI in Debian's Chromium (playwright-core, never a downloaded
// browser), against the real gateway and a real OpenID provider. Started by
// control-plane/tests/e2e/admin_ui_browser.rs, which passes:
//   GATEWAY      http://127.0.0.1:<listen>
//   SCREENSHOTS  directory for one screenshot per page
//   CHROMIUM     the browser binary (default /usr/bin/chromium)
// Prints one JSON line {"alice_key": …, "sa_key": …} for the Rust side to use with an OpenAI
// client; exits non-zero on the first failed check.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const gateway = process.env.GATEWAY;
const shots = process.env.SCREENSHOTS;
assert.ok(gateway && shots, "GATEWAY and SCREENSHOTS must be set");
mkdirSync(shots, { recursive: true });

// playwright gives each launch a new empty profile directory and removes it at close.
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
  ],
  headless: true,
  timeout: 60_000,
});

const shot = async (page, name) => {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
};

// Console errors on our pages (a Content-Security-Policy violation, a script error) fail the run.
const consoleErrors = [];

// Each user gets their own browser context (own cookies); destructive actions ask first.
const newUser = async (viewport = { width: 1280, height: 900 }, colorScheme = "light") => {
  const ctx = await browser.newContext({ viewport, colorScheme });
  const page = await ctx.newPage();
  page.setDefaultTimeout(20_000);
  page.on("dialog", (d) => d.accept());
  page.on("console", (m) => {
    // 4xx answers are expected on refusal pages; they are checked by status.
    if (m.type() === "error" && page.url().startsWith(gateway) && !/status of 40[13]/.test(m.text())) {
      consoleErrors.push(`${page.url()}: ${m.text()}`);
    }
  });
  return { ctx, page };
};

// The OIDC login: our button, the provider's login and consent screens, back to the keys page.
const oidcLogin = async (page, name) => {
  await page.goto(`${gateway}/ui/keys`);
  assert.match(page.url(), /\/ui\/login$/, "signed out: sent to the login page");
  await page.getByRole("link", { name: "Sign in with single sign-on" }).click();
  await page.locator("input[name=login]").fill(name);
  await page.locator("input[name=password]").fill("any");
  await page.locator("button[type=submit]").click();
  // Consent (first time per client and user).
  const consent = page.locator("button[type=submit]");
  if (!page.url().startsWith(gateway)) {
    await consent.click();
  }
  await page.waitForURL(`${gateway}/ui/keys`);
  await page.getByText(`${name}@acme.test`).waitFor();
};

const newSecret = async (page) => (await page.locator("#secret").textContent()).trim();

// Polls the gateway with a key until GET /v1/models answers `status` (policy changes reach
// Envoy within moments); returns the last answer's body.
const untilStatus = async (key, status) => {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const r = await fetch(`${gateway}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
    const body = await r.json();
    if (r.status === status) return body;
    if (Date.now() > deadline) throw new Error(`expected ${status}, still ${r.status}: ${JSON.stringify(body)}`);
    await new Promise((res) => setTimeout(res, 100));
  }
};

// An admin publishes a Terms of Service version.
const publishTerms = async (page, text) => {
  await page.goto(`${gateway}/ui/terms/versions`);
  await page.getByLabel("Text").fill(text);
  await page.getByRole("button", { name: "Publish version" }).click();
  await page.getByText(/Version \d+ published\./).waitFor();
};

// A user reads and accepts the current version.
const acceptTerms = async (page) => {
  await page.goto(`${gateway}/ui/terms`);
  await page.getByRole("button", { name: "Accept the Terms of Service" }).click();
  await page.getByText(/You accepted version \d+ of the Terms of Service\./).waitFor();
};

try {
  // --- Alice, a user (groups: acme → org Acme, team:Research → team Research) ---
  const alice = await newUser();
  await alice.page.goto(`${gateway}/ui/login`);
  await shot(alice.page, "login");
  await oidcLogin(alice.page, "alice");
  await alice.page.getByText("user", { exact: true }).first().waitFor();

  // Keyboard: the first Tab reaches the skip link, and every form control has a label.
  await alice.page.keyboard.press("Tab");
  assert.equal(await alice.page.evaluate(() => document.activeElement.textContent), "Skip to content");
  const unlabelled = await alice.page.evaluate(() =>
    [...document.querySelectorAll("input:not([type=hidden]), select, textarea")]
      .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label"))
      .map((el) => el.name));
  assert.deepEqual(unlabelled, [], "every control is labelled");

  // Create a key: shown once, with a copy button.
  await alice.page.getByLabel("Name", { exact: true }).fill("alice-laptop");
  await alice.page.getByRole("button", { name: "Create key" }).click();
  await alice.page.getByRole("heading", { name: "Key alice-laptop created" }).waitFor();
  const aliceKey = await newSecret(alice.page);
  assert.match(aliceKey, /^sk-aq-[0-9A-Za-z]{43}$/);
  await alice.page.getByRole("button", { name: "Copy key" }).click();
  await alice.page.getByText("Copied.").waitFor();
  await shot(alice.page, "key-created");
  await alice.page.getByRole("link", { name: "Done" }).click();
  await alice.page.getByRole("cell", { name: /^alice-laptop created/ }).waitFor();
  assert.equal(await alice.page.getByText(aliceKey).count(), 0, "the key is not shown again");
  await shot(alice.page, "keys");

  // Her team came from her groups; she is a plain member and cannot manage it.
  await alice.page.getByRole("link", { name: "Teams" }).click();
  await alice.page.getByRole("link", { name: "Research" }).click();
  const teamUrl = alice.page.url();
  await alice.page.getByText("member", { exact: true }).waitFor();
  assert.equal(await alice.page.getByRole("button", { name: "Create service account" }).count(), 0);
  // A role refused an action it must not have: posting the form anyway is refused by the API's rule.
  const csrf = await alice.page.locator("input[name=csrf]").first().inputValue();
  const forged = await alice.page.request.post(`${teamUrl}/create-sa`, { form: { csrf, name: "sneaky" }, maxRedirects: 0 });
  assert.equal(forged.status(), 303);
  await alice.page.goto(teamUrl);
  await alice.page.getByText("Creating service accounts needs the admin, org-admin or team-admin role.").waitFor();
  await shot(alice.page, "refused-team-action");
  // …and the users page is not hers either.
  const users = await alice.page.goto(`${gateway}/ui/users`);
  assert.equal(users.status(), 403);
  await shot(alice.page, "refused-users-page");
  await alice.page.goto(`${gateway}/ui/models`);
  await alice.page.getByRole("row", { name: /^chat chat-alias chat 1 yes$/ }).waitFor();
  await shot(alice.page, "models");
  await alice.page.goto(`${gateway}/ui/org`);
  await alice.page.getByRole("heading", { name: "Acme" }).waitFor();
  await shot(alice.page, "org");

  // --- Root, an admin by the admin group ---
  const root = await newUser();
  await oidcLogin(root.page, "root");
  await root.page.goto(teamUrl);
  await root.page.getByRole("button", { name: "Make alice@acme.test team-admin" }).click();
  await root.page.getByText("Team-admin granted.").waitFor();
  await shot(root.page, "team-detail-admin");
  for (const [path, name] of [["/ui/orgs", "orgs"], ["/ui/users", "users"], ["/ui/teams", "teams"]]) {
    await root.page.goto(`${gateway}${path}`);
    await shot(root.page, name);
  }
  await root.page.goto(`${gateway}/ui/users`);
  await root.page.getByRole("link", { name: "Limits of alice@acme.test" }).click();
  await root.page.getByLabel("Requests per minute, per key below").fill("1000");
  await root.page.getByRole("button", { name: "Save limits and exclusions" }).click();
  await root.page.getByText("Limits and exclusions saved.").waitFor();
  await shot(root.page, "limits");
  // The audit log shows who did what, including Alice's refused attempt.
  await root.page.goto(`${gateway}/ui/audit`);
  await root.page.getByRole("row", { name: /alice@acme\.test ui POST \/api\/v1\/teams\/\d+\/service-accounts refused \(403\)/ }).waitFor();
  await root.page.getByRole("row", { name: /root@acme\.test ui PUT \/api\/v1\/teams\/\d+\/members\/\d+ done/ }).waitFor();
  await shot(root.page, "audit");

  // Terms of Service: once a version is published, Alice's key is refused until she accepts.
  await untilStatus(aliceKey, 200);
  await publishTerms(root.page, "1. Be nice to the models.\n2. No secrets in prompts.");
  await shot(root.page, "terms-versions");
  const refused = await untilStatus(aliceKey, 403);
  assert.equal(refused.error.type, "permission_denied_error");
  assert.equal(refused.error.code, "terms_not_accepted");
  await alice.page.goto(`${gateway}/ui/keys`);
  await alice.page.getByText("Your API keys are blocked until you accept the current").waitFor();
  await alice.page.goto(`${gateway}/ui/terms`);
  await shot(alice.page, "terms");
  await acceptTerms(alice.page);
  await untilStatus(aliceKey, 200);

  // --- Usage: traffic with Alice's key, then her usage page draws it ---
  for (let i = 0; i < 3; i++) {
    const r = await fetch(`${gateway}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${aliceKey}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "chat", user: "alice-end", messages: [{ role: "user", content: "hello" }] }),
    });
    assert.equal(r.status, 200);
    await r.arrayBuffer();
  }
  // The filter delivers usage in batches: reload until these requests are in (earlier ones,
  // without an end user, may already be drawn).
  const usageDeadline = Date.now() + 20_000;
  for (;;) {
    await alice.page.goto(`${gateway}/ui/usage?range=1h`);
    if ((await alice.page.getByRole("rowheader", { name: "alice-end" }).count()) > 0) break;
    assert.ok(Date.now() < usageDeadline, "the usage charts never showed data");
    await new Promise((res) => setTimeout(res, 300));
  }
  await alice.page.getByRole("img", { name: "Requests per minute" }).waitFor();
  await alice.page.getByRole("img", { name: "Requests by model" }).waitFor();
  assert.ok((await alice.page.locator("svg.chart polyline").count()) > 0, "requests and tokens drawn");
  // The CSV link is the usage API, downloaded with the session cookie.
  const csvHref = await alice.page.getByRole("link", { name: "Download by end user as CSV" }).getAttribute("href");
  const csv = await alice.page.request.get(`${gateway}${csvHref}`);
  assert.equal(csv.status(), 200);
  assert.match(await csv.text(), /^end_user,requests,.*\nalice-end,3,/s);
  await shot(alice.page, "usage");

  // --- MCP servers: the registry's servers with copyable URLs ---
  await alice.page.getByRole("link", { name: "MCP servers" }).click();
  await alice.page.getByRole("heading", { name: "docs" }).waitFor();
  await alice.page.getByRole("button", { name: "Copy the URL of docs" }).click();
  await alice.page.getByText("Copied.").waitFor();
  await shot(alice.page, "mcp");

  // --- Alice as team-admin: a service account, its key shown once, then regenerated ---
  await alice.page.goto(teamUrl);
  await alice.page.getByText("team-admin", { exact: true }).waitFor();
  await alice.page.getByLabel("Name", { exact: true }).fill("ci-bot");
  await alice.page.getByRole("button", { name: "Create service account" }).click();
  await alice.page.getByRole("heading", { name: "Service account ci-bot created" }).waitFor();
  const firstSaKey = await newSecret(alice.page);
  await alice.page.getByRole("link", { name: "Done" }).click();
  await alice.page.getByRole("button", { name: "Regenerate key of ci-bot" }).click();
  await alice.page.getByRole("heading", { name: "Key of ci-bot regenerated" }).waitFor();
  const saKey = await newSecret(alice.page);
  assert.notEqual(saKey, firstSaKey);
  await alice.page.goto(teamUrl);
  // A team-admin may not hand out team-admin (only admins and org-admins).
  assert.equal(await alice.page.getByRole("button", { name: /team-admin/ }).count(), 0);
  await shot(alice.page, "team-detail-team-admin");

  // A new version blocks the service account's key too until its owner accepts it.
  await untilStatus(saKey, 200);
  await publishTerms(root.page, "Version two: same as before, plus be kind to the GPUs.");
  assert.equal((await untilStatus(saKey, 403)).error.code, "terms_not_accepted");
  await acceptTerms(alice.page);
  await untilStatus(saKey, 200);

  // The team-admin hands the service account to another member; its key moves with it.
  await alice.page.goto(teamUrl);
  await alice.page.getByLabel("New owner of ci-bot").selectOption({ label: "root@acme.test" });
  await alice.page.getByRole("button", { name: "Transfer ci-bot" }).click();
  await alice.page.getByText("Service account transferred.").waitFor();
  await alice.page.getByRole("row", { name: /^ci-bot\s+root@acme\.test/ }).waitFor();

  // --- Usable at 375 px: nothing wider than the screen except scrollable tables ---
  const phone = await newUser({ width: 375, height: 740 });
  await oidcLogin(phone.page, "alice");
  for (const [path, name] of [
    ["/ui/keys", "keys-375px"], [teamUrl.replace(gateway, ""), "team-375px"],
    ["/ui/usage?range=1h", "usage-375px"], ["/ui/mcp", "mcp-375px"],
  ]) {
    await phone.page.goto(`${gateway}${path}`);
    const width = await phone.page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 375, `${path} is ${width}px wide at 375px`);
    await shot(phone.page, name);
  }

  // Dark theme follows the system setting.
  const night = await newUser({ width: 1280, height: 900 }, "dark");
  await oidcLogin(night.page, "alice");
  const bg = await night.page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  assert.equal(bg, "rgb(13, 17, 23)", "dark background");
  await shot(night.page, "keys-dark");
  await night.page.goto(`${gateway}/ui/usage?range=1h`);
  await night.page.locator("svg.chart polyline").first().waitFor();
  await shot(night.page, "usage-dark");

  // Sign out: back to the login page, and the UI is closed again.
  await alice.page.getByRole("button", { name: "Sign out" }).click();
  await alice.page.waitForURL(`${gateway}/ui/login`);
  await alice.page.goto(`${gateway}/ui/keys`);
  assert.match(alice.page.url(), /\/ui\/login$/);

  assert.deepEqual(consoleErrors, [], "no console errors");
  console.log(JSON.stringify({ alice_key: aliceKey, sa_key: saKey }));
} finally {
  await browser.close();
}
