//! The set-up installs every program the tests and labs run: each program
//! a test spawns by name (`Command::new`, a namespace's `.command`, the
//! testkit's `runs` and `run`) and each tool a lab checks for
//! (`lab_prepare NAME tool...`) must be listed in deploy/tools.txt, which
//! deploy/setup.sh installs from. A green CI on a machine where something
//! was installed by hand once hid a missing `etcdctl`; this would have
//! caught it. With NEMO_REQUIRE_TOOLS set (deploy/test.sh sets it), every
//! entry of the list must also be present on this machine.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `what package` pairs of deploy/tools.txt.
fn listed() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("deploy/tools.txt")).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let mut fields = line.split_whitespace();
            let what = fields.next().unwrap().to_owned();
            let package = fields
                .next()
                .unwrap_or_else(|| panic!("deploy/tools.txt: {line:?} names no package"))
                .to_owned();
            (what, package)
        })
        .collect()
}

fn files(dir: &Path, ending: &str, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if !matches!(name.as_ref(), "target" | "third_party" | ".git") {
                files(&path, ending, found);
            }
        } else if name.ends_with(ending) {
            found.push(path);
        }
    }
}

/// The string literals that follow each of `openers` in `text`.
fn literals_after(text: &str, openers: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for opener in openers {
        for (at, _) in text.match_indices(opener) {
            let rest = &text[at + opener.len()..];
            if let Some(end) = rest.find('"') {
                found.push(rest[..end].to_owned());
            }
        }
    }
    found
}

/// Every program the Rust sources spawn by name, and every tool the lab
/// scripts check for.
fn spawned() -> BTreeSet<String> {
    let mut sources = Vec::new();
    files(&root(), ".rs", &mut sources);
    let mut programs = BTreeSet::new();
    for source in sources {
        let text = std::fs::read_to_string(&source).unwrap();
        for program in literals_after(
            &text,
            &[
                "Command::new(\"",
                ".command(\"",
                " runs(\"",
                "(runs(\"",
                " run(\"",
                "(run(\"",
            ],
        ) {
            // Lab scripts run by `bash`, whose tools are checked below.
            if !program.ends_with(".sh") {
                programs.insert(program);
            }
        }
    }
    let mut scripts = Vec::new();
    files(&root().join("deploy"), ".sh", &mut scripts);
    files(&root().join("bench"), ".sh", &mut scripts);
    for script in scripts {
        let text = std::fs::read_to_string(&script).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            let Some(at) = line.find("lab_prepare ") else {
                continue;
            };
            let words: Vec<&str> = line[at..]
                .split(';')
                .next()
                .unwrap()
                .split_whitespace()
                .collect();
            // lab_prepare NAME tool...
            for tool in words.iter().skip(2) {
                if tool
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || "0123456789._-".contains(c))
                {
                    programs.insert((*tool).to_owned());
                }
            }
        }
    }
    programs
}

#[test]
fn every_program_the_tests_run_is_in_the_set_up_list() {
    let listed: BTreeSet<String> = listed().into_iter().map(|(what, _)| what).collect();
    let spawned = spawned();
    // The scan itself works: it finds programs known to be spawned.
    for known in [
        "ip",
        "etcd",
        "tshark",
        "promtool",
        "/usr/bin/python3",
        "qemu-system-x86_64",
    ] {
        assert!(
            spawned.contains(known),
            "the scan missed {known}: {spawned:?}"
        );
    }
    let unlisted: Vec<&String> = spawned.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "tests or labs run {unlisted:?}, which deploy/tools.txt does not list: \
         a fresh machine's set-up (deploy/setup.sh) would not install them"
    );
}

#[test]
fn every_listed_tool_is_here_when_required() {
    let absent: Vec<String> = listed()
        .into_iter()
        .filter(|(what, _)| {
            if what.starts_with('/') {
                !Path::new(what).exists()
            } else {
                !std::env::var_os("PATH")
                    .map(|path| std::env::split_paths(&path).any(|dir| dir.join(what).is_file()))
                    .unwrap_or(false)
            }
        })
        .map(|(what, package)| format!("{what} ({package})"))
        .collect();
    if absent.is_empty() {
        return;
    }
    assert!(
        std::env::var_os("NEMO_REQUIRE_TOOLS").is_none(),
        "missing after the set-up: {absent:?} (deploy/setup.sh installs them)"
    );
    nemo_testkit::record_skip(&format!(
        "tools missing: {absent:?}; run deploy/setup.sh (set NEMO_REQUIRE_TOOLS=1 to make this a failure)"
    ));
}
