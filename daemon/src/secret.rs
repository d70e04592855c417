//! Shared secrets (the controller's bearer tokens, a home-agent pair's
//! token) compared without telling an attacker where they differ, and
//! random octets from the kernel for keys and ids.

use subtle::ConstantTimeEq;

/// True when `presented` is `expected`, in time that depends only on their
/// lengths (RFC 6750 §5.3 asks bearer tokens to be compared so).
pub fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
    presented.ct_eq(expected).into()
}

/// `N` random octets from the kernel (`/dev/urandom`: no RNG crate needed).
pub fn random_octets<const N: usize>() -> std::io::Result<[u8; N]> {
    use std::io::Read;
    let mut octets = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut octets)?;
    Ok(octets)
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

    #[test]
    fn random_octets_differ() {
        let (a, b) = (
            random_octets::<16>().unwrap(),
            random_octets::<16>().unwrap(),
        );
        assert_ne!(a, b);
    }
}
