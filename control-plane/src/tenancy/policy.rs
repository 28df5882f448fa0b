//! From the store to the filter's principals: who each live key acts for, and the models it may
//! not use after exclusions are merged down its chain.
//!
//! A personal key's chain is token → user → org → global; a service-account key's is
//! token → service account → team → org → global. Each level adds its exclusions; a level whose
//! merge flag is false stops inheritance from the levels above it.

use super::model::PolicyFields;
use crate::db::Db;
use crate::with_pool;
use std::collections::{BTreeSet, HashMap};

/// A live key with the entities its chain runs through.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    /// Token id.
    pub id: i64,
    /// SHA-256 hex.
    pub key_hash: String,
    /// Unix seconds, if the key expires.
    pub expires_at: Option<i64>,
    /// Owner (for a service-account key, the accountable user).
    pub user_id: i64,
    /// Set for a service-account key.
    pub service_account_id: Option<i64>,
    /// The token's own policy fields.
    #[sqlx(flatten)]
    pub fields: PolicyFields,
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct Entity {
    id: i64,
    parent: Option<i64>,
    #[sqlx(flatten)]
    fields: PolicyFields,
}

/// Every entity a key's chain can pass through, by id.
#[derive(Debug, Clone, Default)]
pub struct Hierarchy {
    /// Live users: (org id, fields).
    pub users: HashMap<i64, (Option<i64>, PolicyFields)>,
    /// Live service accounts: (team id, fields).
    pub service_accounts: HashMap<i64, (Option<i64>, PolicyFields)>,
    /// Teams: (org id, fields).
    pub teams: HashMap<i64, (Option<i64>, PolicyFields)>,
    /// Orgs: fields.
    pub orgs: HashMap<i64, PolicyFields>,
}

/// The levels of one key's chain, nearest first, and the ids along it.
#[derive(Debug, Clone, Default)]
pub struct Chain<'a> {
    /// Policy fields from the token up to the org.
    pub levels: Vec<&'a PolicyFields>,
    /// The user (owner).
    pub user_id: i64,
    /// The service account, for a service-account key.
    pub service_account_id: Option<i64>,
    /// The team, for a service-account key.
    pub team_id: Option<i64>,
    /// The org, when the key's user or team has one.
    pub org_id: Option<i64>,
    /// The entities above the token, nearest first: (kind, id, fields), kind one of `user`,
    /// `service account`, `team`, `org`.
    pub entities: Vec<(&'static str, i64, &'a PolicyFields)>,
}

impl Hierarchy {
    /// The chain of a key, or `None` when the key's owner (user, or service account) is gone.
    pub fn chain<'a>(&'a self, key: &'a KeyRow) -> Option<Chain<'a>> {
        let mut chain = Chain { levels: vec![&key.fields], user_id: key.user_id, ..Default::default() };
        let org = match key.service_account_id {
            Some(sa) => {
                let (team, fields) = self.service_accounts.get(&sa)?;
                chain.service_account_id = Some(sa);
                chain.levels.push(fields);
                chain.entities.push(("service account", sa, fields));
                let team = (*team)?;
                let (org, team_fields) = self.teams.get(&team)?;
                chain.team_id = Some(team);
                chain.levels.push(team_fields);
                chain.entities.push(("team", team, team_fields));
                *org
            }
            None => {
                let (org, fields) = self.users.get(&key.user_id)?;
                chain.levels.push(fields);
                chain.entities.push(("user", key.user_id, fields));
                *org
            }
        };
        if let (Some(o), Some(fields)) = (org, org.and_then(|o| self.orgs.get(&o))) {
            chain.org_id = org;
            chain.levels.push(fields);
            chain.entities.push(("org", o, fields));
        }
        Some(chain)
    }
}

/// Merges exclusions down a chain (nearest level first) and the global list.
pub fn merged<'a>(
    levels: &[&'a PolicyFields],
    global: &'a [String],
    pick: impl Fn(&'a PolicyFields) -> (&'a [String], bool),
) -> BTreeSet<&'a str> {
    let mut out = BTreeSet::new();
    for level in levels {
        let (names, merge) = pick(level);
        out.extend(names.iter().map(String::as_str));
        if !merge {
            return out;
        }
    }
    out.extend(global.iter().map(String::as_str));
    out
}

