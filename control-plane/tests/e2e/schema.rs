//! Schema parity: `migrations/sqlite` and `migrations/postgres` must build the same schema.
//!
//! Both folders are applied to fresh databases (a SQLite file through `Db::open`, a new
//! PostgreSQL database) and what each catalog says is compared: tables, columns, column types
//! (through [`TYPE_MAPPING`]), nullability, indexes (name, columns, unique, partial), primary
//! keys, unique constraints and foreign keys (columns, referenced table and columns, actions).
//! Not compared: defaults (each dialect spells them its own way: `'[]'::text`, `nextval(…)`),
//! CHECK constraints and triggers (SQLite keeps them only as SQL text) and storage settings
//! (fillfactor). The mapping and the accepted differences are also in docs/operations.md
//! ("Schema parity").

use crate::harness::{create_pg_database, drop_pg_database};
use aqueduct::db::Db;
use std::collections::{BTreeMap, BTreeSet};

/// Column types that mean the same on both backends: (SQLite, PostgreSQL, why). SQLite's side is
/// the declared type; `INTEGER PRIMARY KEY` is a column declared exactly so as a table's whole
/// primary key, which makes it the rowid (64 bits, never NULL, assigned when not given).
/// PostgreSQL's side is `information_schema.columns.data_type`.
const TYPE_MAPPING: &[(&str, &str, &str)] = &[
    ("INTEGER PRIMARY KEY", "bigint", "ids: the rowid on SQLite, BIGSERIAL on PostgreSQL"),
    ("INTEGER PRIMARY KEY", "integer", "single-row tables keyed by a constant"),
    ("INTEGER", "integer", "32-bit values (HTTP status); both decode as i32"),
    ("BIGINT", "bigint", "64-bit values: ids, times, counters"),
    ("TEXT", "text", ""),
    ("TEXT", "character varying", ""),
    ("BOOLEAN", "boolean", "SQLite stores 0 and 1; both decode as bool"),
];

/// Differences accepted on purpose: (difference as reported, why). The test fails when one of
/// these no longer occurs, so the list never outlives its reason.
///
/// SQLite lets a PRIMARY KEY column of a rowid table hold NULL unless it is also declared NOT
/// NULL (a compatibility quirk, <https://sqlite.org/lang_createtable.html#the_primary_key>);
/// PostgreSQL makes every primary-key column NOT NULL. These tables were created without the NOT
/// NULL; SQLite cannot add it without copying each table (the usage ledger among them, millions
/// of rows), and the code always binds a value there. New tables declare their primary-key
/// columns NOT NULL, which this test enforces.
const ACCEPTED: &[(&str, &str)] = &[
    ("column gateway_secrets.name: nullable on SQLite, NOT NULL on PostgreSQL", "SQLite primary-key quirk"),
    ("column mcp_servers.name: nullable on SQLite, NOT NULL on PostgreSQL", "SQLite primary-key quirk"),
    ("column mcp_sessions.id: nullable on SQLite, NOT NULL on PostgreSQL", "SQLite primary-key quirk"),
    ("column oidc_logins.state: nullable on SQLite, NOT NULL on PostgreSQL", "SQLite primary-key quirk"),
    ("column ui_sessions.id_hash: nullable on SQLite, NOT NULL on PostgreSQL", "SQLite primary-key quirk"),
    ("column usage_events.request_id: nullable on SQLite, NOT NULL on PostgreSQL", "SQLite primary-key quirk"),
];

/// A table's shape as one backend's catalog describes it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Table {
    /// Column name -> (type, nullable), the type as the backend names it.
    columns: BTreeMap<String, (String, bool)>,
    /// Primary-key columns in key order (empty: none).
    primary_key: Vec<String>,
    /// Unique constraints (not unique indexes made with CREATE UNIQUE INDEX): their columns.
    uniques: BTreeSet<Vec<String>>,
    /// Index name -> (columns, unique, partial), for indexes made with CREATE INDEX.
    indexes: BTreeMap<String, (Vec<String>, bool, bool)>,
    foreign_keys: BTreeSet<ForeignKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ForeignKey {
    columns: Vec<String>,
    table: String,
    references: Vec<String>,
    on_delete: String,
    on_update: String,
}

