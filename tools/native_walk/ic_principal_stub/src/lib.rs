//! Bench-harness stub of `ic_principal` (not the real crate): a principal is at most 29 bytes, kept
//! inline. Only `as_slice`, `from_slice` and `MAX_LENGTH_IN_BYTES` exist, the three items
//! ic-stable-structures 0.7.x uses; nothing here validates or formats principals.

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Principal {
    len: u8,
    bytes: [u8; Principal::MAX_LENGTH_IN_BYTES],
}

impl Principal {
    pub const MAX_LENGTH_IN_BYTES: usize = 29;

    /// Panics on more than `MAX_LENGTH_IN_BYTES` bytes, as the real `from_slice` does.
    pub fn from_slice(slice: &[u8]) -> Self {
        assert!(
            slice.len() <= Self::MAX_LENGTH_IN_BYTES,
            "principal longer than {} bytes",
            Self::MAX_LENGTH_IN_BYTES
        );
        let mut bytes = [0u8; Self::MAX_LENGTH_IN_BYTES];
        bytes[..slice.len()].copy_from_slice(slice);
        Principal {
            len: slice.len() as u8,
            bytes,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}
