//! OIDC login: authorization code flow with PKCE (S256), `state` and `nonce`, against the
//! provider found by discovery; the ID token is validated (signature by the provider's JWKS,
//! issuer, audience, expiry, nonce) before any claim is read. Claims then map to a user: the
//! email claim, the groups claim → org, admin group → role, and optionally groups → teams.
//!
//! Account binding: the email must be verified by the provider (`email_verified`), and an
//! account is bound to the provider's subject (issuer + `sub`) on its first OIDC sign-in. Later
//! sign-ins find it by subject; an account bound to another subject is never taken over by
//! email. Whenever a sign-in raises a user's role, and on the first sign-in of an account that
//! someone else created, the user's personal keys that existed before are revoked in the same
//! transaction: keys minted before a promotion do not carry it.

use crate::db::Db;
use crate::tenancy::store::{self as ts, Sql, Val};
use anyhow::Context;
use base64::Engine;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope, TokenResponse,
};
use serde_json::Value;
use std::time::{Duration, Instant};

/// How long discovery (endpoints and signing keys) is reused before it is fetched again, so a
/// provider's key rotation is picked up.
const DISCOVERY_TTL: Duration = Duration::from_secs(600);
/// How long a login may take between the redirect to the provider and the callback.
pub const LOGIN_TTL_SECS: i64 = 600;

/// OIDC settings; each is a flag and an environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct OidcSettings {
    /// Issuer URL of the OpenID provider (discovery at `<issuer>/.well-known/openid-configuration`);
    /// unset: no OIDC login, only the local admin login.
    #[arg(long, env = "AQUEDUCT_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// Client id registered at the provider.
    #[arg(long, env = "AQUEDUCT_OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,
    /// Client secret registered at the provider.
    #[arg(long, env = "AQUEDUCT_OIDC_CLIENT_SECRET", hide_env_values = true)]
    pub oidc_client_secret: Option<String>,
    /// Scopes to ask for (space- or comma-separated; `openid` is always included).
    #[arg(long, env = "AQUEDUCT_OIDC_SCOPES", default_value = "openid email profile")]
    pub oidc_scopes: String,
    /// ID-token claim holding the user's email.
    #[arg(long, env = "AQUEDUCT_OIDC_EMAIL_CLAIM", default_value = "email")]
    pub oidc_email_claim: String,
    /// Accept ID tokens without an `email_verified` claim (for providers that never send it but
    /// only hand out addresses they own). An explicit `email_verified: false` is always refused.
    #[arg(long, env = "AQUEDUCT_OIDC_ALLOW_MISSING_EMAIL_VERIFIED", default_value_t = false, action = clap::ArgAction::Set)]
    pub oidc_allow_missing_email_verified: bool,
    /// ID-token claim holding the user's groups (an array of strings, or one string).
    #[arg(long, env = "AQUEDUCT_OIDC_GROUPS_CLAIM", default_value = "groups")]
    pub oidc_groups_claim: String,
    /// Group → org mapping, `group=Org name` pairs separated by commas; the first of the user's
    /// groups with a mapping picks the org (created if missing).
    #[arg(long, env = "AQUEDUCT_OIDC_GROUP_ORGS", default_value = "")]
    pub oidc_group_orgs: String,
    /// Org of users none of whose groups is mapped; unset: such users cannot sign in.
    #[arg(long, env = "AQUEDUCT_OIDC_DEFAULT_ORG")]
    pub oidc_default_org: Option<String>,
    /// Members of this group get the admin role (and lose it when they leave the group).
    #[arg(long, env = "AQUEDUCT_OIDC_ADMIN_GROUP")]
    pub oidc_admin_group: Option<String>,
    /// Keep team memberships in step with the groups claim (teams whose `oidc_group` is set).
    #[arg(long, env = "AQUEDUCT_OIDC_TEAM_SYNC", default_value_t = false)]
    pub oidc_team_sync: bool,
    /// With team sync: groups starting with this prefix stand for the team named by the rest;
    /// the team is created in the user's org if missing, or renamed if its group maps to a new
    /// name.
    #[arg(long, env = "AQUEDUCT_OIDC_TEAM_PREFIX", default_value = "team:")]
    pub oidc_team_prefix: String,
    /// With team sync: create teams for groups that have none (else only join existing ones).
    #[arg(long, env = "AQUEDUCT_OIDC_TEAM_CREATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub oidc_team_create: bool,
}

