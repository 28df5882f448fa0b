//! Tenancy rows (orgs, teams, memberships, users, service accounts), a small SQL builder that
//! numbers `$N` placeholders (both SQLite and PostgreSQL take them; no text is rewritten per
//! backend), and [`Tx`], a transaction on either backend.
//!
//! Every operation that touches more than one row runs in one transaction: nothing is left
//! half-written.

use super::model::{PolicyFields, POLICY_COLUMNS};
use crate::db::Db;
use crate::with_pool;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

/// A bound value.
#[derive(Debug, Clone)]
pub enum Val {
    /// TEXT.
    Text(String),
    /// BOOLEAN.
    Bool(bool),
    /// BIGINT, possibly NULL.
    Int(Option<i64>),
}

/// SQL text with its arguments; [`Sql::arg`] appends the next `$N`.
#[derive(Debug, Clone, Default)]
pub struct Sql {
    /// The text so far.
    pub text: String,
    /// Arguments, in placeholder order.
    pub args: Vec<Val>,
}

impl Sql {
    /// Starts with `text`.
    pub fn new(text: impl Into<String>) -> Self {
        Self { text: text.into(), args: Vec::new() }
    }

    /// Appends raw SQL.
    pub fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    /// Appends a placeholder bound to `v`.
    pub fn arg(&mut self, v: Val) -> &mut Self {
        self.args.push(v);
        let n = self.args.len();
        self.text.push_str(&format!("${n}"));
        self
    }

    /// Appends a placeholder bound to an id.
    pub fn id(&mut self, id: i64) -> &mut Self {
        self.arg(Val::Int(Some(id)))
    }
}

macro_rules! bind_all {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                Val::Text(s) => q.bind(s.clone()),
                Val::Bool(b) => q.bind(*b),
                Val::Int(i) => q.bind(*i),
            };
        }
        q
    }};
}

/// A row type both backends can decode.
pub trait Row: for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin {}
impl<T> Row for T where T: for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin {}

/// All rows of a query.
pub async fn fetch_all<T: Row>(db: &Db, sql: &Sql) -> Result<Vec<T>, sqlx::Error> {
    with_pool!(db, p => bind_all!(sqlx::query_as::<_, T>(&sql.text), &sql.args).fetch_all(p).await)
}

/// At most one row.
pub async fn fetch_opt<T: Row>(db: &Db, sql: &Sql) -> Result<Option<T>, sqlx::Error> {
    with_pool!(db, p => bind_all!(sqlx::query_as::<_, T>(&sql.text), &sql.args).fetch_optional(p).await)
}

/// One integer (COUNT, EXISTS as 0/1, an id).
pub async fn scalar(db: &Db, sql: &Sql) -> Result<Option<i64>, sqlx::Error> {
    with_pool!(db, p => bind_all!(sqlx::query_scalar::<_, i64>(&sql.text), &sql.args).fetch_optional(p).await)
}

/// Runs statements in order in one transaction; returns each one's affected rows.
pub async fn execute_tx(db: &Db, stmts: &[Sql]) -> Result<Vec<u64>, sqlx::Error> {
    with_pool!(db, p => {
        let mut tx = p.begin().await?;
        let mut out = Vec::with_capacity(stmts.len());
        for s in stmts {
            let r = bind_all!(sqlx::query(&s.text), &s.args).execute(&mut *tx).await?;
            out.push(r.rows_affected());
        }
        tx.commit().await?;
        Ok(out)
    })
}

