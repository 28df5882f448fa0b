//! The token table: every live key's SHA-256 in a compact, sorted form searched in place.
//!
//! A JSON map of 100,000 tokens costs each Wasm VM ~45 MB and ~130 ms to parse. Here a token is
//! 32 bytes in four parallel blocks (digest prefixes, ids, expiries, principals; little-endian), which
//! the binary policy form ([`crate::snapshot::PolicySnapshot::encode`]) carries verbatim: a VM
//! adopts the blocks as read, checks their order once and finds a key with a binary search, no
//! parse and no per-token allocation. Hand-written JSON configurations use [`TokenTableSpec`].

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::cmp::Ordering;

/// Length of a SHA-256 digest.
pub const HASH_LEN: usize = 32;
/// Bytes of each digest the table keeps: its first 128 bits. Finding a key whose digest starts
/// with a given 128 bits takes about 2^128 hashes (2^111 against 100,000 keys at once), as out
/// of reach as the full digest, and two live keys sharing a prefix is as likely as guessing one;
/// halving the digests makes the table 32 bytes a key instead of 52 (every VM holds a copy,
/// two while a new policy loads).
pub const PREFIX_LEN: usize = 16;
/// Bytes per token in the id block.
pub const ID_LEN: usize = 8;
/// Bytes per token in the expiry block (unix seconds as u32: until 2106).
pub const EXPIRES_LEN: usize = 4;
/// Bytes per token in the principal block.
pub const PRINCIPAL_LEN: usize = 4;

/// The JSON form of the table, for hand-written configurations.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenTableSpec {
    /// Concatenated hex prefixes ([`PREFIX_LEN`] bytes) of the keys' SHA-256 digests, sorted
    /// ascending, no duplicates.
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
    #[error("token hashes length {0} is not a multiple of 32 hex digits")]
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

/// The searchable table: four parallel little-endian blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenTable {
    hashes: Vec<u8>,
    ids: Vec<u8>,
    expires: Vec<u8>,
    principals: Vec<u8>,
}

fn read<const N: usize>(block: &[u8], i: usize) -> Option<[u8; N]> {
    block.get(i * N..(i + 1) * N).and_then(|b| b.try_into().ok())
}

impl TokenTable {
    /// Builds a table from unsorted entries `(digest, id, expires_at, principal)`; a repeated
    /// digest prefix keeps its first entry.
    pub fn build(mut entries: Vec<([u8; HASH_LEN], u64, Option<i64>, u32)>) -> Self {
        entries.sort_unstable_by_key(|e| e.0);
        entries.dedup_by(|a, b| a.0[..PREFIX_LEN] == b.0[..PREFIX_LEN]);
        let n = entries.len();
        let mut t = Self {
            hashes: Vec::with_capacity(n * PREFIX_LEN),
            ids: Vec::with_capacity(n * ID_LEN),
            expires: Vec::with_capacity(n * EXPIRES_LEN),
            principals: Vec::with_capacity(n * PRINCIPAL_LEN),
        };
        for (digest, id, expires, principal) in entries {
            t.hashes.extend_from_slice(&digest[..PREFIX_LEN]);
            t.ids.extend_from_slice(&id.to_le_bytes());
            t.expires.extend_from_slice(&expiry(expires).to_le_bytes());
            t.principals.extend_from_slice(&principal.to_le_bytes());
        }
        t
    }

    /// Adopts the four blocks of the binary form, checking their sizes and order.
    pub fn from_blocks(
        hashes: Vec<u8>,
        ids: Vec<u8>,
        expires: Vec<u8>,
        principals: Vec<u8>,
    ) -> Result<Self, TokenTableError> {
        if !hashes.len().is_multiple_of(PREFIX_LEN) {
            return Err(TokenTableError::Length(hashes.len() * 2));
        }
        let n = hashes.len() / PREFIX_LEN;
        if ids.len() != n * ID_LEN || expires.len() != n * EXPIRES_LEN || principals.len() != n * PRINCIPAL_LEN {
            return Err(TokenTableError::Arity {
                hashes: n,
                ids: ids.len() / ID_LEN,
                expires: expires.len() / EXPIRES_LEN,
                principals: principals.len() / PRINCIPAL_LEN,
            });
        }
        // Sorted and unique, or the binary search would miss keys.
        let mut prev: Option<&[u8]> = None;
        for (i, h) in hashes.chunks_exact(PREFIX_LEN).enumerate() {
            if prev.is_some_and(|p| p >= h) {
                return Err(TokenTableError::Unsorted(i));
            }
            prev = Some(h);
        }
        Ok(Self { hashes, ids, expires, principals })
    }