/// Table name -> shape.
type Schema = BTreeMap<String, Table>;

/// Every difference between `sqlite` and `pg`, one line each naming the object.
fn differences(sqlite: &Schema, pg: &Schema) -> Vec<String> {
    let mut out = Vec::new();
    for name in sqlite.keys().chain(pg.keys()).collect::<BTreeSet<_>>() {
        let (s, p) = match (sqlite.get(name), pg.get(name)) {
            (Some(s), Some(p)) => (s, p),
            (Some(_), None) => {
                out.push(format!("table {name}: only on SQLite"));
                continue;
            }
            (None, _) => {
                out.push(format!("table {name}: only on PostgreSQL"));
                continue;
            }
        };
        table_differences(name, s, p, &mut out);
    }
    out
}

fn table_differences(t: &str, s: &Table, p: &Table, out: &mut Vec<String>) {
    let rowid = match s.primary_key.as_slice() {
        [only] if s.columns.get(only).is_some_and(|(ty, _)| ty == "INTEGER") => Some(only.as_str()),
        _ => None,
    };
    for c in s.columns.keys().chain(p.columns.keys()).collect::<BTreeSet<_>>() {
        match (s.columns.get(c), p.columns.get(c)) {
            (Some((s_ty, s_null)), Some((p_ty, p_null))) => {
                let s_ty = if rowid == Some(c.as_str()) { "INTEGER PRIMARY KEY" } else { s_ty.as_str() };
                if !TYPE_MAPPING.iter().any(|(sq, pq, _)| *sq == s_ty && *pq == p_ty) {
                    out.push(format!(
                        "column {t}.{c}: type {s_ty} on SQLite, {p_ty} on PostgreSQL (not in the type mapping)"
                    ));
                }
                // The rowid is never NULL whatever its declaration says.
                let s_null = *s_null && rowid != Some(c.as_str());
                if s_null != *p_null {
                    let null = |n: bool| if n { "nullable" } else { "NOT NULL" };
                    out.push(format!("column {t}.{c}: {} on SQLite, {} on PostgreSQL", null(s_null), null(*p_null)));
                }
            }
            (Some(_), None) => out.push(format!("column {t}.{c}: only on SQLite")),
            (None, _) => out.push(format!("column {t}.{c}: only on PostgreSQL")),
        }
    }
    if s.primary_key != p.primary_key {
        out.push(format!(
            "primary key of {t}: ({}) on SQLite, ({}) on PostgreSQL",
            s.primary_key.join(", "),
            p.primary_key.join(", ")
        ));
    }
    for u in s.uniques.symmetric_difference(&p.uniques) {
        let side = if s.uniques.contains(u) { "SQLite" } else { "PostgreSQL" };
        out.push(format!("unique constraint {t} ({}): only on {side}", u.join(", ")));
    }
    let describe = |(cols, unique, partial): &(Vec<String>, bool, bool)| {
        format!(
            "{}({}){}",
            if *unique { "UNIQUE " } else { "" },
            cols.join(", "),
            if *partial { " WHERE …" } else { "" }
        )
    };
    for i in s.indexes.keys().chain(p.indexes.keys()).collect::<BTreeSet<_>>() {
        match (s.indexes.get(i), p.indexes.get(i)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => {
                out.push(format!("index {i} on {t}: {} on SQLite, {} on PostgreSQL", describe(a), describe(b)))
            }
            (Some(a), None) => out.push(format!("index {i} on {t} {}: only on SQLite", describe(a))),
            (None, Some(b)) => out.push(format!("index {i} on {t} {}: only on PostgreSQL", describe(b))),
            (None, None) => {}
        }
    }
    for fk in s.foreign_keys.symmetric_difference(&p.foreign_keys) {
        let side = if s.foreign_keys.contains(fk) { "SQLite" } else { "PostgreSQL" };
        out.push(format!(
            "foreign key {t} ({}) -> {} ({}) ON DELETE {} ON UPDATE {}: only on {side}",
            fk.columns.join(", "),
            fk.table,
            fk.references.join(", "),
            fk.on_delete,
            fk.on_update
        ));
    }
}