/// Effective model exclusions of a chain.
pub fn excluded_models<'a>(levels: &[&'a PolicyFields], global: &'a [String]) -> BTreeSet<&'a str> {
    merged(levels, global, |f| (&f.excluded_models.0, f.merge_excluded_models))
}

/// Effective MCP server exclusions of a chain.
pub fn excluded_mcp_servers<'a>(levels: &[&'a PolicyFields], global: &'a [String]) -> BTreeSet<&'a str> {
    merged(levels, global, |f| (&f.excluded_mcp_servers.0, f.merge_excluded_mcp_servers))
}

fn limit(v: Option<i64>) -> Option<u64> {
    v.map(|n| u64::try_from(n).unwrap_or(0))
}

fn aggregate(f: &PolicyFields) -> [Option<u64>; 3] {
    [limit(f.requests_per_minute), limit(f.input_tokens_per_minute), limit(f.output_tokens_per_minute)]
}

/// Per-key caps of a chain: each dimension's nearest `key_*` setting (token first, then up the
/// chain, then `defaults`), tightened by the token's own aggregate caps.
pub fn key_limits(chain: &Chain<'_>, defaults: [Option<u64>; 3]) -> [Option<u64>; 3] {
    let per_key = |f: &PolicyFields| {
        [limit(f.key_requests_per_minute), limit(f.key_input_tokens_per_minute), limit(f.key_output_tokens_per_minute)]
    };
    let mut out = defaults;
    for (d, slot) in out.iter_mut().enumerate() {
        if let Some(v) = chain.levels.iter().find_map(|f| per_key(f)[d]) {
            *slot = Some(v);
        }
    }
    if let Some(token) = chain.levels.first() {
        for (d, own) in aggregate(token).into_iter().enumerate() {
            out[d] = match (out[d], own) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }
    out
}

/// Aggregate caps of the entities above the token: (window, label, limits), only where set.
pub fn entity_caps(chain: &Chain<'_>) -> Vec<(String, String, [Option<u64>; 3])> {
    chain
        .entities
        .iter()
        .filter_map(|(kind, id, f)| {
            let limits = aggregate(f);
            if limits.iter().all(Option::is_none) {
                return None;
            }
            let short = match *kind {
                "user" => "u",
                "service account" => "s",
                "team" => "t",
                _ => "o",
            };
            Some((format!("{short}.{id}"), format!("{kind} {id}"), limits))
        })
        .collect()
}

fn cols(alias: &str) -> String {
    super::model::POLICY_COLUMNS.iter().map(|c| format!("{alias}.{c}")).collect::<Vec<_>>().join(", ")
}

/// Live keys: not revoked or deleted, and not expired for more than `expired_grace` seconds.
/// Owner checks happen in [`Hierarchy::chain`]. Keys come ordered by owner, so alike keys are
/// adjacent.
///
/// Keys without policy fields of their own (nearly all) are read as one string the database
/// folds together; only the others are read row by row. Decoding 100,000 rows of 15 columns
/// took 640 ms on SQLite, grouping them in SQL 165 ms, the folded string about 45 ms.
pub async fn live_keys(db: &Db, now: i64, expired_grace: i64) -> Result<Vec<KeyRow>, sqlx::Error> {
    const LIVE: &str = "t.revoked_at IS NULL AND t.deleted_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > $1)";
    // Exactly the fields `PolicyFields::default()` has; anything else is read in full.
    const PLAIN: &str = "t.excluded_models = '[]' AND t.merge_excluded_models \
         AND t.excluded_mcp_servers = '[]' AND t.merge_excluded_mcp_servers \
         AND t.requests_per_minute IS NULL AND t.input_tokens_per_minute IS NULL \
         AND t.output_tokens_per_minute IS NULL AND t.key_requests_per_minute IS NULL \
         AND t.key_input_tokens_per_minute IS NULL AND t.key_output_tokens_per_minute IS NULL";
    let folded_sql = format!(
        "SELECT string_agg(t.id || ' ' || t.key_hash || ' ' || COALESCE(t.expires_at, 0) || ' ' || t.user_id \
         || ' ' || COALESCE(t.service_account_id, 0), ',') FROM tokens t WHERE {LIVE} AND {PLAIN}"
    );
    let rows_sql = format!(
        "SELECT t.id, t.key_hash, t.expires_at, t.user_id, t.service_account_id, {} FROM tokens t \
         WHERE {LIVE} AND NOT ({PLAIN})",
        cols("t")
    );
    let cutoff = now - expired_grace;
    let (folded, mut keys) = with_pool!(db, p => {
        let folded: Option<String> = sqlx::query_scalar(&folded_sql).bind(cutoff).fetch_one(p).await?;
        let rows = sqlx::query_as::<_, KeyRow>(&rows_sql).bind(cutoff).fetch_all(p).await?;
        (folded, rows)
    });
    let folded = folded.unwrap_or_default();
    keys.reserve(folded.bytes().filter(|b| *b == b',').count() + 1);
    for member in folded.split(',').filter(|m| !m.is_empty()) {
        keys.push(plain_key(member)?);
    }
    keys.sort_by_key(key_order);
    Ok(keys)
}

/// The tokens table's change counters (migration 0011): the last change stamp, which moves
/// with every change a snapshot could see (never with the ledger's `last_used_at`), and how
/// many deletes there were.
pub async fn tokens_changes(db: &Db) -> Result<(i64, i64), sqlx::Error> {
    with_pool!(db, p => sqlx::query_as("SELECT seq, deletes FROM tokens_changes WHERE id = 1").fetch_one(p).await)
}

/// A key changed since a stamp, live or not.
#[derive(Debug, sqlx::FromRow)]
struct ChangedKey {
    #[sqlx(flatten)]
    key: KeyRow,
    live: bool,
}

/// Keys stamped after `since`, with whether each is live (as [`live_keys`] would read it).
async fn keys_changed_since(db: &Db, since: i64, now: i64, expired_grace: i64) -> Result<Vec<ChangedKey>, sqlx::Error> {
    let sql = format!(
        "SELECT t.id, t.key_hash, t.expires_at, t.user_id, t.service_account_id, {}, \
         (t.revoked_at IS NULL AND t.deleted_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > $2)) AS live \
         FROM tokens t WHERE t.change_seq > $1",
        cols("t")
    );
    Ok(
        with_pool!(db, p => sqlx::query_as::<_, ChangedKey>(&sql).bind(since).bind(now - expired_grace).fetch_all(p).await?),
    )
}

/// The order [`live_keys`] returns keys in: by owner, so alike keys are adjacent.
fn key_order(k: &KeyRow) -> (i64, Option<i64>, i64) {
    (k.user_id, k.service_account_id, k.id)
}

/// Changes [`KeyCache`] merges row by row; past this many it reads every key (100,000 changed
/// keys took 760 ms row by row, every key 230 ms folded).
const MAX_MERGED_CHANGES: i64 = 1_000;

/// [`live_keys`], rereading only the keys changed since the last call.
///
/// A full snapshot follows any change to a principal (a user's limit, a team's exclusions);
/// at 100,000 keys, reading every key again was most of its time though one or two had
/// changed. Every insert and update of a key stamps it with the next value of a counter
/// (triggers, so changes made straight in the database count too): the cache reads the counter
/// first, then the rows stamped after its last read, and replaces or drops them. A delete
/// (there is no row left to read), a key leaving the expiry grace period or a bulk change makes
/// it read every key again, as does the first call.
#[derive(Debug, Default)]
pub struct KeyCache {
    last: tokio::sync::Mutex<Option<CachedKeys>>,
}

#[derive(Debug)]
struct CachedKeys {
    /// The change counters when read.
    seq: i64,
    deletes: i64,
    /// In [`key_order`].
    keys: std::sync::Arc<Vec<KeyRow>>,
    /// The earliest expiry among them: once that is past the grace period, every key is read
    /// again, so it leaves the table as it would have.
    earliest_expiry: Option<i64>,
}

/// How [`KeyCache::live_keys`] got its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeysRead {
    /// Nothing changed: the last read as it was.
    Reused,
    /// This many changed keys were read and merged into the last read.
    Merged(usize),
    /// Every key was read.
    Full,
}

