//! Builds the built-in filters (`filters-wasm/`: `level`, `source`, `pattern`) as
//! `wasm32-wasip2` components and copies them to `OUT_DIR`, where `src/builtins.rs` embeds them.
//!
//! The nested cargo runs in a clean environment (nothing of this build's `CARGO_*`,
//! `RUSTFLAGS`, wrappers or jobserver leaks in) with its own target dir,
//! `filters-wasm/target`, shared by every host profile so the guests build once.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, exit};

/// The guest target; installed with `rustup target add wasm32-wasip2`.
const GUEST_TARGET: &str = "wasm32-wasip2";
/// Built-in name → crate artifact name.
const BUILTINS: [(&str, &str); 3] = [
    ("level", "logfleet_filter_level"),
    ("source", "logfleet_filter_source"),
    ("pattern", "logfleet_filter_pattern"),
];
/// Environment variables cargo gives build scripts that must not reach the nested build.
const LEAKING_VARS: [&str; 14] = [
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_LINKER",
    "MAKEFLAGS",
    "MFLAGS",
    "TARGET",
    "HOST",
    "OPT_LEVEL",
    "PROFILE",
    "DEBUG",
    "OUT_DIR",
    "NUM_JOBS",
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let repo = manifest_dir.parent().unwrap_or(Path::new("..")).to_owned();
    let guests = repo.join("filters-wasm");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());

    for path in [
        ".cargo",
        "Cargo.toml",
        "Cargo.lock",
        "sdk",
        "level",
        "source",
        "pattern",
    ] {
        println!("cargo::rerun-if-changed={}", guests.join(path).display());
    }
    println!("cargo::rerun-if-changed={}", repo.join("wit").display());

    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    if !target_installed(&rustc) {
        fail(&format!(
            "the `{GUEST_TARGET}` Rust target is missing; the built-in filters are WebAssembly \
             components built for it. Run `rustup target add {GUEST_TARGET}`"
        ));
    }

    let target_dir = guests.join("target");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&guests)
        .args(["build", "--release", "--locked", "--target", GUEST_TARGET])
        .args(
            BUILTINS
                .iter()
                .flat_map(|(name, _)| ["-p".to_owned(), format!("logfleet-filter-{name}")]),
        )
        .arg("--target-dir")
        .arg(&target_dir);
    for (key, _) in env::vars_os() {
        let key_str = key.to_string_lossy();
        let keep = key_str == "CARGO_HOME"
            || key_str.starts_with("CARGO_NET_")
            || key_str.starts_with("CARGO_HTTP_")
            || key_str.starts_with("CARGO_REGISTRIES_");
        if (key_str.starts_with("CARGO_") && !keep) || LEAKING_VARS.contains(&&*key_str) {
            command.env_remove(&key);
        }
    }
    match command.status() {
        Ok(status) if status.success() => {}
        Ok(status) => fail(&format!(
            "building the built-in filters in {} failed ({status}); see the output above",
            guests.display()
        )),
        Err(e) => fail(&format!("cannot run cargo for the built-in filters: {e}")),
    }

    for (name, artifact) in BUILTINS {
        let built = target_dir
            .join(GUEST_TARGET)
            .join("release")
            .join(format!("{artifact}.wasm"));
        if let Err(e) = std::fs::copy(&built, out_dir.join(format!("{name}.wasm"))) {
            fail(&format!("cannot copy {}: {e}", built.display()));
        }
    }
}

/// Whether the toolchain has the guest target's standard library.
fn target_installed(rustc: &std::ffi::OsStr) -> bool {
    let Ok(output) = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", GUEST_TARGET])
        .output()
    else {
        return false;
    };
    let libdir = String::from_utf8_lossy(&output.stdout);
    output.status.success() && Path::new(libdir.trim()).is_dir()
}

/// Stops the build with `message` shown as cargo's error.
fn fail(message: &str) -> ! {
    println!("cargo::error={message}");
    exit(1);
}
