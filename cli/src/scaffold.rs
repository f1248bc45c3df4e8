//! `logfleet plugins new NAME --lang rust|python|js`: writes a new plugin project from the
//! templates in the repository's `plugins/`, embedded in this binary at build time (an author
//! needs no checkout), plus the WIT it builds against.
//!
//! The files are the templates as they are, so the scaffold is exactly what CI builds and
//! tests; only the project's name is filled in (Cargo/npm package name). A Rust project needs
//! the filter SDK, which is not published: its `Cargo.toml` points at a checkout's
//! `filters-wasm/sdk` (`--sdk`, default `../filters-wasm/sdk`).

use std::path::{Path, PathBuf};

/// The languages a plugin can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

/// Why a project could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "invalid plugin name '{0}' (1..=64 of a-z, 0-9, '-', '_', starting with a letter or digit)"
    )]
    Name(String),
    #[error("{0} already exists; choose another name or directory")]
    Exists(PathBuf),
    #[error("writing {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// The WIT every plugin builds against.
const WIT: &str = include_str!("../../wit/filter.wit");

/// A file of a template: where it goes in the project, its text, and whether it is a script.
struct File {
    path: &'static str,
    text: &'static str,
    executable: bool,
}

const fn file(path: &'static str, text: &'static str) -> File {
    File {
        path,
        text,
        executable: false,
    }
}

const PYTHON: &[File] = &[
    file(
        "app.py",
        include_str!("../../plugins/python/template/app.py"),
    ),
    file(
        "logfleet_filter.py",
        include_str!("../../plugins/python/template/logfleet_filter.py"),
    ),
    file(
        "test_app.py",
        include_str!("../../plugins/python/template/test_app.py"),
    ),
    file(
        "test_logfleet_filter.py",
        include_str!("../../plugins/python/template/test_logfleet_filter.py"),
    ),
    file(
        "README.md",
        include_str!("../../plugins/python/template/README.md"),
    ),
    File {
        path: "build.sh",
        text: include_str!("../../plugins/python/template/build.sh"),
        executable: true,
    },
    file("wit/filter.wit", WIT),
];

const JS: &[File] = &[
    file(
        "filter.js",
        include_str!("../../plugins/js/template/filter.js"),
    ),
    file(
        "logfleet-filter.js",
        include_str!("../../plugins/js/template/logfleet-filter.js"),
    ),
    file(
        "filter.test.js",
        include_str!("../../plugins/js/template/filter.test.js"),
    ),
    file(
        "logfleet-filter.test.js",
        include_str!("../../plugins/js/template/logfleet-filter.test.js"),
    ),
    file(
        "package.json",
        include_str!("../../plugins/js/template/package.json"),
    ),
    file(
        "README.md",
        include_str!("../../plugins/js/template/README.md"),
    ),
    File {
        path: "build.sh",
        text: include_str!("../../plugins/js/template/build.sh"),
        executable: true,
    },
    file("wit/filter.wit", WIT),
];

const RUST: &[File] = &[
    file(
        "src/lib.rs",
        include_str!("../../plugins/template/src/lib.rs"),
    ),
    file("Cargo.toml", RUST_MANIFEST),
];

/// A standalone manifest for the Rust template (the repository's inherits its workspace's).
const RUST_MANIFEST: &str = r#"[package]
name = "NAME"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
# The LogFleet filter SDK, from a checkout of the LogFleet repository.
logfleet-filter-sdk = { path = "SDK" }
serde = { version = "1", features = ["derive"] }

# Build: cargo build --release --target wasm32-wasip2  (→ target/wasm32-wasip2/release/*.wasm)
[profile.release]
opt-level = 3
lto = true
codegen-units = 1
strip = true
panic = "abort"
"#;

/// Writes a new `lang` project for plugin `name` into `dir` (which must not exist). `sdk` is
/// the path a Rust project's manifest gives for the SDK. Returns the files written.
pub fn scaffold(
    name: &str,
    lang: Lang,
    dir: &Path,
    sdk: &str,
) -> Result<Vec<PathBuf>, ScaffoldError> {
    if !logfleet_protocol::filters::valid_plugin_name(name) {
        return Err(ScaffoldError::Name(name.to_owned()));
    }
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir.to_owned()));
    }
    let files = match lang {
        Lang::Rust => RUST,
        Lang::Python => PYTHON,
        Lang::Js => JS,
    };
    let mut written = Vec::new();
    for file in files {
        let path = dir.join(file.path);
        let text = personalise(file, name, sdk);
        write(&path, &text, file.executable).map_err(|error| ScaffoldError::Write {
            path: path.clone(),
            error,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// The template's text with the project's name (and the Rust SDK's path) filled in.
fn personalise(file: &File, name: &str, sdk: &str) -> String {
    match file.path {
        "Cargo.toml" => file.text.replace("NAME", name).replace("SDK", sdk),
        "package.json" => file.text.replace(
            "\"name\": \"logfleet-filter\"",
            &format!("\"name\": \"{name}\""),
        ),
        _ => file.text.to_owned(),
    }
}

fn write(path: &Path, text: &str, executable: bool) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text)?;
    #[cfg(unix)]
    if executable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    #[cfg(not(unix))]
    let _ = executable;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Each language's project holds its template's files verbatim (what CI builds), the WIT
    /// where its build script looks, and the name filled in.
    #[test]
    fn projects_hold_the_templates_and_the_name() {
        let root = tempfile::tempdir().unwrap();
        for (lang, entry, marker) in [
            (Lang::Python, "app.py", "WitWorld = export("),
            (Lang::Js, "filter.js", "exportFilter("),
            (Lang::Rust, "src/lib.rs", "export_filter!("),
        ] {
            let dir = root.path().join(format!("{lang:?}"));
            let files = scaffold("my-filter", lang, &dir, "/sdk").unwrap();
            assert!(files.iter().all(|f| f.starts_with(&dir)));
            let text = std::fs::read_to_string(dir.join(entry)).unwrap();
            assert!(text.contains(marker), "{lang:?}");
            if lang != Lang::Rust {
                assert_eq!(
                    std::fs::read_to_string(dir.join("wit/filter.wit")).unwrap(),
                    WIT
                );
            }
        }
        let manifest = std::fs::read_to_string(root.path().join("Rust/Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"my-filter\""), "{manifest}");
        assert!(manifest.contains("path = \"/sdk\""), "{manifest}");
        let package = std::fs::read_to_string(root.path().join("Js/package.json")).unwrap();
        assert!(package.contains("\"name\": \"my-filter\""), "{package}");
    }

    /// Nothing is overwritten, and a name the host would refuse is refused here first.
    #[test]
    fn refuses_an_existing_directory_and_a_bad_name() {
        let root = tempfile::tempdir().unwrap();
        assert!(matches!(
            scaffold("ok", Lang::Python, root.path(), ""),
            Err(ScaffoldError::Exists(_))
        ));
        assert!(matches!(
            scaffold("Bad/Name", Lang::Js, &root.path().join("x"), ""),
            Err(ScaffoldError::Name(_))
        ));
    }
}
