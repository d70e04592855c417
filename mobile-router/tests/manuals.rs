//! The manual pages nemo ships, generated from each binary's own command
//! line definition: nemoctl(1) from `nemoctl man`, nemo-ha(8),
//! nemo-mr(8) and nemo-controller(8) from `--man-page` (which needs no
//! configuration). Each names its binary and section and documents every
//! option the binary takes.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::process::Command;

use nemo_testkit::workspace_binary;

fn page(binary: &str, args: &[&str]) -> String {
    let output = Command::new(workspace_binary(binary))
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "{binary} {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn every_binary_prints_its_manual_page() {
    for daemon in ["nemo-ha", "nemo-mr", "nemo-controller"] {
        let roff = page(daemon, &["--man-page"]);
        assert!(roff.contains(&format!(".TH {daemon} 8")), "{roff}");
        // roff escapes a hyphen in an option as \-.
        for option in [
            "\\-\\-config",
            "\\-\\-check",
            "\\-\\-log\\-json",
            "\\-\\-man\\-page",
        ] {
            assert!(roff.contains(option), "{daemon}(8) lacks {option}:\n{roff}");
        }
    }
    let roff = page("nemoctl", &["man"]);
    assert!(roff.contains(".TH nemoctl 1"), "{roff}");
    for documented in [
        "\\-\\-endpoint",
        "\\-\\-token\\-file",
        "\\-\\-output",
        "place",
        "events",
        "status",
    ] {
        assert!(
            roff.contains(documented),
            "nemoctl(1) lacks {documented}:\n{roff}"
        );
    }
}
