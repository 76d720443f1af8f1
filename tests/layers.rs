//! The source tree's layers: one folder per layer, and a layer names only the
//! layers below it (so there is no import cycle between folders). The order is
//! the one in src/lib.rs and docs/ARCHITECTURE.md.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Lowest first.
const LAYERS: &[&str] = &[
    "base",
    "index",
    "config",
    "governor",
    "auth",
    "events",
    "recording",
    "detect",
    "playback",
    "appliance",
    "onvif",
    "notify",
    "replicate",
    "archive",
    "web",
    "cli",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The layer a file under src/ belongs to (a folder, or a top-level file's stem).
fn layer_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("component").as_os_str().to_string_lossy().to_string();
    first.trim_end_matches(".rs").to_string()
}

/// Every top-level module named through `crate::`, including in `crate::{a, b::c}`.
fn named_layers(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let code: String = text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: split at commas outside nested braces.
            let (mut depth, mut item) = (0, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(first_ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.insert(first_ident(&item));
        } else {
            out.insert(first_ident(rest));
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

fn first_ident(s: &str) -> String {
    s.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}

#[test]
fn every_layer_names_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let rank = |l: &str| LAYERS.iter().position(|x| *x == l);
    let mut wrong = Vec::new();
    for file in &files {
        let layer = layer_of(&src, file);
        if layer == "lib" || layer == "main" {
            continue;
        }
        let Some(own) = rank(&layer) else {
            wrong.push(format!("{}: a top-level module outside the layers {LAYERS:?}", file.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read source");
        for named in named_layers(&text) {
            match rank(&named) {
                Some(r) if r <= own => {}
                Some(_) => wrong.push(format!("{}: layer {layer} names the higher layer {named}", file.display())),
                None => wrong.push(format!("{}: names crate::{named}, which is not a layer", file.display())),
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_checker_sees_grouped_and_nested_paths() {
    let t = "use crate::{base::clock::Clock, recording::{ring, media}};\n// crate::web in a comment\nlet x = crate::index::db::Db::open;";
    let got: Vec<String> = named_layers(t).into_iter().collect();
    assert_eq!(got, vec!["base", "index", "recording"]);
}
