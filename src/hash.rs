//! A small, stable, non-cryptographic hash for names derived from longer text.

/// FNV-1a, 64 bits: the same value on every platform and release of roll.
pub fn fnv1a(text: &str) -> u64 {
    fnv1a_bytes(0xcbf2_9ce4_8422_2325, text.as_bytes())
}

/// FNV-1a of `bytes`, continuing from `hash` (the offset basis to start).
pub fn fnv1a_bytes(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
