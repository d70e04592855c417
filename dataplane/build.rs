//! Compiles the BPF programs (bpf/*.bpf.c) with clang into OUT_DIR, where
//! `src/bpf` embeds them. Needs clang and libbpf's headers (Debian's
//! `clang` and `libbpf-dev`, which deploy/setup.sh installs); without them
//! the build stops and says so.

use std::path::PathBuf;
use std::process::Command;

// `rejected` is a test fixture the verifier must refuse (never loaded by
// the daemons).
const PROGRAMS: &[&str] = &["tunnel", "translator", "rejected"];

fn main() {
    println!("cargo:rerun-if-changed=bpf");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = std::env::var("NEMO_BPF_CLANG").unwrap_or_else(|_| "clang".into());
    // The kernel's UAPI headers for the BPF target: the multiarch folder
    // holds asm/, which linux/*.h include.
    let multiarch = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "/usr/include/aarch64-linux-gnu",
        _ => "/usr/include/x86_64-linux-gnu",
    };
    for program in PROGRAMS {
        let source = format!("bpf/{program}.bpf.c");
        let object = out.join(format!("{program}.bpf.o"));
        let result = Command::new(&clang)
            .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
            .arg(format!("-I{multiarch}"))
            .args(["-c", &source, "-o"])
            .arg(&object)
            .output();
        match result {
            Ok(output) if output.status.success() => {}
            Ok(output) => panic!(
                "clang could not compile {source}:\n{}",
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) => panic!(
                "cannot run {clang} to compile the BPF data plane ({source}): {error}. \
                 Install clang and libbpf-dev (deploy/setup.sh does), or set NEMO_BPF_CLANG"
            ),
        }
    }
}