/// A configured provider.
#[derive(Debug)]
pub struct Oidc {
    settings: OidcSettings,
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: Option<ClientSecret>,
    redirect: RedirectUrl,
    http: openidconnect::reqwest::Client,
    discovered: tokio::sync::Mutex<Option<(Instant, CoreProviderMetadata)>>,
}

/// Who signed in, from validated claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's issuer (`iss`).
    pub issuer: String,
    /// The provider's stable id for the user (`sub`).
    pub subject: String,
    /// Email (lowercased, verified by the provider).
    pub email: String,
    /// Groups (possibly empty).
    pub groups: Vec<String>,
}

impl Oidc {
    /// The provider for these settings, or `None` when no issuer is set. `public_url` is the
    /// gateway's public base URL; the redirect URI is `<public_url>/ui/auth/callback`.
    pub fn new(settings: &OidcSettings, public_url: &str) -> anyhow::Result<Option<Self>> {
        let Some(issuer) = settings.oidc_issuer.as_deref().filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let client_id = settings
            .oidc_client_id
            .clone()
            .filter(|s| !s.is_empty())
            .context("AQUEDUCT_OIDC_CLIENT_ID is required with AQUEDUCT_OIDC_ISSUER")?;
        parse_group_orgs(&settings.oidc_group_orgs)?;
        let http = openidconnect::reqwest::ClientBuilder::new()
            // Following redirects from the provider's endpoints would be an SSRF risk.
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .context("cannot build the OIDC HTTP client")?;
        Ok(Some(Self {
            issuer: IssuerUrl::new(issuer.trim_end_matches('/').to_string())
                .with_context(|| format!("AQUEDUCT_OIDC_ISSUER {issuer:?} is not a URL"))?,
            client_id: ClientId::new(client_id),
            client_secret: settings.oidc_client_secret.clone().filter(|s| !s.is_empty()).map(ClientSecret::new),
            redirect: RedirectUrl::new(format!("{}/ui/auth/callback", public_url.trim_end_matches('/')))
                .context("AQUEDUCT_PUBLIC_URL is not a URL")?,
            http,
            settings: settings.clone(),
            discovered: tokio::sync::Mutex::new(None),
        }))
    }