/// What SQLite's catalog says about every table (`_sqlx_migrations` and SQLite's own left out).
async fn sqlite_schema(pool: &sqlx::SqlitePool) -> Schema {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name <> '_sqlx_migrations'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut schema = Schema::new();
    for name in tables {
        let mut table = Table::default();
        let columns: Vec<(String, String, bool, i64)> =
            sqlx::query_as("SELECT name, type, \"notnull\", pk FROM pragma_table_info($1) ORDER BY cid")
                .bind(&name)
                .fetch_all(pool)
                .await
                .unwrap();
        let mut pk: Vec<(i64, String)> = Vec::new();
        for (column, ty, not_null, pk_position) in columns {
            if pk_position > 0 {
                pk.push((pk_position, column.clone()));
            }
            table.columns.insert(column, (ty.to_ascii_uppercase(), !not_null));
        }
        pk.sort();
        table.primary_key = pk.into_iter().map(|(_, c)| c).collect();

        let indexes: Vec<(String, bool, String, bool)> =
            sqlx::query_as("SELECT name, \"unique\", origin, partial FROM pragma_index_list($1)")
                .bind(&name)
                .fetch_all(pool)
                .await
                .unwrap();
        for (index, unique, origin, partial) in indexes {
            let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_index_info($1) ORDER BY seqno")
                .bind(&index)
                .fetch_all(pool)
                .await
                .unwrap();
            match origin.as_str() {
                "c" => {
                    table.indexes.insert(index, (columns, unique, partial));
                }
                "u" => {
                    table.uniques.insert(columns);
                }
                // "pk": the primary key, read above.
                _ => {}
            }
        }

        let fks: Vec<(i64, String, String, Option<String>, String, String)> = sqlx::query_as(
            "SELECT id, \"table\", \"from\", \"to\", on_delete, on_update FROM pragma_foreign_key_list($1) \
             ORDER BY id, seq",
        )
        .bind(&name)
        .fetch_all(pool)
        .await
        .unwrap();
        let mut by_id: BTreeMap<i64, ForeignKey> = BTreeMap::new();
        for (id, parent, from, to, on_delete, on_update) in fks {
            let fk = by_id.entry(id).or_insert_with(|| ForeignKey {
                columns: Vec::new(),
                table: parent,
                references: Vec::new(),
                on_delete,
                on_update,
            });
            fk.columns.push(from);
            // No column named: the parent's primary key (filled in below).
            fk.references.extend(to);
        }
        table.foreign_keys = by_id.into_values().collect();
        schema.insert(name, table);
    }
    // `REFERENCES parent` without columns means the parent's primary key.
    let pks: BTreeMap<String, Vec<String>> = schema.iter().map(|(n, t)| (n.clone(), t.primary_key.clone())).collect();
    for table in schema.values_mut() {
        table.foreign_keys = std::mem::take(&mut table.foreign_keys)
            .into_iter()
            .map(|mut fk| {
                if fk.references.is_empty() {
                    fk.references = pks.get(&fk.table).cloned().unwrap_or_default();
                }
                fk
            })
            .collect();
    }
    schema
}