impl KeyCache {
    /// Live keys as [`live_keys`] returns them, and how they were read.
    pub async fn live_keys(
        &self,
        db: &Db,
        now: i64,
        expired_grace: i64,
    ) -> Result<(std::sync::Arc<Vec<KeyRow>>, KeysRead), sqlx::Error> {
        let (seq, deletes) = tokens_changes(db).await?;
        let mut last = self.last.lock().await;
        if let Some(c) = last.as_mut() {
            // Each change moves the counter by one, so `seq - c.seq` bounds the rows to merge;
            // past a bulk change, reading everything folded is quicker than row by row.
            let mergeable = seq - c.seq <= MAX_MERGED_CHANGES;
            if c.deletes == deletes && mergeable && c.earliest_expiry.is_none_or(|e| e > now - expired_grace) {
                if c.seq == seq {
                    return Ok((c.keys.clone(), KeysRead::Reused));
                }
                let changed = keys_changed_since(db, c.seq, now, expired_grace).await?;
                let ids: std::collections::HashSet<i64> = changed.iter().map(|c| c.key.id).collect();
                let keys = std::sync::Arc::make_mut(&mut c.keys);
                keys.retain(|k| !ids.contains(&k.id));
                keys.extend(changed.into_iter().filter(|c| c.live).map(|c| c.key));
                // Nearly sorted already: the merge sort takes a pass or two.
                keys.sort_by_key(key_order);
                c.seq = seq;
                c.earliest_expiry = keys.iter().filter_map(|k| k.expires_at).min();
                return Ok((c.keys.clone(), KeysRead::Merged(ids.len())));
            }
        }
        let keys = std::sync::Arc::new(live_keys(db, now, expired_grace).await?);
        let earliest_expiry = keys.iter().filter_map(|k| k.expires_at).min();
        *last = Some(CachedKeys { seq, deletes, keys: keys.clone(), earliest_expiry });
        Ok((keys, KeysRead::Full))
    }
}