    /// The settings.
    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    async fn metadata(&self) -> anyhow::Result<CoreProviderMetadata> {
        let mut d = self.discovered.lock().await;
        if let Some((at, m)) = d.as_ref() {
            if at.elapsed() < DISCOVERY_TTL {
                return Ok(m.clone());
            }
        }
        let m = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|e| anyhow::anyhow!("OIDC discovery at {} failed: {e}", self.issuer.as_str()))?;
        *d = Some((Instant::now(), m.clone()));
        Ok(m)
    }

    /// Starts a login: stores state, PKCE verifier and nonce, and returns the provider URL to
    /// send the browser to and the state (for the cookie that binds the login to the browser).
    pub async fn start(&self, db: &Db, now: i64) -> anyhow::Result<(String, String)> {
        let m = self.metadata().await?;
        let client = CoreClient::from_provider_metadata(m, self.client_id.clone(), self.client_secret.clone())
            .set_redirect_uri(self.redirect.clone());
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req =
            client.authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random);
        for s in self.settings.oidc_scopes.split([' ', ',']).filter(|s| !s.is_empty() && *s != "openid") {
            req = req.add_scope(Scope::new(s.to_string()));
        }
        let (url, state, nonce) = req.set_pkce_challenge(challenge).url();
        let mut sweep = Sql::new("DELETE FROM oidc_logins WHERE created_at <= ");
        sweep.arg(Val::Int(Some(now - LOGIN_TTL_SECS)));
        let mut ins = Sql::new("INSERT INTO oidc_logins (state, pkce_verifier, nonce, created_at) VALUES (");
        ins.arg(Val::Text(state.secret().clone()))
            .push(", ")
            .arg(Val::Text(verifier.secret().clone()))
            .push(", ")
            .arg(Val::Text(nonce.secret().clone()))
            .push(", ")
            .arg(Val::Int(Some(now)))
            .push(")");
        ts::execute_tx(db, &[sweep, ins]).await?;
        Ok((url.to_string(), state.secret().clone()))
    }

    /// Finishes a login: takes the stored request for `state` (each works once), redeems `code`
    /// with the PKCE verifier, validates the ID token and reads the identity from it.
    pub async fn finish(&self, db: &Db, state: &str, code: &str, now: i64) -> anyhow::Result<Identity> {
        #[derive(sqlx::FromRow)]
        struct Pending {
            pkce_verifier: String,
            nonce: String,
            created_at: i64,
        }
        let mut q = Sql::new("SELECT pkce_verifier, nonce, created_at FROM oidc_logins WHERE state = ");
        q.arg(Val::Text(state.to_string()));
        let pending: Option<Pending> = ts::fetch_opt(db, &q).await?;
        let mut del = Sql::new("DELETE FROM oidc_logins WHERE state = ");
        del.arg(Val::Text(state.to_string()));
        ts::execute_tx(db, &[del]).await?;
        let p = pending
            .filter(|p| p.created_at > now - LOGIN_TTL_SECS)
            .context("This sign-in link is unknown, used or expired; start again.")?;
        let m = self.metadata().await?;
        let client = CoreClient::from_provider_metadata(m, self.client_id.clone(), self.client_secret.clone())
            .set_redirect_uri(self.redirect.clone());
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .context("the provider has no token endpoint")?
            .set_pkce_verifier(PkceCodeVerifier::new(p.pkce_verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| anyhow::anyhow!("the provider refused the code: {e}"))?;
        let id_token = tokens.id_token().context("the provider sent no ID token")?;
        id_token
            .claims(&client.id_token_verifier(), &Nonce::new(p.nonce))
            .map_err(|e| anyhow::anyhow!("the ID token is not valid: {e}"))?;
        // Validated above; the configured claims are read from its payload, which may carry
        // any claim name the provider uses (groups, roles, …).
        let payload = id_token.to_string();
        let claims = payload
            .split('.')
            .nth(1)
            .and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .context("the ID token's payload is not JSON")?;
        identity(&claims, &self.settings)
    }
}

/// Reads subject, email and groups from validated claims; the email must be verified.
pub fn identity(claims: &Value, s: &OidcSettings) -> anyhow::Result<Identity> {
    let subject = claims["sub"].as_str().filter(|v| !v.is_empty()).context("the ID token has no subject")?;
    let issuer = claims["iss"].as_str().unwrap_or_default();
    let email = claims[&s.oidc_email_claim]
        .as_str()
        .map(|e| e.trim().to_lowercase())
        .filter(|e| e.split('@').count() == 2 && !e.starts_with('@') && !e.ends_with('@'))
        .filter(|e| super::printable(e))
        .with_context(|| format!("the ID token has no email address in claim '{}'", s.oidc_email_claim))?;
    match &claims["email_verified"] {
        Value::Bool(true) => {}
        // Some providers send the flag as a string.
        Value::String(v) if v.eq_ignore_ascii_case("true") => {}
        Value::Null if s.oidc_allow_missing_email_verified => {}
        Value::Null => anyhow::bail!(
            "the provider does not say that {email} is verified (no email_verified claim); ask an administrator"
        ),
        _ => anyhow::bail!("the provider has not verified {email}; verify it there and sign in again"),
    }
    let groups = match &claims[&s.oidc_groups_claim] {
        Value::Array(a) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        Value::String(g) => vec![g.clone()],
        _ => Vec::new(),
    };
    Ok(Identity { issuer: issuer.to_string(), subject: subject.to_string(), email, groups })
}

