//! API keys: generation, hashing, and their rows in the store.
//!
//! A key is `sk-aq-` followed by 256 random bits in hex. Only its SHA-256 (hex) and a short
//! preview are stored; the plaintext is returned once, at creation.

pub mod journal;
pub mod store;

use rand::rngs::OsRng;
use rand::RngCore;

/// Prefix of every key Aqueduct issues.
pub const KEY_PREFIX: &str = "sk-aq-";

/// A fresh key with 256 bits of randomness from the OS.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

/// SHA-256 of a key, hex-encoded: the only form stored.
pub fn hash_hex(key: &str) -> String {
    hex::encode(aqueduct_policy::tokens::hash_key(key))
}

/// What lists show instead of the key: `sk-…` and its last four characters.
pub fn preview(key: &str) -> String {
    let tail: String = key.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    format!("sk-…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_long_and_previewed() {
        let a = generate_key();
        let b = generate_key();
        assert_ne!(a, b);
        assert_eq!(a.len(), KEY_PREFIX.len() + 64);
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(preview(&a), format!("sk-…{}", &a[a.len() - 4..]));
        assert_eq!(hash_hex(&a).len(), 64);
        assert_ne!(hash_hex(&a), hash_hex(&b));
    }
}