/// One `id hash expires_at user_id service_account_id` of [`live_keys`]' folded string (0 for
/// no expiry and no service account; ids start at 1).
fn plain_key(member: &str) -> Result<KeyRow, sqlx::Error> {
    let bad = |why: String| sqlx::Error::Decode(format!("live key {member:?}: {why}").into());
    let mut parts = member.split(' ');
    let mut next = || parts.next().ok_or_else(|| bad("too few parts".into()));
    let (id, hash, expires, user, sa) = (next()?, next()?, next()?, next()?, next()?);
    let int = |v: &str| v.parse::<i64>().map_err(|e| bad(e.to_string()));
    let (expires, sa) = (int(expires)?, int(sa)?);
    Ok(KeyRow {
        id: int(id)?,
        key_hash: hash.to_string(),
        expires_at: (expires != 0).then_some(expires),
        user_id: int(user)?,
        service_account_id: (sa != 0).then_some(sa),
        fields: PolicyFields::default(),
    })
}

/// One key, if it is live (as [`live_keys`] would read it), for journaling a change to it.
pub async fn live_key(db: &Db, id: i64, now: i64, expired_grace: i64) -> Result<Option<KeyRow>, sqlx::Error> {
    let sql = format!(
        "SELECT t.id, t.key_hash, t.expires_at, t.user_id, t.service_account_id, {} FROM tokens t \
         WHERE t.id = $1 AND t.revoked_at IS NULL AND t.deleted_at IS NULL \
         AND (t.expires_at IS NULL OR t.expires_at > $2)",
        cols("t")
    );
    let key = with_pool!(db, p => sqlx::query_as::<_, KeyRow>(&sql).bind(id).bind(now - expired_grace).fetch_optional(p).await?);
    Ok(key)
}