    /// Decodes the JSON form.
    pub fn from_spec(spec: TokenTableSpec) -> Result<Self, TokenTableError> {
        if !spec.hashes.len().is_multiple_of(PREFIX_LEN * 2) {
            return Err(TokenTableError::Length(spec.hashes.len()));
        }
        let hashes = hex::decode(&spec.hashes).map_err(|_| TokenTableError::Hex)?;
        let n = hashes.len() / PREFIX_LEN;
        if spec.ids.len() != n || spec.expires.len() != n || spec.principals.len() != n {
            return Err(TokenTableError::Arity {
                hashes: n,
                ids: spec.ids.len(),
                expires: spec.expires.len(),
                principals: spec.principals.len(),
            });
        }
        Self::from_blocks(
            hashes,
            spec.ids.iter().flat_map(|v| v.to_le_bytes()).collect(),
            spec.expires.iter().flat_map(|v| expiry((*v != 0).then_some(*v)).to_le_bytes()).collect(),
            spec.principals.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    /// The JSON form.
    pub fn to_spec(&self) -> TokenTableSpec {
        let n = self.len();
        TokenTableSpec {
            hashes: hex::encode(&self.hashes),
            ids: (0..n).filter_map(|i| read(&self.ids, i).map(u64::from_le_bytes)).collect(),
            expires: (0..n).filter_map(|i| read(&self.expires, i).map(|b| i64::from(u32::from_le_bytes(b)))).collect(),
            principals: (0..n).filter_map(|i| read(&self.principals, i).map(u32::from_le_bytes)).collect(),
        }
    }

    /// The four blocks, in the order the binary form carries them.
    pub fn blocks(&self) -> [&[u8]; 4] {
        [&self.hashes, &self.ids, &self.expires, &self.principals]
    }

    /// Checks that every token names one of `principal_count` principals.
    pub fn check_principals(&self, principal_count: usize) -> Result<(), TokenTableError> {
        for (i, p) in self.principals.chunks_exact(PRINCIPAL_LEN).enumerate() {
            let p = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
            if p as usize >= principal_count {
                return Err(TokenTableError::Principal(i, p));
            }
        }
        Ok(())
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.hashes.len() / PREFIX_LEN
    }

    /// True when there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Finds the token whose plaintext key is `key`.
    pub fn find_key(&self, key: &str) -> Option<TokenEntry> {
        self.find_hash(&hash_key(key))
    }

    /// Finds a token by its SHA-256 digest (by the digest's [`PREFIX_LEN`]-byte prefix).
    ///
    /// The search compares digests, not secrets: an attacker who can time it learns about hashes
    /// of keys, which does not help forge a key, so no constant-time compare is needed here.
    pub fn find_hash(&self, digest: &[u8; HASH_LEN]) -> Option<TokenEntry> {
        let prefix = digest.get(..PREFIX_LEN)?;
        let (mut lo, mut hi) = (0usize, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let at = self.hashes.get(mid * PREFIX_LEN..(mid + 1) * PREFIX_LEN)?;
            match at.cmp(prefix) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => {
                    let expires = i64::from(u32::from_le_bytes(read(&self.expires, mid)?));
                    return Some(TokenEntry {
                        id: u64::from_le_bytes(read(&self.ids, mid)?),
                        expires_at: (expires != 0).then_some(expires),
                        principal: u32::from_le_bytes(read(&self.principals, mid)?),
                    });
                }
            }
        }
        None
    }
}

impl Serialize for TokenTable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_spec().serialize(s)
    }
}

