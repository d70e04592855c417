//! Emulated power loss: an ext4 file system on a loop device whose image is
//! copied, at the instant of the "power loss", without `sync`.
//!
//! What the copy holds is what the file system inside had pushed to its
//! block device by then: data and metadata covered by an `fsync`/`fdatasync`
//! (which ends in a flush of the loop device) are there; pages only written
//! to the page cache, or written back without the file's size and block
//! allocation (as `sync_file_range` does), may not be. Mounting the copy
//! replays the ext4 journal, as a reboot would. Root only.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::run;

/// An ext4 image on a loop device, mounted; unmounted, detached and
/// deleted when dropped (declare it before the processes that use it, so
/// that they are killed first).
#[derive(Debug)]
pub struct LoopDisk {
    dir: PathBuf,
    image: PathBuf,
    device: String,
    mount: PathBuf,
}

fn scratch(tag: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // /var/tmp: on the machine's disk, not a tmpfs the image would eat
    // memory from.
    let dir = PathBuf::from("/var/tmp").join(format!("nemo-{tag}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

impl LoopDisk {
    /// A new `size_mib` ext4 file system, mounted.
    pub fn new(tag: &str, size_mib: u64) -> LoopDisk {
        let dir = scratch(tag);
        let image = dir.join("disk.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(size_mib << 20))
            .expect("image file");
        let made = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&image)
            .status();
        if !made.is_ok_and(|s| s.success()) {
            let _ = std::fs::remove_dir_all(&dir);
            panic!("mkfs.ext4 {} failed", image.display());
        }
        LoopDisk::attach(dir, image)
    }

    fn attach(dir: PathBuf, image: PathBuf) -> LoopDisk {
        let attached = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&image)
            .output();
        let attached = match attached {
            Ok(out) if out.status.success() => out,
            other => {
                let _ = std::fs::remove_dir_all(&dir);
                panic!("losetup {}: {other:?}", image.display());
            }
        };
        let device = String::from_utf8_lossy(&attached.stdout).trim().to_owned();
        let mount = dir.join("mnt");
        std::fs::create_dir_all(&mount).expect("mount point");
        let disk = LoopDisk {
            dir,
            image,
            device,
            mount,
        };
        // Panics (and so cleans up through Drop) when it fails.
        run(
            "mount",
            &["-t", "ext4", &disk.device, &disk.mount.to_string_lossy()],
        );
        disk
    }

    /// Where the file system is mounted.
    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// The power loss: the device's content at this instant, copied without
    /// any `sync`, mounted as a new disk (the journal replays as at boot).
    pub fn crash_copy(&self) -> LoopDisk {
        let dir = scratch("copy");
        let image = dir.join("disk.img");
        // A plain read of the image: what the loop device has written.
        let mut from = std::fs::File::open(&self.image).expect("image");
        let mut to = std::fs::File::create(&image).expect("copy");
        std::io::copy(&mut from, &mut to).expect("copying the image");
        drop(to);
        LoopDisk::attach(dir, image)
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let mount = self.mount.to_string_lossy().into_owned();
        if !Command::new("umount")
            .arg(&mount)
            .status()
            .is_ok_and(|s| s.success())
        {
            // Something still holds it open: detach it lazily rather than
            // leave it mounted.
            let _ = Command::new("umount").args(["-l", &mount]).status();
        }
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// True when loop devices and ext4 can be used here (root, `losetup`,
/// `mkfs.ext4`).
pub fn available() -> bool {
    crate::is_root() && crate::runs("losetup", &["--version"]) && crate::runs("mkfs.ext4", &["-V"])
}

/// The lines of a file a load generator wrote (what it saw acknowledged),
/// parsed; panics, naming the line, on one that does not parse.
pub fn acknowledged<T: std::str::FromStr + Ord>(path: &Path) -> std::collections::BTreeSet<T> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|line| {
            line.parse()
                .unwrap_or_else(|_| panic!("{}: {line:?} does not parse", path.display()))
        })
        .collect()
}