/// The entities one key's chain passes through (what [`hierarchy`] would hold for it), read by
/// id: a handful of rows instead of every user.
pub async fn hierarchy_of(db: &Db, key: &KeyRow) -> Result<Hierarchy, sqlx::Error> {
    async fn one(db: &Db, table: &str, parent: &str, live: &str, id: i64) -> Result<Option<Entity>, sqlx::Error> {
        let sql = format!("SELECT x.id, {parent} AS parent, {} FROM {table} x WHERE x.id = $1 AND {live}", cols("x"));
        Ok(with_pool!(db, p => sqlx::query_as::<_, Entity>(&sql).bind(id).fetch_optional(p).await?))
    }
    let mut h = Hierarchy::default();
    let org = match key.service_account_id {
        Some(sa) => {
            let Some(a) = one(db, "service_accounts", "x.team_id", "x.deleted_at IS NULL", sa).await? else {
                return Ok(h);
            };
            let team = a.parent;
            h.service_accounts.insert(sa, (a.parent, a.fields));
            let Some(t) = team else { return Ok(h) };
            let Some(t) = one(db, "teams", "x.org_id", "x.deleted_at IS NULL", t).await? else { return Ok(h) };
            h.teams.insert(t.id, (t.parent, t.fields));
            t.parent
        }
        None => {
            let live = "x.active AND x.deleted_at IS NULL";
            let Some(u) = one(db, "users", "x.org_id", live, key.user_id).await? else { return Ok(h) };
            h.users.insert(u.id, (u.parent, u.fields));
            u.parent
        }
    };
    if let Some(o) = org {
        if let Some(o) = one(db, "orgs", "NULL", "x.deleted_at IS NULL", o).await? {
            h.orgs.insert(o.id, o.fields);
        }
    }
    Ok(h)
}

