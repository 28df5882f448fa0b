//! The token table: every live key's SHA-256 in a compact, sorted form searched in place.
//!
//! A JSON map of 100,000 tokens costs each Wasm VM ~45 MB and ~130 ms to parse. Here the hashes
//! travel as one hex string of sorted 32-byte digests with parallel arrays of attributes; a VM
//! holds ~52 bytes per token and finds one with a binary search, no per-token allocation.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::cmp::Ordering;

/// Length of a SHA-256 digest.
pub const HASH_LEN: usize = 32;

/// The wire form of the table, as the control plane writes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenTableSpec {
    /// Concatenated hex SHA-256 digests of the keys, sorted ascending, no duplicates.
    pub hashes: String,
    /// Token ids, parallel to `hashes`.
    pub ids: Vec<u64>,
    /// Expiry as unix seconds, 0 for never, parallel to `hashes`.
    pub expires: Vec<i64>,
    /// Index into the snapshot's principals, parallel to `hashes`.
    pub principals: Vec<u32>,
}

/// Why a token table was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenTableError {
    #[error("token hashes are not valid hex")]
    Hex,
    #[error("token hashes length {0} is not a multiple of 64 hex digits")]
    Length(usize),
    #[error(
        "token arrays disagree in length: {hashes} hashes, {ids} ids, {expires} expiries, {principals} principals"
    )]
    Arity { hashes: usize, ids: usize, expires: usize, principals: usize },
    #[error("token hashes are not sorted and unique at position {0}")]
    Unsorted(usize),
    #[error("token {0} names principal {1}, which does not exist")]
    Principal(usize, u32),
}

/// One token found in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenEntry {
    /// Token id in the control plane's database.
    pub id: u64,
    /// Expiry as unix seconds, or `None` for a key that never expires.
    pub expires_at: Option<i64>,
    /// Index of the token's principal in the snapshot.
    pub principal: u32,
}

/// The parsed, searchable table.
#[derive(Debug, Clone, Default)]
pub struct TokenTable {
    hashes: Vec<u8>,
    ids: Vec<u64>,
    expires: Vec<i64>,
    principals: Vec<u32>,
}

impl TokenTable {
    /// Decodes and checks a table; `principal_count` bounds the principal indices.
    pub fn from_spec(spec: TokenTableSpec, principal_count: usize) -> Result<Self, TokenTableError> {
        if !spec.hashes.len().is_multiple_of(HASH_LEN * 2) {
            return Err(TokenTableError::Length(spec.hashes.len()));
        }
        let hashes = hex::decode(&spec.hashes).map_err(|_| TokenTableError::Hex)?;
        let n = hashes.len() / HASH_LEN;
        if spec.ids.len() != n || spec.expires.len() != n || spec.principals.len() != n {
            return Err(TokenTableError::Arity {
                hashes: n,
                ids: spec.ids.len(),
                expires: spec.expires.len(),
                principals: spec.principals.len(),
            });
        }
        for i in 1..n {
            if hashes[(i - 1) * HASH_LEN..i * HASH_LEN] >= hashes[i * HASH_LEN..(i + 1) * HASH_LEN] {
                return Err(TokenTableError::Unsorted(i));
            }
        }
        if let Some((i, p)) = spec.principals.iter().enumerate().find(|(_, p)| **p as usize >= principal_count) {
            return Err(TokenTableError::Principal(i, *p));
        }
        Ok(Self { hashes, ids: spec.ids, expires: spec.expires, principals: spec.principals })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Finds the token whose plaintext key is `key`.
    pub fn find_key(&self, key: &str) -> Option<TokenEntry> {
        self.find_hash(&hash_key(key))
    }

    /// Finds a token by its SHA-256 digest.
    ///
    /// The search compares digests, not secrets: an attacker who can time it learns about hashes
    /// of keys, which does not help forge a key, so no constant-time compare is needed here.
    pub fn find_hash(&self, digest: &[u8; HASH_LEN]) -> Option<TokenEntry> {
        let (mut lo, mut hi) = (0usize, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let at = self.hashes.get(mid * HASH_LEN..(mid + 1) * HASH_LEN)?;
            match at.cmp(digest.as_slice()) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => {
                    let expires = *self.expires.get(mid)?;
                    return Some(TokenEntry {
                        id: *self.ids.get(mid)?,
                        expires_at: (expires != 0).then_some(expires),
                        principal: *self.principals.get(mid)?,
                    });
                }
            }
        }
        None
    }
}