/// What PostgreSQL's catalog says about every table of the current schema (`_sqlx_migrations`
/// left out).
async fn pg_schema(pool: &sqlx::PgPool) -> Schema {
    let mut schema = Schema::new();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND c.relname <> '_sqlx_migrations'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for t in tables {
        schema.insert(t, Table::default());
    }

    let columns: Vec<(String, String, String, bool)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable = 'YES' \
         FROM information_schema.columns WHERE table_schema = current_schema()",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for (t, column, ty, nullable) in columns {
        if let Some(table) = schema.get_mut(&t) {
            table.columns.insert(column, (ty, nullable));
        }
    }

    // Column names of an attribute-number array, in its order.
    const NAMES: &str = "ARRAY(SELECT a.attname::text FROM unnest({keys}) WITH ORDINALITY k(attnum, ord) \
                         JOIN pg_attribute a ON a.attrelid = {rel} AND a.attnum = k.attnum ORDER BY k.ord)";
    let names = |keys: &str, rel: &str| NAMES.replace("{keys}", keys).replace("{rel}", rel);
    // (kind, table, columns, referenced table, referenced columns, on delete, on update)
    type Constraint = (String, String, Vec<String>, Option<String>, Vec<String>, String, String);
    let constraints: Vec<Constraint> = sqlx::query_as(&format!(
        "SELECT con.contype::text, cl.relname::text, {}, ref.relname::text, {}, \
             con.confdeltype::text, con.confupdtype::text \
             FROM pg_constraint con JOIN pg_class cl ON cl.oid = con.conrelid \
             JOIN pg_namespace n ON n.oid = cl.relnamespace LEFT JOIN pg_class ref ON ref.oid = con.confrelid \
             WHERE n.nspname = current_schema() AND con.contype IN ('p', 'u', 'f')",
        names("con.conkey", "con.conrelid"),
        names("con.confkey", "con.confrelid"),
    ))
    .fetch_all(pool)
    .await
    .unwrap();
    for (kind, t, columns, parent, references, on_delete, on_update) in constraints {
        let Some(table) = schema.get_mut(&t) else { continue };
        match kind.as_str() {
            "p" => table.primary_key = columns,
            "u" => {
                table.uniques.insert(columns);
            }
            _ => {
                table.foreign_keys.insert(ForeignKey {
                    columns,
                    table: parent.unwrap_or_default(),
                    references,
                    on_delete: pg_action(&on_delete),
                    on_update: pg_action(&on_update),
                });
            }
        }
    }

    // Indexes made with CREATE INDEX: those that back no constraint.
    let indexes: Vec<(String, String, Vec<String>, bool, bool)> = sqlx::query_as(&format!(
        "SELECT t.relname::text, i.relname::text, {}, ix.indisunique, ix.indpred IS NOT NULL \
         FROM pg_index ix JOIN pg_class i ON i.oid = ix.indexrelid JOIN pg_class t ON t.oid = ix.indrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = current_schema() AND NOT EXISTS (SELECT 1 FROM pg_constraint c \
         WHERE c.conindid = ix.indexrelid AND c.contype IN ('p', 'u', 'x'))",
        names("ix.indkey::int2[]", "ix.indrelid"),
    ))
    .fetch_all(pool)
    .await
    .unwrap();
    for (t, index, columns, unique, partial) in indexes {
        if let Some(table) = schema.get_mut(&t) {
            table.indexes.insert(index, (columns, unique, partial));
        }
    }
    schema
}

/// A foreign key action as SQLite's `pragma_foreign_key_list` names it.
fn pg_action(code: &str) -> String {
    match code {
        "a" => "NO ACTION",
        "r" => "RESTRICT",
        "c" => "CASCADE",
        "n" => "SET NULL",
        "d" => "SET DEFAULT",
        other => other,
    }
    .to_string()
}

/// A fresh PostgreSQL database with `migrations/postgres` applied, dropped with this value.
struct PgDatabase {
    pool: Option<sqlx::PgPool>,
    created: Option<(String, String)>,
}

impl PgDatabase {
    async fn migrated(dir: &std::path::Path) -> Self {
        let (server, name, url) = create_pg_database().await;
        // Made first, so the database is dropped even if the migrations fail.
        let mut this = Self { pool: None, created: Some((server, name)) };
        match Db::open(Some(&url), dir).await {
            Ok(Db::Postgres(p)) => this.pool = Some(p),
            Ok(Db::Sqlite(_)) => unreachable!("opened with a postgres:// URL"),
            Err(e) => panic!("migrations/postgres: {e}"),
        }
        this
    }

    fn pool(&self) -> &sqlx::PgPool {
        self.pool.as_ref().expect("migrated")
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Some((server, name)) = self.created.take() {
            drop_pg_database(server, name);
        }
    }
}

async fn sqlite_migrated(dir: &std::path::Path) -> sqlx::SqlitePool {
    match Db::open(None, dir).await.unwrap_or_else(|e| panic!("migrations/sqlite: {e}")) {
        Db::Sqlite(p) => p,
        Db::Postgres(_) => unreachable!("no URL: SQLite"),
    }
}

