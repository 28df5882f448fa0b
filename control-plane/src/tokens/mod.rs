//! API keys: generation, hashing, and their rows in the store.
//!
//! A key is `sk-aq-` followed by 43 random letters and digits (256 bits). Only its SHA-256
//! (hex) and a short preview are stored; the plaintext is returned once, at creation.

pub mod journal;
pub mod service;
pub mod store;

use rand::rngs::OsRng;
use rand::RngCore;

/// Prefix of every key Aqueduct issues.
pub const KEY_PREFIX: &str = "sk-aq-";

/// Letters and digits: a key is one word to select and to paste.
const KEY_ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Characters after the prefix: 43 of 62 kinds carry 256.03 bits.
pub const KEY_CHARS: usize = 43;

/// A fresh key with 256 bits of randomness from the OS.
///
/// The whole key is 49 bytes, so its SHA-256 is one compression where the 70 bytes of the
/// hex form (`sk-aq-` + 64 hex digits, still accepted) took two: the filter hashes the key on
/// every request, and in its Wasm VM a compression costs some 3,400 instructions.
pub fn generate_key() -> String {
    let mut key = String::with_capacity(KEY_PREFIX.len() + KEY_CHARS);
    key.push_str(KEY_PREFIX);
    let mut pool = [0u8; 64];
    while key.len() < KEY_PREFIX.len() + KEY_CHARS {
        OsRng.fill_bytes(&mut pool);
        // Bytes of 248 and above are dropped so that every character is equally likely
        // (248 = 4 × 62).
        for b in pool.iter().filter(|b| **b < 248).take(KEY_PREFIX.len() + KEY_CHARS - key.len()) {
            key.push(char::from(KEY_ALPHABET[usize::from(*b % 62)]));
        }
    }
    key
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
        assert_eq!(a.len(), KEY_PREFIX.len() + KEY_CHARS);
        assert!(a.starts_with(KEY_PREFIX));
        assert!(a[KEY_PREFIX.len()..].bytes().all(|c| c.is_ascii_alphanumeric()), "{a}");
        // One SHA-256 block: the message and its 9 bytes of padding fit in 64.
        assert!(a.len() + 9 <= 64);
        assert_eq!(preview(&a), format!("sk-…{}", &a[a.len() - 4..]));
        assert_eq!(hash_hex(&a).len(), 64);
        assert_ne!(hash_hex(&a), hash_hex(&b));
    }

    #[test]
    fn key_characters_are_spread_evenly() {
        // 2,000 keys, 86,000 characters: each of the 62 should appear about 1,387 times. A
        // biased draw (say `byte % 62` over all 256 byte values) would give the first eight
        // characters about 1,680; the bounds are five standard deviations out.
        let mut counts = [0u32; 62];
        for _ in 0..2000 {
            for c in generate_key()[KEY_PREFIX.len()..].bytes() {
                let i = KEY_ALPHABET.iter().position(|a| *a == c).unwrap();
                counts[i] += 1;
            }
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*min > 1200 && *max < 1580, "{counts:?}");
    }
}
