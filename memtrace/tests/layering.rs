//! The modules of `memtrace/src` follow the data path and import only down it: commands →
//! session → output / schema / progress → render → model ← {loader, collector, symbolize,
//! attribution, sockets, overview} → leaf modules. This test reads the sources, collects every
//! `crate::` path outside test code, and checks each top-level module imports only what its
//! layer may, and that there is no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each top-level module may import (besides itself).
const ALLOWED: &[(&str, &[&str])] = &[
    // Leaf modules.
    ("kernel", &[]),
    ("units", &[]),
    ("fsutil", &[]),
    ("privileges", &[]),
    ("sysinfo", &[]),
    // The model: nothing of the crate (no I/O, no clap, no serde).
    ("model", &[]),
    // The stages that feed the model.
    (
        "loader",
        &[
            "kernel",
            "model",
            "privileges",
            "sysinfo",
            "units",
            "fsutil",
        ],
    ),
    ("collector", &["loader", "model", "kernel"]),
    ("symbolize", &["model"]),
    ("attribution", &["model", "kernel", "sysinfo"]),
    (
        "sockets",
        &["model", "attribution", "privileges", "sysinfo", "units"],
    ),
    (
        "overview",
        &["attribution", "kernel", "sysinfo", "units", "fsutil"],
    ),
    // Renderers of the model.
    ("render", &["model", "units"]),
    // Above the renderers.
    ("schema", &["model"]),
    ("progress", &["model", "units"]),
    ("output", &["render", "schema", "model", "units", "fsutil"]),
    // Serving rendered reports over HTTP (`memtrace serve`).
    ("serve", &["render", "schema", "model", "units"]),
    (
        "session",
        &[
            "attribution",
            "collector",
            "fsutil",
            "kernel",
            "loader",
            "model",
            "output",
            "progress",
            "render",
            "schema",
            "serve",
            "sockets",
            "symbolize",
            "sysinfo",
            "units",
        ],
    ),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments and without test code: `#[cfg(test)]` items are cut from
/// the attribute to the end of the file when it opens a `mod tests` block, and whole files
/// named `tests.rs` / `*_tests.rs` / `testkit.rs` are skipped by the caller.
fn production_code(text: &str) -> String {
    let no_comments: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    match no_comments.find("#[cfg(test)]\nmod tests") {
        Some(i) => no_comments[..i].to_string(),
        None => match no_comments.find("#[cfg(test)]\npub(crate) mod tests") {
            Some(i) => no_comments[..i].to_string(),
            None => no_comments,
        },
    }
}

/// Every top-level module named by a `crate::` path, including `use crate::{a::x, b};`.
fn crate_imports(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while let Some(pos) = code[i..].find("crate::") {
        let start = i + pos + "crate::".len();
        i = start;
        if code[start..].starts_with('{') {
            // A use tree: the first segment of each top-level entry.
            let mut depth = 0;
            let mut entry_start = true;
            let mut j = start;
            while j < bytes.len() {
                let c = bytes[j] as char;
                match c {
                    '{' => {
                        depth += 1;
                        if depth == 1 {
                            entry_start = true;
                        }
                    }
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => entry_start = true,
                    c if entry_start && depth == 1 && (c.is_ascii_alphabetic() || c == '_') => {
                        let name: String = code[j..]
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        j += name.len().saturating_sub(1);
                        out.insert(name);
                        entry_start = false;
                    }
                    _ => {}
                }
                j += 1;
            }
        } else {
            let name: String = code[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&root).expect("under src");
        let name = rel
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if name == "tests.rs" || name.ends_with("_tests.rs") || name == "testkit.rs" {
            continue;
        }
        let top = rel
            .components()
            .next()
            .expect("component")
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read");
        let imports = crate_imports(&production_code(&text));
        edges
            .entry(top.clone())
            .or_default()
            .extend(imports.into_iter().filter(|m| *m != top));
    }
    edges
}

#[test]
fn imports_follow_the_layers() {
    let edges = graph();
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(m, a)| (*m, a.iter().copied().collect()))
        .collect();
    let mut bad = Vec::new();
    for (module, imports) in &edges {
        if module == "commands" {
            continue; // the top: may use anything
        }
        let Some(ok) = allowed.get(module.as_str()) else {
            bad.push(format!(
                "{module}: a new top-level module: give it a layer in ALLOWED"
            ));
            continue;
        };
        for import in imports {
            if !ok.contains(import.as_str()) {
                bad.push(format!("{module} -> {import}"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "imports against the layers (see this test's ALLOWED): {bad:#?}"
    );
    // The parser sees real imports (a broken parser would pass everything).
    assert!(edges["session"].contains("loader"), "{edges:?}");
    assert!(edges["render"].contains("model"), "{edges:?}");
}

#[test]
fn no_import_cycle() {
    let edges = graph();
    // Depth-first search for a back edge.
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let i = path.iter().position(|p| p == n).unwrap_or(0);
                let mut cycle = path[i..].to_vec();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(n.to_string(), 1);
        path.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        if let Some(cycle) = visit(n, &edges, &mut state, &mut Vec::new()) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_parser_reads_use_trees() {
    let code = "use crate::{\n    a::{b, c},\n    d,\n    e::f::G,\n};\nlet x = crate::h::i();";
    let got: Vec<String> = crate_imports(code).into_iter().collect();
    assert_eq!(got, ["a", "d", "e", "h"]);
}