/// Runs `first` and then `rest` in one transaction, committing only when `first` changed a row;
/// returns the affected rows of `rest`, or `None` (nothing written) when `first` changed none.
pub async fn guarded_tx(db: &Db, first: &Sql, rest: &[Sql]) -> Result<Option<Vec<u64>>, sqlx::Error> {
    with_pool!(db, p => {
        let mut tx = p.begin().await?;
        if bind_all!(sqlx::query(&first.text), &first.args).execute(&mut *tx).await?.rows_affected() == 0 {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(rest.len());
        for s in rest {
            out.push(bind_all!(sqlx::query(&s.text), &s.args).execute(&mut *tx).await?.rows_affected());
        }
        tx.commit().await?;
        Ok(Some(out))
    })
}

/// Runs one `INSERT … RETURNING id`; returns the id.
pub async fn insert(db: &Db, sql: &Sql) -> Result<i64, sqlx::Error> {
    with_pool!(db, p => bind_all!(sqlx::query_scalar::<_, i64>(&sql.text), &sql.args).fetch_one(p).await)
}

/// A transaction on either backend. Statements run in it see each other's writes and nothing
/// is visible to others until [`Tx::commit`]; dropped without a commit, it rolls back. A
/// service makes its change and writes its audit entry in one of these, so neither lands
/// without the other.
pub enum Tx {
    /// SQLite.
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    /// PostgreSQL.
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

macro_rules! with_tx {
    ($tx:expr, $t:ident => $body:expr) => {
        match $tx {
            Tx::Sqlite($t) => $body,
            Tx::Postgres($t) => $body,
        }
    };
}

impl Tx {
    /// Starts one that will write. On SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`): a transaction that read first and then tried to write would fail at once
    /// when another connection wrote in between, where waiting for the lock succeeds.
    pub async fn begin(db: &Db) -> Result<Self, sqlx::Error> {
        Ok(match db {
            Db::Sqlite(p) => Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
            Db::Postgres(p) => Tx::Postgres(p.begin().await?),
        })
    }

    /// Starts one that only reads (one consistent view, no write lock).
    pub async fn read(db: &Db) -> Result<Self, sqlx::Error> {
        Ok(match db {
            Db::Sqlite(p) => Tx::Sqlite(p.begin().await?),
            Db::Postgres(p) => Tx::Postgres(p.begin().await?),
        })
    }

    /// Runs a statement; returns the rows it changed.
    pub async fn execute(&mut self, sql: &Sql) -> Result<u64, sqlx::Error> {
        with_tx!(self, t => Ok(bind_all!(sqlx::query(&sql.text), &sql.args).execute(&mut **t).await?.rows_affected()))
    }

    /// Runs an `INSERT … RETURNING id`; returns the id.
    pub async fn insert(&mut self, sql: &Sql) -> Result<i64, sqlx::Error> {
        with_tx!(self, t => bind_all!(sqlx::query_scalar::<_, i64>(&sql.text), &sql.args).fetch_one(&mut **t).await)
    }

    /// At most one row.
    pub async fn fetch_opt<T: Row>(&mut self, sql: &Sql) -> Result<Option<T>, sqlx::Error> {
        with_tx!(self, t => bind_all!(sqlx::query_as::<_, T>(&sql.text), &sql.args).fetch_optional(&mut **t).await)
    }

    /// All rows.
    pub async fn fetch_all<T: Row>(&mut self, sql: &Sql) -> Result<Vec<T>, sqlx::Error> {
        with_tx!(self, t => bind_all!(sqlx::query_as::<_, T>(&sql.text), &sql.args).fetch_all(&mut **t).await)
    }

    /// One integer (COUNT, an id).
    pub async fn scalar(&mut self, sql: &Sql) -> Result<Option<i64>, sqlx::Error> {
        with_tx!(self, t => bind_all!(sqlx::query_scalar::<_, i64>(&sql.text), &sql.args).fetch_optional(&mut **t).await)
    }

    /// Makes everything it did visible.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        with_tx!(self, t => t.commit().await)
    }
}

/// `col, col, …` of the policy fields, optionally prefixed by a table alias.
pub fn policy_cols(alias: &str) -> String {
    POLICY_COLUMNS
        .iter()
        .map(|c| if alias.is_empty() { (*c).to_string() } else { format!("{alias}.{c}") })
        .collect::<Vec<_>>()
        .join(", ")
}

/// An org.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrgRow {
    /// Id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Policy.
    #[sqlx(flatten)]
    pub policy: PolicyFields,
}

/// Columns of [`OrgRow`] (alias `o`).
pub fn org_cols() -> String {
    format!("o.id, o.name, o.created_at, {}", policy_cols("o"))
}

/// A team.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TeamRow {
    /// Id.
    pub id: i64,
    /// Its org.
    pub org_id: i64,
    /// Name, unique in the org.
    pub name: String,
    /// Free text.
    pub description: String,
    /// OIDC group mapped to this team.
    pub oidc_group: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Policy.
    #[sqlx(flatten)]
    pub policy: PolicyFields,
}

/// Columns of [`TeamRow`] (alias `t`).
pub fn team_cols() -> String {
    format!("t.id, t.org_id, t.name, t.description, t.oidc_group, t.created_at, {}", policy_cols("t"))
}

/// A user.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    /// Id.
    pub id: i64,
    /// Unique email.
    pub email: String,
    /// Their org (none only for a bootstrap admin).
    pub org_id: Option<i64>,
    /// `user`, `org-admin` or `admin`.
    pub role: String,
    /// Inactive users' keys are refused.
    pub active: bool,
    /// Whether an OIDC sign-in bound the account to a provider subject.
    pub oidc_bound: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Policy.
    #[sqlx(flatten)]
    pub policy: PolicyFields,
}

