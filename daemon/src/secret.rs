//! Shared secrets (the controller's bearer tokens, a home-agent pair's
//! token) compared without telling an attacker where they differ.

use subtle::ConstantTimeEq;

/// True when `presented` is `expected`, in time that depends only on their
/// lengths (RFC 6750 §5.3 asks bearer tokens to be compared so).
pub fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
    presented.ct_eq(expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_bytes_are_the_same_secret() {
        assert!(same_secret(b"token", b"token"));
        assert!(!same_secret(b"token", b"tokeN"));
        assert!(!same_secret(b"token", b"token2"));
        assert!(!same_secret(b"", b"token"));
        assert!(same_secret(b"", b""));
    }
}
