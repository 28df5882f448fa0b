//! Small deterministic helpers: token estimates, text splitting, fake embeddings, base64.
//!
//! Everything here is a pure function of its input so that tests (and benchmark baselines) can
//! predict exactly what the fake upstream will answer.

/// The deterministic "token" estimate used everywhere: the number of whitespace-separated words.
pub(crate) fn word_count(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// The first `max_chars` characters of `s` (never splits a UTF-8 sequence).
pub(crate) fn first_chars(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((idx, _)) => &s[..idx],
        None => s,
    }
}

/// Cuts `s` after its `max_words`-th word. Returns the prefix (original spacing kept, so the
/// result is always a prefix of the input) and whether anything was cut.
pub(crate) fn truncate_words(s: &str, max_words: u64) -> (&str, bool) {
    if max_words == 0 {
        return ("", !s.trim().is_empty());
    }
    let mut words = 0u64;
    let mut in_word = false;
    for (idx, ch) in s.char_indices() {
        if ch.is_whitespace() {
            if in_word {
                in_word = false;
                if words == max_words {
                    // Only trailing whitespace left: nothing is cut, keep the text as is.
                    if s[idx..].trim().is_empty() {
                        return (s, false);
                    }
                    return (&s[..idx], true);
                }
            }
        } else if !in_word {
            in_word = true;
            words += 1;
        }
    }
    (s, false)
}

/// Splits `s` into exactly `n` consecutive pieces whose concatenation is `s`.
///
/// Pieces end at word boundaries when there are at least `n` words (so streamed deltas look
/// like tokens); otherwise the split is by characters and some pieces may be empty. Returns
/// byte ranges so the caller can slice an owned string without copying.
pub(crate) fn split_ranges(s: &str, n: usize) -> Vec<std::ops::Range<usize>> {
    let n = n.max(1);
    // Cut points: where the whitespace before each word (except the first) begins, so the
    // whitespace travels with the following word, like BPE tokens (" world").
    let mut starts = Vec::new();
    let mut seen_word = false;
    let mut ws_run_start = None;
    for (idx, ch) in s.char_indices() {
        if ch.is_whitespace() {
            ws_run_start.get_or_insert(idx);
        } else {
            if let Some(ws) = ws_run_start.take() {
                if seen_word {
                    starts.push(ws);
                }
            }
            seen_word = true;
        }
    }
    let words = if seen_word { starts.len() + 1 } else { 0 };
    let cut_points: Vec<usize> = if words >= n {
        (1..n).map(|i| starts[i * words / n - 1]).collect()
    } else {
        let chars: Vec<usize> = s.char_indices().map(|(i, _)| i).collect();
        let c = chars.len();
        (1..n).map(|i| chars.get(i * c / n).copied().unwrap_or(s.len())).collect()
    };
    let mut ranges = Vec::with_capacity(n);
    let mut start = 0;
    for cut in cut_points {
        ranges.push(start..cut);
        start = cut;
    }
    ranges.push(start..s.len());
    ranges
}

/// FNV-1a: a tiny, stable hash (std's hasher is randomly seeded, which would break determinism).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A unit-length vector of `dims` floats derived only from `seed_bytes`.
pub(crate) fn fake_embedding(seed_bytes: &[u8], dims: usize) -> Vec<f32> {
    // xorshift64*: deterministic, fast, and good enough to make different inputs look different.
    let mut state = fnv1a(seed_bytes) | 1;
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
            // Top 24 bits → [-1, 1).
            ((r >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// Decodes `%XX` escapes (clients percent-encode model ids such as `org/model` in paths).
/// Malformed escapes are kept literally; invalid UTF-8 is replaced.
pub(crate) fn percent_decode(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('%') {
        return std::borrow::Cow::Borrowed(s);
    }
    let hex = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%').then(|| Some((hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?))).flatten();
        match escaped {
            Some((hi, lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    std::borrow::Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard (RFC 4648, padded) base64. Hand-rolled to avoid a dependency for ~20 lines.
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b0 = chunk[0];
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        out.push(B64[(n >> 18) as usize & 63] as char);
        out.push(B64[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 { B64[(n >> 6) as usize & 63] as char } else { '=' });
        out.push(if chunk.len() > 2 { B64[n as usize & 63] as char } else { '=' });
    }
    out
}

/// Little-endian f32 bytes, base64-encoded: the wire format of `encoding_format: "base64"`.
pub(crate) fn floats_to_base64(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
    base64_encode(&bytes)
}

/// A valid 1x1 RGBA PNG (IHDR, IDAT and IEND with correct CRCs); its base64 is returned for
/// generated images.
#[cfg(test)]
pub(crate) const TINY_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0d, 0x49,
    0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0x64, 0x60, 0xf8, 0x5f, 0x0f, 0x00, 0x02, 0x87, 0x01, 0x80, 0xeb, 0x47, 0xba,
    0x92, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// `TINY_PNG` in base64, precomputed so image answers cost no encoding work.
pub(crate) const TINY_PNG_B64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_chars() {
        assert_eq!(word_count("  a b\tc\n"), 3);
        assert_eq!(word_count(""), 0);
        assert_eq!(first_chars("héllo", 2), "hé");
        assert_eq!(first_chars("hi", 200), "hi");
    }

    #[test]
    fn truncation_keeps_a_prefix() {
        assert_eq!(truncate_words("a b  c d", 2), ("a b", true));
        assert_eq!(truncate_words("a b ", 2), ("a b ", false));
        assert_eq!(truncate_words("a b", 5), ("a b", false));
        assert_eq!(truncate_words("a b", 0), ("", true));
    }

    #[test]
    fn split_reassembles_exactly() {
        for text in ["one two three four five six seven", "ab", "", "  lead and trail  ", "日本語"] {
            for n in 1..9 {
                let ranges = split_ranges(text, n);
                assert_eq!(ranges.len(), n, "{text:?} {n}");
                let joined: String = ranges.iter().map(|r| &text[r.clone()]).collect();
                assert_eq!(joined, text);
            }
        }
        let text = "one two three four";
        let pieces: Vec<&str> = split_ranges(text, 2).into_iter().map(|r| &text[r]).collect();
        assert_eq!(pieces, ["one two", " three four"]);
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = fake_embedding(b"hello", 8);
        assert_eq!(a, fake_embedding(b"hello", 8));
        assert_ne!(a, fake_embedding(b"world", 8));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("gpt-4o"), "gpt-4o");
        assert_eq!(percent_decode("org%2Fmodel"), "org/model");
        assert_eq!(percent_decode("a%2fb%"), "a/b%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(TINY_PNG), TINY_PNG_B64);
    }
}
