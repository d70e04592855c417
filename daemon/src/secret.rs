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

/// The permission bits of `path` that expose it: any access by others, or
/// write access by its group (0 for a file only its owner, and read-only
/// its group, may use: the packaged `/etc/nemo` files are 0640 root:nemo,
/// read by the controller's user), if it can be read.
pub fn exposed_bits(path: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .ok()
        .map(|meta| meta.permissions().mode() & 0o027)
}

/// Warns when a file holding a secret (a token, keys) is exposed
/// ([`exposed_bits`]): `chmod 600` (or 640 for a daemon's group) it.
pub fn warn_if_exposed(path: &std::path::Path) {
    if let Some(bits) = exposed_bits(path).filter(|bits| *bits != 0) {
        tracing::warn!(
            path = %path.display(),
            exposed = format!("{bits:03o}"),
            "a file holding a secret that others may read (or its group write): chmod 600 it"
        );
    }
}

/// Makes `path` (a file holding secrets: keys, a store with keys) readable
/// and writable by its owner only, whatever the umask made it.
pub fn owner_only(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
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
    fn exposed_files_are_told_apart() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "t").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(exposed_bits(&path), Some(0o004));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(exposed_bits(&path), Some(0));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
        assert_eq!(exposed_bits(&path), Some(0o020));
        owner_only(&path).unwrap();
        assert_eq!(exposed_bits(&path), Some(0));
        assert_eq!(exposed_bits(&dir.path().join("none")), None);
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