/// Columns of [`UserRow`] (alias `u`).
pub fn user_cols() -> String {
    format!(
        "u.id, u.email, u.org_id, u.role, u.active, u.created_at, \
         CASE WHEN u.oidc_subject IS NULL THEN FALSE ELSE TRUE END AS oidc_bound, {}",
        policy_cols("u")
    )
}

/// A team membership.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MemberRow {
    /// Team.
    pub team_id: i64,
    /// User.
    pub user_id: i64,
    /// Whether the user administers the team.
    pub team_admin: bool,
    /// Unix seconds.
    pub added_at: i64,
}

/// A service account.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SaRow {
    /// Id.
    pub id: i64,
    /// Its team.
    pub team_id: i64,
    /// The accountable user (owner of its key).
    pub owner_user_id: i64,
    /// Name, unique among the team's live service accounts.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Its live key, if any.
    pub token_id: Option<i64>,
    /// Policy.
    #[sqlx(flatten)]
    pub policy: PolicyFields,
}

/// Columns of [`SaRow`] (alias `s`).
pub fn sa_cols() -> String {
    format!(
        "s.id, s.team_id, s.owner_user_id, s.name, s.description, s.created_at, \
         (SELECT MAX(x.id) FROM tokens x WHERE x.service_account_id = s.id AND x.revoked_at IS NULL AND x.deleted_at IS NULL) AS token_id, {}",
        policy_cols("s")
    )
}

/// A token as the API shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenFull {
    /// Id.
    pub id: i64,
    /// Owner.
    pub user_id: i64,
    /// Set for a service account's key.
    pub service_account_id: Option<i64>,
    /// Name.
    pub name: String,
    /// `sk-…abcd`.
    pub preview: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// Unix seconds.
    pub last_used_at: Option<i64>,
    /// Unix seconds.
    pub revoked_at: Option<i64>,
    /// The owner's org.
    pub owner_org_id: Option<i64>,
    /// The service account's team.
    pub sa_team_id: Option<i64>,
    /// The service account's team's org.
    pub sa_org_id: Option<i64>,
    /// The owner's role.
    pub owner_role: String,
    /// The latest expiry the key's holder may choose (set by a manager's expiry).
    pub max_expires_at: Option<i64>,
    /// Policy.
    #[sqlx(flatten)]
    pub policy: PolicyFields,
}

/// Columns of [`TokenFull`]: from `tokens k JOIN users u … LEFT JOIN service_accounts s …`
/// (see [`TOKEN_FROM`]).
pub fn token_cols() -> String {
    format!(
        "k.id, k.user_id, k.service_account_id, k.name, k.preview, k.created_at, k.expires_at, k.last_used_at, \
         k.revoked_at, u.org_id AS owner_org_id, s.team_id AS sa_team_id, st.org_id AS sa_org_id, \
         u.role AS owner_role, k.max_expires_at, {}",
        policy_cols("k")
    )
}

/// The FROM clause [`token_cols`] needs.
pub const TOKEN_FROM: &str = "tokens k JOIN users u ON u.id = k.user_id \
     LEFT JOIN service_accounts s ON s.id = k.service_account_id LEFT JOIN teams st ON st.id = s.team_id";

/// The caller's team memberships: (team id, team admin).
pub async fn memberships(db: &Db, user_id: i64) -> Result<Vec<(i64, bool)>, sqlx::Error> {
    with_pool!(db, p => sqlx::query_as::<_, (i64, bool)>(
        "SELECT m.team_id, m.team_admin FROM team_members m JOIN teams t ON t.id = m.team_id \
         WHERE m.user_id = $1 AND t.deleted_at IS NULL ORDER BY m.team_id")
        .bind(user_id).fetch_all(p).await)
}