impl TokenTableSpec {
    /// Builds the wire form from unsorted entries `(digest, id, expires_at, principal)`.
    pub fn build(mut entries: Vec<([u8; HASH_LEN], u64, Option<i64>, u32)>) -> Self {
        entries.sort_unstable_by_key(|e| e.0);
        entries.dedup_by(|a, b| a.0 == b.0);
        let mut raw = Vec::with_capacity(entries.len() * HASH_LEN);
        let mut spec = TokenTableSpec::default();
        for (digest, id, expires, principal) in entries {
            raw.extend_from_slice(&digest);
            spec.ids.push(id);
            spec.expires.push(expires.unwrap_or(0));
            spec.principals.push(principal);
        }
        spec.hashes = hex::encode(raw);
        spec
    }
}

/// SHA-256 of a key, the only form in which keys are stored or pushed.
pub fn hash_key(key: &str) -> [u8; HASH_LEN] {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(keys: &[&str]) -> TokenTable {
        let entries = keys.iter().enumerate().map(|(i, k)| (hash_key(k), i as u64 + 1, None, 0)).collect();
        TokenTable::from_spec(TokenTableSpec::build(entries), 1).unwrap()
    }

    #[test]
    fn finds_every_key_and_nothing_else() {
        let keys: Vec<String> = (0..500).map(|i| format!("sk-key-{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let t = table(&refs);
        assert_eq!(t.len(), 500);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(t.find_key(k).unwrap().id, i as u64 + 1);
        }
        assert!(t.find_key("sk-key-500").is_none());
        assert!(t.find_key("").is_none());
    }

    #[test]
    fn empty_table_finds_nothing() {
        let t = table(&[]);
        assert!(t.is_empty());
        assert!(t.find_key("x").is_none());
    }

    #[test]
    fn expiry_zero_means_never() {
        let spec = TokenTableSpec::build(vec![(hash_key("a"), 1, Some(100), 0), (hash_key("b"), 2, None, 0)]);
        let t = TokenTable::from_spec(spec, 1).unwrap();
        assert_eq!(t.find_key("a").unwrap().expires_at, Some(100));
        assert_eq!(t.find_key("b").unwrap().expires_at, None);
    }

    #[test]
    fn rejects_malformed_tables() {
        let good = TokenTableSpec::build(vec![(hash_key("a"), 1, None, 0), (hash_key("b"), 2, None, 0)]);
        let mut s = good.clone();
        s.hashes.push('0');
        assert!(matches!(TokenTable::from_spec(s, 1), Err(TokenTableError::Length(_))));
        let mut s = good.clone();
        s.hashes.replace_range(0..2, "zz");
        assert_eq!(TokenTable::from_spec(s, 1).unwrap_err(), TokenTableError::Hex);
        let mut s = good.clone();
        s.ids.pop();
        assert!(matches!(TokenTable::from_spec(s, 1), Err(TokenTableError::Arity { .. })));
        let mut s = good.clone();
        let (a, b) = s.hashes.split_at(64);
        s.hashes = format!("{b}{a}");
        assert_eq!(TokenTable::from_spec(s, 1).unwrap_err(), TokenTableError::Unsorted(1));
        let mut s = good;
        s.principals[1] = 7;
        assert_eq!(TokenTable::from_spec(s, 1).unwrap_err(), TokenTableError::Principal(1, 7));
    }
}
