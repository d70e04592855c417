//! The modules of each crate depend on one another one way only: no
//! circle in the graph of a crate's top-level modules (issue 28: a circle
//! was how the pair's replication and the driver, and the registrar and its
//! dispatcher, ended up each holding half of the other's concern).
//!
//! A module depends on another when its code (comments and `#[cfg(test)]`
//! code left out) names `crate::other`, or, at the top level, `super::other`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The code of a file without its comments and its test module.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The names that follow `prefix` in `text` (`crate::x` -> `x`).
fn named_after<'a>(text: &'a str, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    text.match_indices(prefix).filter_map(move |(at, _)| {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            return None;
        }
        let rest = &text[at + prefix.len()..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        Some(&rest[..end])
    })
}

/// A crate's top-level modules and which of them each one uses.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let lib = code(&src.join("lib.rs"));
    let modules: BTreeSet<String> = lib
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let line = line.strip_prefix("pub ").unwrap_or(line);
            let name = line.strip_prefix("mod ")?.strip_suffix(';')?;
            Some(name.to_owned())
        })
        .collect();
    let mut edges = BTreeMap::new();
    for module in &modules {
        let top = src.join(format!("{module}.rs"));
        let mut files = Vec::new();
        sources(&src.join(module), &mut files);
        if top.exists() {
            files.push(top.clone());
        }
        let mut uses = BTreeSet::new();
        for file in &files {
            let text = code(file);
            let mut names: Vec<&str> = named_after(&text, "crate::").collect();
            if *file == top {
                names.extend(named_after(&text, "super::"));
            }
            uses.extend(
                names
                    .into_iter()
                    .filter(|name| *name != module && modules.contains(*name))
                    .map(str::to_owned),
            );
        }
        edges.insert(module.clone(), uses);
    }
    edges
}

/// A circle through `from`, if there is one: the modules on it.
fn circle(edges: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    fn walk(
        edges: &BTreeMap<String, BTreeSet<String>>,
        at: &str,
        from: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in edges.get(at).into_iter().flatten() {
            if next == from {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(edges, next, from, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![from.to_owned()];
    let mut seen = BTreeSet::new();
    walk(edges, from, from, &mut path, &mut seen).then_some(path)
}

#[test]
fn no_crate_has_a_circle_between_its_modules() {
    let mut circles = Vec::new();
    let mut crates = 0;
    for entry in std::fs::read_dir(root()).unwrap().flatten() {
        let src = entry.path().join("src");
        if !src.join("lib.rs").exists() || !entry.path().join("Cargo.toml").exists() {
            continue;
        }
        crates += 1;
        let edges = graph(&src);
        for module in edges.keys() {
            if let Some(circle) = circle(&edges, module) {
                circles.push(format!(
                    "{}: {} -> {module}",
                    entry.file_name().to_string_lossy(),
                    circle.join(" -> ")
                ));
            }
        }
    }
    assert!(crates >= 6, "found only {crates} crates under {:?}", root());
    assert!(
        circles.is_empty(),
        "modules in a circle:\n{}",
        circles.join("\n")
    );
}

#[test]
fn a_circle_is_found() {
    // The check itself: two modules naming each other are a circle, a
    // chain is not.
    let edges: BTreeMap<String, BTreeSet<String>> = [
        ("a", &["b"][..]),
        ("b", &["c"][..]),
        ("c", &["a"][..]),
        ("d", &["a"][..]),
    ]
    .into_iter()
    .map(|(m, uses)| (m.to_owned(), uses.iter().map(|u| (*u).to_owned()).collect()))
    .collect();
    assert_eq!(circle(&edges, "a").unwrap(), ["a", "b", "c"]);
    assert!(circle(&edges, "d").is_none());
    let text = "use crate::wire::{x}; let y = crate::auth::f(); notcrate::z; // crate::c";
    let named: Vec<&str> = named_after(text, "crate::").collect();
    assert_eq!(named, ["wire", "auth", "c"]);
}