/// Differences minus [`ACCEPTED`]; fails naming each unexpected one and each accepted one that
/// no longer occurs.
fn check(found: &[String]) {
    let accepted: BTreeSet<&str> = ACCEPTED.iter().map(|(d, _)| *d).collect();
    let unexpected: Vec<&str> = found.iter().map(String::as_str).filter(|d| !accepted.contains(d)).collect();
    let gone: Vec<&str> = accepted.iter().copied().filter(|a| !found.iter().any(|d| d == a)).collect();
    let mut message = String::from("migrations/sqlite and migrations/postgres build different schemas.\n");
    if !unexpected.is_empty() {
        message += "Differences (add a migration to both folders, or to the one that is wrong):\n  ";
        message += &unexpected.join("\n  ");
        message += "\n";
    }
    if !gone.is_empty() {
        message += "Accepted differences that no longer occur (remove them from ACCEPTED):\n  ";
        message += &gone.join("\n  ");
        message += "\n";
    }
    assert!(unexpected.is_empty() && gone.is_empty(), "{message}");
}

#[tokio::test]
async fn sqlite_and_postgres_migrations_build_the_same_schema() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = sqlite_migrated(dir.path()).await;
    let pg = PgDatabase::migrated(dir.path()).await;
    let (s, p) = (sqlite_schema(&sqlite).await, pg_schema(pg.pool()).await);
    // The readers see the schema at all (an empty catalog compares equal to another).
    for schema in [&s, &p] {
        let users = schema.get("users").unwrap_or_else(|| panic!("no users table in {schema:#?}"));
        assert_eq!(users.primary_key, ["id"]);
        assert!(users.uniques.contains(&vec!["email".to_string()]), "{users:#?}");
        assert!(schema["tokens"].foreign_keys.iter().any(|fk| fk.table == "users"), "{schema:#?}");
        assert!(schema["service_accounts"].indexes["service_accounts_team_name"].2, "partial index");
    }
    check(&differences(&s, &p));
}

/// The comparison finds and names a difference of each kind, read from the real catalogs.
#[tokio::test]
async fn schema_differences_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = sqlite_migrated(dir.path()).await;
    let pg = PgDatabase::migrated(dir.path()).await;
    for sql in [
        "CREATE TABLE only_here (id INTEGER PRIMARY KEY, note TEXT NOT NULL)",
        "ALTER TABLE users ADD COLUMN nickname TEXT",
        "ALTER TABLE teams ADD COLUMN quota BIGINT",
        "CREATE INDEX audit_log_actor ON audit_log (actor_id, at)",
        "CREATE UNIQUE INDEX mcp_servers_created ON mcp_servers (created_at)",
    ] {
        sqlx::query(sql).execute(&sqlite).await.unwrap();
    }
    for sql in [
        "ALTER TABLE teams ADD COLUMN quota INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX mcp_servers_created ON mcp_servers (created_at)",
        "ALTER TABLE audit_log ADD CONSTRAINT audit_log_actor_fk FOREIGN KEY (actor_id) REFERENCES users (id)",
        "ALTER TABLE mcp_servers ADD CONSTRAINT mcp_servers_config_key UNIQUE (config)",
    ] {
        sqlx::query(sql).execute(pg.pool()).await.unwrap();
    }
    let found = differences(&sqlite_schema(&sqlite).await, &pg_schema(pg.pool()).await);
    let found: BTreeSet<&str> =
        found.iter().map(String::as_str).filter(|d| !ACCEPTED.iter().any(|(a, _)| a == d)).collect();
    let want: BTreeSet<&str> = [
        "table only_here: only on SQLite",
        "column users.nickname: only on SQLite",
        "column teams.quota: type BIGINT on SQLite, integer on PostgreSQL (not in the type mapping)",
        "column teams.quota: nullable on SQLite, NOT NULL on PostgreSQL",
        "index audit_log_actor on audit_log (actor_id, at): only on SQLite",
        "index mcp_servers_created on mcp_servers: UNIQUE (created_at) on SQLite, (created_at) on PostgreSQL",
        "foreign key audit_log (actor_id) -> users (id) ON DELETE NO ACTION ON UPDATE NO ACTION: only on PostgreSQL",
        "unique constraint mcp_servers (config): only on PostgreSQL",
    ]
    .into_iter()
    .collect();
    assert_eq!(found, want);
}
