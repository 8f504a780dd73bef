//! Tidy checks: rules about the code base itself, checked as ordinary tests so that a change
//! that breaks one fails CI like any other regression.
//!
//! - only `clarion-store` names `sqlx` (the storage boundary: no SQL above the store), and
//!   the store's public face (its model, errors and API list) names no driver type either;
//! - no code compares a status or a channel with a string literal (they are enums);
//! - the engine and the simulator read no clock (`now` is always an argument);
//! - every Rust source file opens with a `//!` doc saying what it is;
//! - ARCHITECTURE.md's code map names every workspace crate.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Every file under `dir` (recursively) whose name ends with `suffix`.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !["target", ".git", "node_modules"].contains(&name.as_str()) {
                    pending.push(path);
                }
            } else if name.ends_with(suffix) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The workspace's crate folders: `lib/*` and `crates/*`.
fn crate_dirs() -> Vec<PathBuf> {
    let root = workspace();
    let mut dirs = Vec::new();
    for parent in ["lib", "crates"] {
        for entry in std::fs::read_dir(root.join(parent)).unwrap() {
            let path = entry.unwrap().path();
            if path.join("Cargo.toml").exists() {
                dirs.push(path);
            }
        }
    }
    dirs.sort();
    dirs
}

fn relative(path: &Path) -> String {
    path.strip_prefix(workspace())
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn only_the_store_names_sqlx() {
    let mut offenders = Vec::new();
    for dir in crate_dirs() {
        if dir.ends_with("clarion-store") {
            continue;
        }
        let mut sources = files(&dir, ".rs");
        sources.push(dir.join("Cargo.toml"));
        for file in sources {
            let text = std::fs::read_to_string(&file).unwrap();
            if text.contains("sqlx") && !file.ends_with("tidy.rs") {
                offenders.push(relative(&file));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "sqlx named outside clarion-store: {offenders:?}"
    );
}

#[test]
fn the_stores_public_face_names_no_driver() {
    let store = workspace().join("crates/clarion-store/src");
    let mut public_face = files(&store.join("model"), ".rs");
    for file in ["lib.rs", "api.rs", "error.rs", "api_key.rs"] {
        public_face.push(store.join(file));
    }
    let offenders: Vec<String> = public_face
        .iter()
        .filter(|file| std::fs::read_to_string(file).unwrap().contains("sqlx"))
        .map(|file| relative(file))
        .collect();
    assert!(
        offenders.is_empty(),
        "the store's public face names sqlx: {offenders:?}"
    );
}

#[test]
fn no_code_compares_a_status_or_channel_with_a_string_literal() {
    let mut offenders = Vec::new();
    for dir in crate_dirs() {
        for file in files(&dir.join("src"), ".rs") {
            let text = std::fs::read_to_string(&file).unwrap();
            for (number, line) in text.lines().enumerate() {
                let compares = ["status", "channel", "kind"].iter().any(|field| {
                    ["==", "!="]
                        .iter()
                        .any(|op| line.contains(&format!("{field} {op} \"")))
                });
                if compares {
                    offenders.push(format!("{}:{}", relative(&file), number + 1));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "status or channel compared with a string (use the enums): {offenders:?}"
    );
}

#[test]
fn the_engine_and_the_simulator_read_no_clock() {
    let root = workspace();
    let mut offenders = Vec::new();
    for dir in ["crates/clarion-engine/src", "crates/clarion-channels/src"] {
        for file in files(&root.join(dir), ".rs") {
            let text = std::fs::read_to_string(&file).unwrap();
            for clock in ["Utc::now", "Local::now", "SystemTime", "Instant"] {
                if text.contains(clock) {
                    offenders.push(format!("{} ({clock})", relative(&file)));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "clock reads in pure code: {offenders:?}"
    );
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    let mut offenders = Vec::new();
    for dir in crate_dirs() {
        for file in files(&dir, ".rs") {
            let text = std::fs::read_to_string(&file).unwrap();
            if !text.starts_with("//!") {
                offenders.push(relative(&file));
            }
        }
    }
    assert!(offenders.is_empty(), "no //! doc at the top: {offenders:?}");
}

#[test]
fn the_architecture_code_map_names_every_crate() {
    let architecture = std::fs::read_to_string(workspace().join("ARCHITECTURE.md")).unwrap();
    let missing: Vec<String> = crate_dirs()
        .iter()
        .map(|dir| relative(dir))
        .filter(|name| !architecture.contains(&format!("### `{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "crates missing from ARCHITECTURE.md's code map: {missing:?}"
    );
}
