//! Little-endian field access for on-disk records (ext4 is little-endian except the journal).

pub fn get_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
pub fn get_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
pub fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
pub fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
/// Reads a 64-bit value split into a low and a high 32-bit half.
pub fn get_lo_hi32(b: &[u8], lo: usize, hi: usize) -> u64 {
    get_u32(b, lo) as u64 | (get_u32(b, hi) as u64) << 32
}
pub fn put_lo_hi32(b: &mut [u8], lo: usize, hi: usize, v: u64) {
    put_u32(b, lo, v as u32);
    put_u32(b, hi, (v >> 32) as u32);
}
