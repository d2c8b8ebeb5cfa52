//! CRC-32C exactly as `proto/AOF.md` section 5 writes it, bit by bit: the tests check the
//! server's checksums against the specification's algorithm, not against the same library.
//! Included with `#[path]` by the test crates that need it.

/// CRC-32C of the concatenation of `parts`.
pub fn crc32c_of(parts: &[&[u8]]) -> u32 {
    let mut crc: u32 = 0xFFFF_FFFF;
    for &b in parts.iter().flat_map(|part| part.iter()) {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    crc ^ 0xFFFF_FFFF
}