/// Parses `group=Org,group2=Org 2`.
pub fn parse_group_orgs(s: &str) -> anyhow::Result<Vec<(String, String)>> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (g, o) =
                p.split_once('=').with_context(|| format!("AQUEDUCT_OIDC_GROUP_ORGS entry {p:?} is not group=org"))?;
            anyhow::ensure!(
                !g.trim().is_empty() && !o.trim().is_empty(),
                "AQUEDUCT_OIDC_GROUP_ORGS entry {p:?} is not group=org"
            );
            Ok((g.trim().to_string(), o.trim().to_string()))
        })
        .collect()
}

/// The org a user with `groups` belongs to, by the mapping, else the default.
pub fn org_for(groups: &[String], s: &OidcSettings) -> Option<String> {
    let map = parse_group_orgs(&s.oidc_group_orgs).unwrap_or_default();
    groups
        .iter()
        .find_map(|g| map.iter().find(|(mg, _)| mg == g).map(|(_, o)| o.clone()))
        .or_else(|| s.oidc_default_org.clone().filter(|o| !o.trim().is_empty()))
}

#[derive(sqlx::FromRow)]
struct Existing {
    id: i64,
    role: String,
    active: bool,
    org_id: Option<i64>,
    oidc_subject: Option<String>,
    password_hash: Option<String>,
}

#[derive(sqlx::FromRow)]
struct TeamRef {
    id: i64,
    name: String,
    oidc_group: String,
}

/// Rank of a stored role: a higher one grants more.
fn rank(role: &str) -> u8 {
    match role {
        "admin" => 2,
        "org-admin" => 1,
        _ => 0,
    }
}

/// The role a sign-in leaves an existing user with. The admin group grants admin and leaving it
/// takes it away; a role set by hand (org-admin) is kept only while the user stays in the same
/// org: it is never carried into another org (`moved`) or kept without one.
pub fn role_after(admin_group: bool, current: &str, moved: bool, has_org: bool) -> &'static str {
    match current {
        _ if admin_group => "admin",
        "org-admin" if !moved && has_org => "org-admin",
        _ => "user",
    }
}

/// Whether a sign-in taking `old` to `new` raises the role.
pub fn raises(old: &str, new: &str) -> bool {
    rank(new) > rank(old)
}

const USER_COLS: &str =
    "SELECT id, role, active, org_id, oidc_subject, password_hash FROM users WHERE deleted_at IS NULL";

/// Creates or updates the user for a validated identity (org, role, teams); returns the user id.
/// Deactivated users stay out, and so does an identity whose email belongs to an account bound
/// to another subject.
///
/// Writes to the user run in one transaction: binding the subject, the role and org, revoking
/// the personal keys that existed before a promotion or before the first sign-in of an account
/// someone else created (see [`provision_existing`]), and leaving the old org's teams.
pub async fn provision(db: &Db, who: &Identity, s: &OidcSettings, now: i64) -> anyhow::Result<i64> {
    let admin = s.oidc_admin_group.as_deref().is_some_and(|g| who.groups.iter().any(|x| x == g));
    let org_name = org_for(&who.groups, s);
    let org_id = match &org_name {
        Some(o) => Some(crate::tenancy::store::ensure_org(db, o, now).await?),
        None if admin => None,
        None => anyhow::bail!("Your account is in no group that maps to an org here; ask an administrator."),
    };
    let mut by_subject = Sql::new(USER_COLS);
    by_subject
        .push(" AND oidc_issuer = ")
        .arg(Val::Text(who.issuer.clone()))
        .push(" AND oidc_subject = ")
        .arg(Val::Text(who.subject.clone()));
    let existing = match ts::fetch_opt::<Existing>(db, &by_subject).await? {
        Some(u) => Some(u),
        None => {
            let mut by_email = Sql::new(USER_COLS);
            by_email.push(" AND email = ").arg(Val::Text(who.email.clone()));
            match ts::fetch_opt::<Existing>(db, &by_email).await? {
                Some(u) if u.oidc_subject.is_some() => {
                    tracing::warn!(user = u.id, email = ?who.email, subject = ?who.subject,
                        "OIDC sign-in refused: the email's account is bound to another subject");
                    anyhow::bail!(
                        "The account of {} belongs to another single sign-on identity; ask an administrator.",
                        who.email
                    )
                }
                other => other,
            }
        }
    };
    let user_id = match existing {
        Some(u) if !u.active => anyhow::bail!("Your account is deactivated; ask an administrator."),
        Some(u) => provision_existing(db, who, u, admin, org_id, now).await?,
        None => {
            let mut ins =
                Sql::new("INSERT INTO users (email, org_id, role, created_at, oidc_issuer, oidc_subject) VALUES (");
            ins.arg(Val::Text(who.email.clone()))
                .push(", ")
                .arg(Val::Int(org_id))
                .push(", ")
                .arg(Val::Text(if admin { "admin" } else { "user" }.into()))
                .push(", ")
                .arg(Val::Int(Some(now)))
                .push(", ")
                .arg(Val::Text(who.issuer.clone()))
                .push(", ")
                .arg(Val::Text(who.subject.clone()))
                .push(") RETURNING id");
            ts::insert(db, &ins).await?
        }
    };
    if s.oidc_team_sync {
        if let Some(org) = org_id {
            sync_teams(db, user_id, org, &who.groups, s, now).await?;
        }
    }
    Ok(user_id)
}