/// Loads every user, service account, team and org a chain can pass through.
pub async fn hierarchy(db: &Db) -> Result<Hierarchy, sqlx::Error> {
    let q = |table: &str, parent: &str, live: &str| {
        format!("SELECT x.id, {parent} AS parent, {} FROM {table} x {live}", cols("x"))
    };
    let users_sql = q("users", "x.org_id", "WHERE x.active AND x.deleted_at IS NULL");
    let sas_sql = q("service_accounts", "x.team_id", "WHERE x.deleted_at IS NULL");
    let teams_sql = q("teams", "x.org_id", "WHERE x.deleted_at IS NULL");
    let orgs_sql = q("orgs", "NULL", "WHERE x.deleted_at IS NULL");
    let (users, sas, teams, orgs) = with_pool!(db, p => {
        let users = sqlx::query_as::<_, Entity>(&users_sql).fetch_all(p).await?;
        let sas = sqlx::query_as::<_, Entity>(&sas_sql).fetch_all(p).await?;
        let teams = sqlx::query_as::<_, Entity>(&teams_sql).fetch_all(p).await?;
        let orgs = sqlx::query_as::<_, Entity>(&orgs_sql).fetch_all(p).await?;
        (users, sas, teams, orgs)
    });
    let by_id = |v: Vec<Entity>| v.into_iter().map(|e| (e.id, (e.parent, e.fields))).collect();
    Ok(Hierarchy {
        users: by_id(users),
        service_accounts: by_id(sas),
        teams: by_id(teams),
        orgs: orgs.into_iter().map(|e| (e.id, e.fields)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenancy::model::NameList;

    fn fields(excluded: &[&str], merge: bool) -> PolicyFields {
        PolicyFields {
            excluded_models: NameList(excluded.iter().map(|s| s.to_string()).collect()),
            merge_excluded_models: merge,
            ..Default::default()
        }
    }

    fn names<'a>(s: &BTreeSet<&'a str>) -> Vec<&'a str> {
        s.iter().copied().collect()
    }

    #[test]
    fn exclusions_merge_upward_until_a_level_stops_it() {
        let global = vec!["g".to_string()];
        let (token, user, org) = (fields(&["t"], true), fields(&["u"], true), fields(&["o"], true));
        assert_eq!(names(&excluded_models(&[&token, &user, &org], &global)), ["g", "o", "t", "u"]);
        let user_stops = fields(&["u"], false);
        assert_eq!(names(&excluded_models(&[&token, &user_stops, &org], &global)), ["t", "u"]);
        let token_stops = fields(&["t"], false);
        assert_eq!(names(&excluded_models(&[&token_stops, &user, &org], &global)), ["t"]);
        let org_stops = fields(&["o"], false);
        assert_eq!(names(&excluded_models(&[&token, &user, &org_stops], &global)), ["o", "t", "u"]);
    }

    fn key(user: i64, sa: Option<i64>) -> KeyRow {
        KeyRow {
            id: 1,
            key_hash: String::new(),
            expires_at: None,
            user_id: user,
            service_account_id: sa,
            fields: fields(&["t"], true),
        }
    }

    #[test]
    fn per_key_limits_inherit_and_token_caps_tighten() {
        let mut h = Hierarchy::default();
        let user =
            PolicyFields { key_requests_per_minute: Some(10), requests_per_minute: Some(100), ..fields(&[], true) };
        let org = PolicyFields {
            key_requests_per_minute: Some(50),
            key_output_tokens_per_minute: Some(7),
            ..fields(&[], true)
        };
        h.users.insert(1, (Some(10), user));
        h.orgs.insert(10, org);
        let mut k = key(1, None);
        let c = h.chain(&k).unwrap();
        assert_eq!(key_limits(&c, [None, Some(1000), None]), [Some(10), Some(1000), Some(7)]);
        assert_eq!(entity_caps(&c), vec![("u.1".to_string(), "user 1".to_string(), [Some(100), None, None])]);
        k.fields.requests_per_minute = Some(3);
        k.fields.key_output_tokens_per_minute = Some(9);
        let c = h.chain(&k).unwrap();
        assert_eq!(key_limits(&c, [None; 3]), [Some(3), None, Some(9)]);
    }

    #[test]
    fn every_dimension_caps_at_every_level() {
        let set = |d: usize, v: i64| {
            let mut f = fields(&[], true);
            *[&mut f.requests_per_minute, &mut f.input_tokens_per_minute, &mut f.output_tokens_per_minute][d] = Some(v);
            f
        };
        for d in 0..3 {
            let mut h = Hierarchy::default();
            h.users.insert(1, (Some(10), set(d, 1)));
            h.service_accounts.insert(5, (Some(7), set(d, 2)));
            h.teams.insert(7, (Some(10), set(d, 3)));
            h.orgs.insert(10, set(d, 4));
            let want = |v: u64| {
                let mut l = [None; 3];
                l[d] = Some(v);
                l
            };
            let mut personal = key(1, None);
            personal.fields = set(d, 5);
            let c = h.chain(&personal).unwrap();
            assert_eq!(key_limits(&c, [None; 3]), want(5), "the token's own cap, dimension {d}");
            let caps: Vec<_> = entity_caps(&c).into_iter().map(|(w, _, l)| (w, l)).collect();
            assert_eq!(caps, vec![("u.1".to_string(), want(1)), ("o.10".to_string(), want(4))]);
            let mut sa_key = key(1, Some(5));
            sa_key.fields = set(d, 6);
            let c = h.chain(&sa_key).unwrap();
            assert_eq!(key_limits(&c, [None; 3]), want(6));
            let caps: Vec<_> = entity_caps(&c).into_iter().map(|(w, _, l)| (w, l)).collect();
            assert_eq!(
                caps,
                vec![("s.5".to_string(), want(2)), ("t.7".to_string(), want(3)), ("o.10".to_string(), want(4))]
            );
        }
    }

    #[test]
    fn chains_follow_the_owner_kind() {
        let mut h = Hierarchy::default();
        h.users.insert(1, (Some(10), fields(&["u"], true)));
        h.users.insert(2, (None, fields(&[], true)));
        h.service_accounts.insert(5, (Some(7), fields(&["s"], true)));
        h.teams.insert(7, (Some(10), fields(&["team"], true)));
        h.orgs.insert(10, fields(&["o"], true));
        let global = vec!["g".to_string()];

        let k = key(1, None);
        let c = h.chain(&k).unwrap();
        assert_eq!((c.org_id, c.team_id), (Some(10), None));
        assert_eq!(names(&excluded_models(&c.levels, &global)), ["g", "o", "t", "u"]);

        // A service-account key passes through the account and its team, never the owner.
        let k = key(1, Some(5));
        let c = h.chain(&k).unwrap();
        assert_eq!((c.service_account_id, c.team_id, c.org_id), (Some(5), Some(7), Some(10)));
        assert_eq!(names(&excluded_models(&c.levels, &global)), ["g", "o", "s", "t", "team"]);

        // A user without an org goes straight to the global list.
        let k = key(2, None);
        assert_eq!(names(&excluded_models(&h.chain(&k).unwrap().levels, &global)), ["g", "t"]);

        // Gone owners: no chain, so the key is left out of the policy.
        assert!(h.chain(&key(3, None)).is_none());
        assert!(h.chain(&key(1, Some(6))).is_none());
    }
}