/// Creates an org unless one of that name exists; returns its id (for the CLI bootstrap).
pub async fn ensure_org(db: &Db, name: &str, now: i64) -> Result<i64, sqlx::Error> {
    with_pool!(db, p => {
        sqlx::query("INSERT INTO orgs (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name).bind(now).execute(p).await?;
        sqlx::query_scalar::<_, i64>("SELECT id FROM orgs WHERE name = $1 AND deleted_at IS NULL")
            .bind(name).fetch_one(p).await
    })
}

/// Creates a user; fails on a taken email.
pub async fn insert_user(db: &Db, email: &str, org_id: Option<i64>, role: &str, now: i64) -> Result<i64, sqlx::Error> {
    with_pool!(db, p => sqlx::query_scalar::<_, i64>(
        "INSERT INTO users (email, org_id, role, created_at) VALUES ($1, $2, $3, $4) RETURNING id")
        .bind(email).bind(org_id).bind(role).bind(now).fetch_one(p).await)
}

/// A live org.
pub async fn load_org(tx: &mut Tx, id: i64) -> Result<Option<OrgRow>, sqlx::Error> {
    let mut q = Sql::new(format!("SELECT {} FROM orgs o WHERE o.deleted_at IS NULL AND o.id = ", org_cols()));
    q.id(id);
    tx.fetch_opt(&q).await
}

/// A live team.
pub async fn load_team(tx: &mut Tx, id: i64) -> Result<Option<TeamRow>, sqlx::Error> {
    let mut q = Sql::new(format!("SELECT {} FROM teams t WHERE t.deleted_at IS NULL AND t.id = ", team_cols()));
    q.id(id);
    tx.fetch_opt(&q).await
}

/// A live user.
pub async fn load_user(tx: &mut Tx, id: i64) -> Result<Option<UserRow>, sqlx::Error> {
    let mut q = Sql::new(format!("SELECT {} FROM users u WHERE u.deleted_at IS NULL AND u.id = ", user_cols()));
    q.id(id);
    tx.fetch_opt(&q).await
}

/// A live service account.
pub async fn load_sa(tx: &mut Tx, id: i64) -> Result<Option<SaRow>, sqlx::Error> {
    let mut q =
        Sql::new(format!("SELECT {} FROM service_accounts s WHERE s.deleted_at IS NULL AND s.id = ", sa_cols()));
    q.id(id);
    tx.fetch_opt(&q).await
}

/// A membership.
pub async fn load_member(tx: &mut Tx, team: i64, user: i64) -> Result<Option<MemberRow>, sqlx::Error> {
    let mut q = Sql::new("SELECT team_id, user_id, team_admin, added_at FROM team_members WHERE team_id = ");
    q.id(team).push(" AND user_id = ").id(user);
    tx.fetch_opt(&q).await
}

/// A key that is not deleted (revoked ones included).
pub async fn load_token(tx: &mut Tx, id: i64) -> Result<Option<TokenFull>, sqlx::Error> {
    let mut q = Sql::new(format!("SELECT {} FROM {TOKEN_FROM} WHERE k.deleted_at IS NULL AND k.id = ", token_cols()));
    q.id(id);
    tx.fetch_opt(&q).await
}

/// What a new key row holds besides its secret.
#[derive(Debug, Clone, Copy)]
pub struct NewKey<'a> {
    /// Owner.
    pub user_id: i64,
    /// Who creates it.
    pub created_by: i64,
    /// Name.
    pub name: &'a str,
    /// Expiry.
    pub expires_at: Option<i64>,
    /// Whether a manager sets the expiry (then it binds the holder).
    pub managed: bool,
    /// The service account it belongs to.
    pub sa: Option<i64>,
}

/// Stores a fresh key (by hash) in `tx`; returns its id and the key, to show once.
pub async fn insert_key(tx: &mut Tx, k: &NewKey<'_>, now: i64) -> Result<(i64, String), sqlx::Error> {
    use crate::tokens::{generate_key, hash_hex, preview};
    let NewKey { user_id, created_by, name, expires_at, managed, sa } = *k;
    let key = generate_key();
    let mut q = Sql::new(
        "INSERT INTO tokens (user_id, created_by, name, key_hash, preview, created_at, expires_at, max_expires_at, \
         service_account_id) VALUES (",
    );
    q.id(user_id)
        .push(", ")
        .id(created_by)
        .push(", ")
        .arg(Val::Text(name.to_string()))
        .push(", ")
        .arg(Val::Text(hash_hex(&key)))
        .push(", ")
        .arg(Val::Text(preview(&key)))
        .push(", ")
        .arg(Val::Int(Some(now)))
        .push(", ")
        .arg(Val::Int(expires_at))
        .push(", ")
        .arg(Val::Int(expires_at.filter(|_| managed)))
        .push(", ")
        .arg(Val::Int(sa))
        .push(") RETURNING id");
    Ok((tx.insert(&q).await?, key))
}

/// `UPDATE table SET … WHERE id = $n AND extra`; `None` if there is nothing to set.
pub fn update_sql(table: &str, sets: &[(&str, Val)], id: i64, extra: &str) -> Option<Sql> {
    if sets.is_empty() {
        return None;
    }
    let mut sql = Sql::new(format!("UPDATE {table} SET "));
    for (i, (col, v)) in sets.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.push(col).push(" = ").arg(v.clone());
    }
    sql.push(" WHERE id = ").id(id).push(extra);
    Some(sql)
}