/// Updates an existing user at sign-in, in one transaction:
///
/// - binds the account to the identity's subject (first OIDC sign-in);
/// - sets role and org ([`role_after`]);
/// - revokes every live personal key of the user when the role is raised (keys minted before a
///   promotion do not carry it), and on the first sign-in of an account without a local
///   password: its keys were all minted by someone else, since the person never signed in;
/// - when the org changes, leaves every team of other orgs (team-admin rights included). Service
///   accounts the user owns there stay, with their keys, until an admin transfers them.
///
/// The update is guarded by the role, org and binding read before: a concurrent change makes
/// the sign-in fail (try again) rather than act on stale facts.
async fn provision_existing(
    db: &Db,
    who: &Identity,
    u: Existing,
    admin: bool,
    org_id: Option<i64>,
    now: i64,
) -> anyhow::Result<i64> {
    let first = u.oidc_subject.is_none();
    let new_org = org_id.or(u.org_id);
    let moved = org_id.is_some() && u.org_id.is_some() && org_id != u.org_id;
    let role = role_after(admin, &u.role, moved, new_org.is_some());
    let role = if role != "admin" && org_id.is_none() { "user" } else { role };
    let promoted = raises(&u.role, role);
    let revoke = promoted || (first && u.password_hash.is_none());

    let mut up = Sql::new("UPDATE users SET role = ");
    up.arg(Val::Text(role.to_string()));
    if let Some(o) = org_id {
        up.push(", org_id = ").id(o);
    }
    up.push(", oidc_issuer = ")
        .arg(Val::Text(who.issuer.clone()))
        .push(", oidc_subject = ")
        .arg(Val::Text(who.subject.clone()))
        .push(" WHERE id = ")
        .id(u.id)
        .push(" AND deleted_at IS NULL AND role = ")
        .arg(Val::Text(u.role.clone()));
    match u.org_id {
        Some(o) => up.push(" AND org_id = ").id(o),
        None => up.push(" AND org_id IS NULL"),
    };
    if first {
        up.push(" AND oidc_subject IS NULL");
    } else {
        up.push(" AND oidc_issuer = ")
            .arg(Val::Text(who.issuer.clone()))
            .push(" AND oidc_subject = ")
            .arg(Val::Text(who.subject.clone()));
    }
    let mut rest = Vec::new();
    if revoke {
        let mut r = Sql::new("UPDATE tokens SET revoked_at = ");
        r.arg(Val::Int(Some(now)))
            .push(" WHERE user_id = ")
            .id(u.id)
            .push(" AND service_account_id IS NULL AND revoked_at IS NULL AND deleted_at IS NULL");
        rest.push(r);
    }
    if moved {
        if let Some(o) = org_id {
            let mut d = Sql::new("DELETE FROM team_members WHERE user_id = ");
            d.id(u.id).push(" AND team_id IN (SELECT id FROM teams WHERE org_id <> ").id(o).push(")");
            rest.push(d);
        }
    }
    let Some(affected) = ts::guarded_tx(db, &up, &rest).await? else {
        anyhow::bail!("Your account changed while signing in; try again.");
    };
    if revoke && affected.first().is_some_and(|n| *n > 0) {
        tracing::warn!(
            user = u.id,
            keys = affected[0],
            from = u.role,
            to = role,
            first_sign_in = first,
            "revoked the personal keys minted before this OIDC sign-in"
        );
    }
    if moved {
        let mut q = Sql::new("SELECT COUNT(*) FROM service_accounts sa JOIN teams t ON t.id = sa.team_id WHERE sa.deleted_at IS NULL AND sa.owner_user_id = ");
        q.id(u.id).push(" AND t.org_id <> ").id(new_org.unwrap_or_default());
        let owned = ts::scalar(db, &q).await?.unwrap_or(0);
        tracing::warn!(
            user = u.id,
            from_org = u.org_id,
            to_org = org_id,
            service_accounts_to_transfer = owned,
            "user moved org at OIDC sign-in: left the old org's teams"
        );
    }
    Ok(u.id)
}

