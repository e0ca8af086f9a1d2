//! The order in which kmod's own hash table (`shared/hash.c`) hands out its keys.
//!
//! depmod walks two of these tables to order its output: the modules by name (when there is no
//! `modules.order`, and for the modules it does not list) and the exported symbols
//! (`modules.symbols`). The table keeps `n` buckets (a power of two), puts a key in bucket
//! `superfast(key) & (n - 1)` (Paul Hsieh's SuperFastHash) and keeps each bucket sorted by
//! `strcmp`; iteration goes bucket by bucket. So the order is a pure function of the key set,
//! which [`order_key`] gives as a sort key.

/// Buckets of depmod's `modules_by_name` table (`hash_new(512, ...)`).
pub const MODULE_BUCKETS: u32 = 512;
/// Buckets of depmod's `symbols` table (`hash_new(2048, ...)`).
pub const SYMBOL_BUCKETS: u32 = 2048;

/// SuperFastHash as kmod computes it on x86 and arm64: 16-bit words read little-endian, and the
/// odd tail bytes read as C `char`. That is signed on x86-64, where Debian's depmod runs for
/// this comparison; kmod's keys (module names, symbols) are ASCII, where both agree.
pub fn superfast(key: &[u8]) -> u32 {
    let word = |b: &[u8]| u32::from(u16::from_le_bytes([b[0], b[1]]));
    let signed = |b: u8| b as i8 as i32 as u32;
    // kmod takes the length as `unsigned int`; its keys are far shorter.
    let len = key.len() as u32;
    let mut hash = len;
    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        hash = hash.wrapping_add(word(&c[0..2]));
        let tmp = (word(&c[2..4]) << 11) ^ hash;
        hash = (hash << 16) ^ tmp;
        hash = hash.wrapping_add(hash >> 11);
    }
    let rest = chunks.remainder();
    match rest.len() {
        3 => {
            hash = hash.wrapping_add(word(&rest[0..2]));
            hash ^= hash << 16;
            hash ^= signed(rest[2]) << 18;
            hash = hash.wrapping_add(hash >> 11);
        }
        2 => {
            hash = hash.wrapping_add(word(&rest[0..2]));
            hash ^= hash << 11;
            hash = hash.wrapping_add(hash >> 17);
        }
        1 => {
            hash = hash.wrapping_add(signed(rest[0]));
            hash ^= hash << 10;
            hash = hash.wrapping_add(hash >> 1);
        }
        _ => {}
    }
    hash ^= hash << 3;
    hash = hash.wrapping_add(hash >> 5);
    hash ^= hash << 4;
    hash = hash.wrapping_add(hash >> 17);
    hash ^= hash << 25;
    hash = hash.wrapping_add(hash >> 6);
    hash
}

/// Sorting by this key gives kmod's iteration order for a table of `buckets` buckets.
pub fn order_key(key: &[u8], buckets: u32) -> (u32, &[u8]) {
    (superfast(key) & (buckets - 1), key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_lengths_take_their_own_branch() {
        // The real proof is tests/kmod_depmod.rs: modules.symbols, listed in this order, is
        // byte-identical to depmod's for thousands of symbols.
        assert_eq!(superfast(b""), 0);
        let all: Vec<u32> = [&b"a"[..], b"ab", b"abc", b"abcd", b"abcde"]
            .iter()
            .map(|k| superfast(k))
            .collect();
        // Every tail length takes its own branch: no two collide.
        let mut d = all.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), all.len());
        assert!(order_key(b"virtio", MODULE_BUCKETS).0 < MODULE_BUCKETS);
    }
}