impl<'de> Deserialize<'de> for TokenTable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::from_spec(TokenTableSpec::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl TokenTableSpec {
    /// Builds the JSON form from unsorted entries `(digest, id, expires_at, principal)`.
    pub fn build(entries: Vec<([u8; HASH_LEN], u64, Option<i64>, u32)>) -> Self {
        TokenTable::build(entries).to_spec()
    }
}

/// An expiry as stored: unix seconds as u32, 0 for never; a time before 1970 is already past
/// (1), one after 2106 is the last second the form has.
fn expiry(at: Option<i64>) -> u32 {
    at.map_or(0, |t| u32::try_from(t.max(1)).unwrap_or(u32::MAX))
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
        let t = TokenTable::build(entries);
        t.check_principals(1).unwrap();
        t
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
    fn json_form_round_trips() {
        let t = TokenTable::build(vec![(hash_key("a"), 9, Some(5), 0), (hash_key("b"), 2, None, 1)]);
        let back = TokenTable::from_spec(t.to_spec()).unwrap();
        assert_eq!(back, t);
        assert_eq!(serde_json::from_str::<TokenTable>(&serde_json::to_string(&t).unwrap()).unwrap(), t);
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
        let t = TokenTable::from_spec(spec).unwrap();
        assert_eq!(t.find_key("a").unwrap().expires_at, Some(100));
        assert_eq!(t.find_key("b").unwrap().expires_at, None);
    }

    #[test]
    fn expiries_clamp_to_the_stored_range() {
        let t = TokenTable::build(vec![
            (hash_key("past"), 1, Some(-5), 0),
            (hash_key("far"), 2, Some(i64::MAX), 0),
            (hash_key("zero"), 3, Some(0), 0),
        ]);
        assert_eq!(t.find_key("past").unwrap().expires_at, Some(1), "already expired, not 'never'");
        assert_eq!(t.find_key("far").unwrap().expires_at, Some(i64::from(u32::MAX)));
        assert_eq!(t.find_key("zero").unwrap().expires_at, Some(1));
        assert_eq!(t.blocks()[0].len(), 3 * PREFIX_LEN);
    }

    #[test]
    fn rejects_malformed_tables() {
        let good = TokenTableSpec::build(vec![(hash_key("a"), 1, None, 0), (hash_key("b"), 2, None, 0)]);
        let mut s = good.clone();
        s.hashes.push('0');
        assert!(matches!(TokenTable::from_spec(s), Err(TokenTableError::Length(_))));
        let mut s = good.clone();
        s.hashes.replace_range(0..2, "zz");
        assert_eq!(TokenTable::from_spec(s).unwrap_err(), TokenTableError::Hex);
        let mut s = good.clone();
        s.ids.pop();
        assert!(matches!(TokenTable::from_spec(s), Err(TokenTableError::Arity { .. })));
        let mut s = good.clone();
        let (a, b) = s.hashes.split_at(32);
        s.hashes = format!("{b}{a}");
        assert_eq!(TokenTable::from_spec(s).unwrap_err(), TokenTableError::Unsorted(1));
        let mut s = good.clone();
        s.principals[1] = 7;
        assert_eq!(
            TokenTable::from_spec(s).unwrap().check_principals(1).unwrap_err(),
            TokenTableError::Principal(1, 7)
        );
        let t = TokenTable::from_spec(good).unwrap();
        let [h, i, e, p] = t.blocks().map(<[u8]>::to_vec);
        assert!(matches!(
            TokenTable::from_blocks(h.clone(), i[1..].to_vec(), e.clone(), p.clone()),
            Err(TokenTableError::Arity { .. })
        ));
        let swapped = [&h[16..], &h[..16]].concat();
        assert_eq!(
            TokenTable::from_blocks(swapped, i.clone(), e.clone(), p.clone()).unwrap_err(),
            TokenTableError::Unsorted(1)
        );
        assert_eq!(TokenTable::from_blocks(h, i, e, p).unwrap(), t);
    }
}