/// Joins the teams of the user's team groups (creating or renaming them as the flags say) and
/// leaves the group-managed teams of the org whose group the user no longer has. Teams without
/// an `oidc_group` are managed by hand and never touched.
async fn sync_teams(db: &Db, user: i64, org: i64, groups: &[String], s: &OidcSettings, now: i64) -> anyhow::Result<()> {
    let mut q =
        Sql::new("SELECT id, name, oidc_group FROM teams WHERE deleted_at IS NULL AND oidc_group <> '' AND org_id = ");
    q.id(org);
    let teams: Vec<TeamRef> = ts::fetch_all(db, &q).await?;
    let mut keep = Vec::new();
    for g in groups {
        let Some(name) = g.strip_prefix(&s.oidc_team_prefix).map(str::trim).filter(|n| !n.is_empty()) else {
            continue;
        };
        let name: String = name.chars().take(crate::domain::input::MAX_NAME).collect();
        let team = match teams.iter().find(|t| &t.oidc_group == g) {
            Some(t) => {
                if t.name != name {
                    let mut r = Sql::new("UPDATE teams SET name = ");
                    r.arg(Val::Text(name.clone())).push(" WHERE id = ").id(t.id);
                    // A name taken by another team of the org keeps the old name.
                    if let Err(e) = ts::execute_tx(db, &[r]).await {
                        tracing::warn!(team = t.id, error = %e, "cannot rename team to follow its OIDC group");
                    }
                }
                Some(t.id)
            }
            None => {
                let mut by_name = Sql::new("SELECT id FROM teams WHERE deleted_at IS NULL AND org_id = ");
                by_name.id(org).push(" AND name = ").arg(Val::Text(name.clone()));
                match ts::scalar(db, &by_name).await? {
                    // A hand-made team of that name is adopted only by joining it, not taken over.
                    Some(id) => Some(id),
                    None if s.oidc_team_create => {
                        let mut ins =
                            Sql::new("INSERT INTO teams (org_id, name, description, oidc_group, created_at) VALUES (");
                        ins.id(org)
                            .push(", ")
                            .arg(Val::Text(name))
                            .push(", '', ")
                            .arg(Val::Text(g.clone()))
                            .push(", ")
                            .arg(Val::Int(Some(now)))
                            .push(") RETURNING id");
                        Some(ts::insert(db, &ins).await?)
                    }
                    None => None,
                }
            }
        };
        if let Some(t) = team {
            let mut m = Sql::new("INSERT INTO team_members (team_id, user_id, team_admin, added_at) VALUES (");
            m.id(t)
                .push(", ")
                .id(user)
                .push(", FALSE, ")
                .arg(Val::Int(Some(now)))
                .push(") ON CONFLICT (team_id, user_id) DO NOTHING");
            ts::execute_tx(db, &[m]).await?;
            keep.push(t);
        }
    }
    for t in teams.iter().filter(|t| !groups.contains(&t.oidc_group)) {
        // Owning one of the team's service accounts keeps the membership (the account needs a
        // member as owner); an admin transfers it.
        let mut owns = Sql::new("SELECT COUNT(*) FROM service_accounts WHERE deleted_at IS NULL AND team_id = ");
        owns.id(t.id).push(" AND owner_user_id = ").id(user);
        if ts::scalar(db, &owns).await?.unwrap_or(0) > 0 {
            continue;
        }
        let mut d = Sql::new("DELETE FROM team_members WHERE team_id = ");
        d.id(t.id).push(" AND user_id = ").id(user);
        ts::execute_tx(db, &[d]).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        s: OidcSettings,
    }

    fn settings(args: &[&str]) -> OidcSettings {
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map(|t| t.s)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn claims_map_to_identity_and_org() {
        let s = settings(&["--oidc-group-orgs", "eng=Engineering, ops=Operations", "--oidc-groups-claim", "roles"]);
        let who = identity(
            &serde_json::json!({"sub": "u1", "iss": "https://idp", "email": " Ann@Example.com",
                                "email_verified": true, "roles": ["x", "ops", "eng"]}),
            &s,
        );
        let who = who.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(who.email, "ann@example.com");
        assert_eq!((who.issuer.as_str(), who.subject.as_str()), ("https://idp", "u1"));
        assert_eq!(org_for(&who.groups, &s).as_deref(), Some("Operations"));
        assert_eq!(org_for(&["none".into()], &s), None);
        let d = settings(&["--oidc-default-org", "Everyone"]);
        assert_eq!(org_for(&[], &d).as_deref(), Some("Everyone"));
        assert!(
            identity(&serde_json::json!({"sub": "u", "email": "not-an-address", "email_verified": true}), &s).is_err()
        );
        assert!(identity(&serde_json::json!({"sub": "u", "email": "a@b\nc", "email_verified": true}), &s).is_err());
        assert!(identity(&serde_json::json!({"email": "a@b.c", "email_verified": true}), &s).is_err(), "no sub");
        assert!(identity(&serde_json::json!({}), &s).is_err());
    }

    #[test]
    fn unverified_emails_are_refused() {
        let strict = settings(&[]);
        let claims = |v: Value| {
            let mut c = serde_json::json!({"sub": "u", "iss": "i", "email": "admin@localhost"});
            if !v.is_null() {
                c["email_verified"] = v;
            }
            c
        };
        assert!(identity(&claims(Value::Bool(true)), &strict).is_ok());
        assert!(identity(&claims("true".into()), &strict).is_ok());
        for refused in [Value::Bool(false), "false".into(), Value::Null] {
            let e = identity(&claims(refused.clone()), &strict).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("verified"), "{refused}: {e}");
        }
        // The relaxed setting accepts a missing claim, never an explicit false.
        let relaxed = settings(&["--oidc-allow-missing-email-verified", "true"]);
        assert!(identity(&claims(Value::Null), &relaxed).is_ok());
        assert!(identity(&claims(Value::Bool(false)), &relaxed).is_err());
    }

    #[test]
    fn roles_after_sign_in() {
        assert_eq!(role_after(true, "user", false, true), "admin");
        assert_eq!(role_after(true, "org-admin", true, true), "admin");
        assert_eq!(role_after(false, "admin", false, true), "user");
        assert_eq!(role_after(false, "org-admin", false, true), "org-admin");
        // Never carried into another org, nor kept without one.
        assert_eq!(role_after(false, "org-admin", true, true), "user");
        assert_eq!(role_after(false, "org-admin", false, false), "user");
        assert_eq!(role_after(false, "user", true, true), "user");
        assert!(raises("user", "org-admin") && raises("user", "admin") && raises("org-admin", "admin"));
        assert!(!raises("admin", "user") && !raises("org-admin", "org-admin") && !raises("admin", "admin"));
    }

    #[test]
    fn bad_group_mapping_is_refused() {
        assert!(parse_group_orgs("eng").is_err());
        assert!(parse_group_orgs("=Org").is_err());
        assert_eq!(parse_group_orgs(" a=B ,").unwrap_or_default(), vec![("a".to_string(), "B".to_string())]);
    }

    async fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db = Db::open(None, dir.path()).await.unwrap_or_else(|e| panic!("{e}"));
        (dir, db)
    }

    fn who(email: &str, groups: &[&str]) -> Identity {
        Identity {
            issuer: "https://idp".into(),
            subject: format!("sub-{email}"),
            email: email.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[derive(sqlx::FromRow, Debug, PartialEq)]
    struct U {
        role: String,
        org: Option<String>,
    }

    async fn user(db: &Db, id: i64) -> U {
        let mut q =
            Sql::new("SELECT u.role, o.name AS org FROM users u LEFT JOIN orgs o ON o.id = u.org_id WHERE u.id = ");
        q.id(id);
        ts::fetch_opt(db, &q).await.ok().flatten().unwrap_or_else(|| panic!("user {id}"))
    }

    async fn teams_of(db: &Db, id: i64) -> Vec<String> {
        #[derive(sqlx::FromRow)]
        struct T {
            name: String,
        }
        let mut q = Sql::new("SELECT t.name FROM team_members m JOIN teams t ON t.id = m.team_id WHERE m.user_id = ");
        q.id(id).push(" ORDER BY t.name");
        let rows: Vec<T> = ts::fetch_all(db, &q).await.unwrap_or_default();
        rows.into_iter().map(|t| t.name).collect()
    }

    #[tokio::test]
    async fn provisioning_maps_org_admin_group_and_syncs_teams() {
        let (_dir, db) = db().await;
        let s = settings(&["--oidc-group-orgs", "acme=Acme", "--oidc-admin-group", "admins", "--oidc-team-sync"]);
        // Join: teams are created from team groups, in the user's org.
        let ann = provision(&db, &who("ann@acme.test", &["acme", "team:Research", "team:Ops", "other"]), &s, 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(user(&db, ann).await, U { role: "user".into(), org: Some("Acme".into()) });
        assert_eq!(teams_of(&db, ann).await, vec!["Ops", "Research"]);
        // A hand-made team without a group is never touched; a renamed group team is renamed back.
        let mut hand =
            Sql::new("INSERT INTO teams (org_id, name, created_at) SELECT org_id, 'Hand', 1 FROM users WHERE id = ");
        hand.id(ann).push(" RETURNING id");
        let hand = ts::insert(&db, &hand).await.unwrap_or_else(|e| panic!("{e}"));
        let mut m = Sql::new("INSERT INTO team_members (team_id, user_id, team_admin, added_at) VALUES (");
        m.id(hand).push(", ").id(ann).push(", FALSE, 1)");
        let rename = Sql::new("UPDATE teams SET name = 'Renamed by hand' WHERE name = 'Research'");
        ts::execute_tx(&db, &[m, rename]).await.unwrap_or_else(|e| panic!("{e}"));
        // Leave: Ops is gone from the groups; Research keeps its group's name.
        provision(&db, &who("ann@acme.test", &["acme", "team:Research"]), &s, 2)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(teams_of(&db, ann).await, vec!["Hand", "Research"]);
        // The admin group grants admin; leaving it demotes; a hand-set org-admin stays.
        provision(&db, &who("ann@acme.test", &["acme", "admins"]), &s, 3).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(user(&db, ann).await.role, "admin");
        provision(&db, &who("ann@acme.test", &["acme"]), &s, 4).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(user(&db, ann).await.role, "user");
        ts::execute_tx(&db, &[Sql::new("UPDATE users SET role = 'org-admin'")]).await.unwrap_or_else(|e| panic!("{e}"));
        provision(&db, &who("ann@acme.test", &["acme"]), &s, 5).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(user(&db, ann).await.role, "org-admin");
        // No mapped group and no default org: refused; deactivated: refused.
        assert!(provision(&db, &who("bob@acme.test", &["other"]), &s, 6).await.is_err());
        ts::execute_tx(&db, &[Sql::new("UPDATE users SET active = FALSE")]).await.unwrap_or_else(|e| panic!("{e}"));
        let e = provision(&db, &who("ann@acme.test", &["acme"]), &s, 7).await.err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("deactivated")));
    }
}
