//! `logfleet-agent filter-test`: runs a session's filters over lines from stdin, with the
//! agent's own runtime and bounds, and prints what is kept — so a plugin author can try a
//! plugin without a host.
//!
//! Lines are read as the tailer reads them (split on `\n`, a trailing `\r` dropped, cut at
//! [`MAX_LINE_BYTES`], lossy UTF-8), their level is detected by the agent's parser, and they
//! go through the chain in batches of at most [`MAX_BATCH_LINES`], as tail batches do. A batch
//! is also run whenever no more input is buffered, so interactive use sees output promptly.
//!
//! Filters fail closed, as in a live session: a filter that cannot start is an error, and the
//! first filter that fails while running (trap, deadline, memory cap) is reported on stderr,
//! naming it and the cause; no line is printed after that, including the lines of the batch it
//! failed on that other filters had already kept, and the input is not read further. The
//! binary then exits with [`EXIT_FILTER_FAILED`].

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use logfleet_protocol::agent::Record;
use logfleet_protocol::filters::{FilterError, FilterSpec};
use tracing::info;

use crate::config::{self, ConfigError};
use crate::filter::{self, ChainBuilder, ChainError, FilterFailure, RuntimeError};
use crate::parse::detect_level;
use crate::plugins::{PluginStore, PluginStoreError};
use crate::tail::{MAX_BATCH_LINES, MAX_LINE_BYTES};
use crate::time::now_ms;

/// The `file` of every record read from stdin.
pub const STDIN_FILE: &str = "<stdin>";
/// Exit status of `logfleet-agent filter-test` when a filter failed while running (1 is bad
/// input or a filter that cannot start; 2 is a usage error).
pub const EXIT_FILTER_FAILED: u8 = 3;

/// Input read ahead; a batch is run whenever this runs dry.
const INPUT_BUFFER_BYTES: usize = 64 * 1024;

/// What `filter-test` was asked to do.
#[derive(Debug, Clone)]
pub struct FilterTest {
    /// The session's `filters` object, as JSON (the REST start request's `filters`).
    pub filters_json: String,
    /// Plugin components; each supplies the plugin named like its file stem (`redact.wasm`
    /// for `redact`; cargo's `json_field.wasm` also serves `json-field`).
    pub plugin_files: Vec<PathBuf>,
    /// The source name records carry (what `filters.source` matches).
    pub source: String,
    /// Cache directory for compiled components; `None` uses the agent's default location.
    pub cache_dir: Option<PathBuf>,
}

/// What a run saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Lines read.
    pub lines: u64,
    /// Lines printed.
    pub kept: u64,
    /// The filter that failed while running, which ended the run.
    pub failure: Option<FilterFailure>,
    /// Lines of the failing batch no filter had rejected: not printed.
    pub undecided: u64,
}

/// Why `filter-test` could not run. The text is for the person at the terminal; each variant
/// carries its cause in its message (no separate `source`, so nothing prints twice).
#[derive(Debug, thiserror::Error)]
pub enum FilterTestError {
    #[error("--filters is not a valid filters object: {0}")]
    Json(serde_json::Error),
    #[error("--filters: {0}")]
    Filters(FilterError),
    #[error("cannot read plugin {path}: {error}")]
    ReadPlugin { path: String, error: io::Error },
    #[error("--plugin {path}: {error}")]
    BadPlugin {
        path: String,
        error: PluginStoreError,
    },
    #[error("--plugin {0}: expected a file named <plugin name>.wasm")]
    PluginFileName(String),
    #[error("--plugin given twice for plugin '{0}'")]
    DuplicatePlugin(String),
    #[error(
        "plugin '{0}' is named in --filters but no --plugin file supplies it (expected {0}.wasm)"
    )]
    MissingPlugin(String),
    #[error(transparent)]
    CacheDir(#[from] ConfigError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("reading stdin: {0}")]
    Input(io::Error),
    #[error("writing output: {0}")]
    Output(io::Error),
}

impl FilterTest {
    /// Runs the filters over `input`, printing kept messages (rewritten if a filter rewrote
    /// them) to `output`, one per line. A filter failing while running ends the run: it is
    /// reported on `errors` and in the summary, and nothing more is printed. Blocking.
    pub fn run(
        &self,
        input: impl Read,
        mut output: impl Write,
        mut errors: impl Write,
    ) -> Result<Summary, FilterTestError> {
        let spec: FilterSpec =
            serde_json::from_str(&self.filters_json).map_err(FilterTestError::Json)?;
        let mut filters = spec.validate().map_err(FilterTestError::Filters)?;
        let components = read_plugin_files(&self.plugin_files)?;

        let cache_dir = config::resolve_cache_dir(self.cache_dir.as_deref())?;
        // Plugins come from the files given, never from (or into) the agent's plugin cache.
        let builder = ChainBuilder::new(
            // One-shot: measure and report the code sessions end up running.
            filter::agent_runtime(cache_dir.as_deref(), false)?,
            PluginStore::in_memory(),
        );
        let mut used = Vec::new();
        for plugin in &mut filters.plugins {
            let (path, bytes) = [plugin.name.clone(), plugin.name.replace('-', "_")]
                .iter()
                .find_map(|stem| components.get(stem))
                .ok_or_else(|| FilterTestError::MissingPlugin(plugin.name.clone()))?;
            // Named by content, as the host does, so the compiled-component cache applies.
            plugin.digest = logfleet_filter_runtime::digest(bytes);
            builder
                .plugins()
                .put(&plugin.digest, bytes.clone())
                .map_err(|error| FilterTestError::BadPlugin {
                    path: path.display().to_string(),
                    error,
                })?;
            used.push(path.clone());
        }
        for path in components.values().map(|(path, _)| path) {
            if !used.contains(path) {
                let _ = writeln!(
                    errors,
                    "warning: --plugin {} is not named in --filters; ignored",
                    path.display()
                );
            }
        }
        let mut chain = builder
            .runtime()
            .chain(&filters, builder.plugins().as_ref())?;
        info!(filters = ?chain.filters().collect::<Vec<_>>(), "filter chain ready");

        let mut summary = Summary::default();
        let mut reader = LineReader::new(input);
        let mut batch: Vec<Record> = Vec::with_capacity(MAX_BATCH_LINES);
        let mut eof = false;
        while !eof {
            batch.clear();
            while batch.len() < MAX_BATCH_LINES {
                let Some(text) = reader.next_line().map_err(FilterTestError::Input)? else {
                    eof = true;
                    break;
                };
                summary.lines += 1;
                batch.push(Record {
                    seq: summary.lines,
                    timestamp_ms: now_ms(),
                    level: detect_level(&text),
                    source: self.source.clone(),
                    file: STDIN_FILE.to_owned(),
                    line: summary.lines,
                    message: text,
                    event_ms: None,
                    fields: None,
                    raw: None,
                });
                if !reader.has_buffered() {
                    break;
                }
            }
            if batch.is_empty() {
                continue;
            }
            let out = chain.apply(&batch);
            if let Some(failure) = out.failure {
                let _ = writeln!(
                    errors,
                    "error: filter '{}' failed: {}; filters fail closed, so the {} line(s) it \
                     had not decided were not printed and no further input was read",
                    failure.plugin, failure.message, out.undecided
                );
                summary.failure = Some(failure);
                summary.undecided = out.undecided;
                break;
            }
            for kept in out.kept {
                let message = match &kept.message {
                    Some(rewritten) => rewritten.as_str(),
                    None => batch
                        .get(kept.index as usize)
                        .map_or("", |r| r.message.as_str()),
                };
                writeln!(output, "{message}").map_err(FilterTestError::Output)?;
                summary.kept += 1;
            }
            output.flush().map_err(FilterTestError::Output)?;
        }
        Ok(summary)
    }
}

/// Reads each `--plugin` file, keyed by file stem.
fn read_plugin_files(
    files: &[PathBuf],
) -> Result<HashMap<String, (PathBuf, Vec<u8>)>, FilterTestError> {
    let mut components = HashMap::new();
    for path in files {
        let stem = plugin_stem(path)
            .ok_or_else(|| FilterTestError::PluginFileName(path.display().to_string()))?;
        let bytes = std::fs::read(path).map_err(|error| FilterTestError::ReadPlugin {
            path: path.display().to_string(),
            error,
        })?;
        if components
            .insert(stem.clone(), (path.clone(), bytes))
            .is_some()
        {
            return Err(FilterTestError::DuplicatePlugin(stem));
        }
    }
    Ok(components)
}

/// `redact` for `…/redact.wasm`.
fn plugin_stem(path: &Path) -> Option<String> {
    if path.extension()? != "wasm" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    (!stem.is_empty()).then(|| stem.to_owned())
}

/// Lines of `input`, cut like the tailer cuts them, never holding more than
/// [`MAX_LINE_BYTES`] of one line.
struct LineReader<R> {
    input: BufReader<R>,
    line: Vec<u8>,
}

impl<R: Read> LineReader<R> {
    fn new(input: R) -> Self {
        LineReader {
            input: BufReader::with_capacity(INPUT_BUFFER_BYTES, input),
            line: Vec::new(),
        }
    }

    /// The next line, or `None` at the end of input. A last line without `\n` counts.
    fn next_line(&mut self) -> io::Result<Option<String>> {
        self.line.clear();
        let mut overlong = false;
        let mut read_any = false;
        loop {
            let available = match self.input.fill_buf() {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                if !read_any {
                    return Ok(None);
                }
                break;
            }
            read_any = true;
            let newline = memchr::memchr(b'\n', available);
            let content = &available[..newline.unwrap_or(available.len())];
            let room = MAX_LINE_BYTES - self.line.len();
            if content.len() > room {
                overlong = true;
            }
            self.line
                .extend_from_slice(&content[..content.len().min(room)]);
            let consumed = newline.map_or(available.len(), |i| i + 1);
            self.input.consume(consumed);
            if newline.is_some() {
                break;
            }
        }
        if !overlong && self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        Ok(Some(String::from_utf8_lossy(&self.line).into_owned()))
    }

    /// Whether more input is already buffered (reading on would not wait).
    fn has_buffered(&self) -> bool {
        !self.input.buffer().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8]) -> Vec<String> {
        let mut reader = LineReader::new(input);
        std::iter::from_fn(|| reader.next_line().unwrap()).collect()
    }

    #[test]
    fn lines_are_cut_like_the_tailer_cuts_them() {
        assert_eq!(lines(b"a\r\nb\n\nlast"), ["a", "b", "", "last"]);
        assert!(lines(b"").is_empty());
        assert_eq!(lines(b"\xffok\n"), ["\u{fffd}ok"]);
        let mut long = vec![b'x'; MAX_LINE_BYTES + 10];
        long.extend_from_slice(b"\nnext\n");
        let got = lines(&long);
        assert_eq!(got[0].len(), MAX_LINE_BYTES);
        assert_eq!(got[1], "next");
    }

    #[test]
    fn plugin_files_are_named_by_stem() {
        assert_eq!(
            plugin_stem(Path::new("target/x/json_field.wasm")).as_deref(),
            Some("json_field")
        );
        assert_eq!(plugin_stem(Path::new("redact.wat")), None);
        assert_eq!(plugin_stem(Path::new(".wasm")), None);
    }

    fn run(filters: &str, input: &str) -> Result<(String, Summary), FilterTestError> {
        let test = FilterTest {
            filters_json: filters.into(),
            plugin_files: vec![],
            source: "stdin".into(),
            cache_dir: crate::filter::tests::test_cache_dir(),
        };
        let mut out = Vec::new();
        let summary = test.run(input.as_bytes(), &mut out, io::sink())?;
        Ok((String::from_utf8(out).unwrap(), summary))
    }

    #[test]
    fn builtins_filter_stdin() {
        let (out, summary) = run(
            r#"{"level":["error"],"source":"stdin","pattern":"time"}"#,
            "ERROR timeout\nINFO timeout\nERROR fine\nERROR time again",
        )
        .unwrap();
        assert_eq!(out, "ERROR timeout\nERROR time again\n");
        assert_eq!(summary.lines, 4);
        assert_eq!(summary.kept, 2);
        let (out, _) = run(r#"{"source":"nginx"}"#, "a\nb\n").unwrap();
        assert_eq!(out, "");
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(matches!(run("{", ""), Err(FilterTestError::Json(_))));
        assert!(matches!(
            run(r#"{"levels":["ERROR"]}"#, ""),
            Err(FilterTestError::Json(_))
        ));
        assert!(matches!(
            run(r#"{"level":["LOUD"]}"#, ""),
            Err(FilterTestError::Filters(_))
        ));
        let err = run(r#"{"plugins":[{"name":"redact"}]}"#, "").unwrap_err();
        assert!(err.to_string().contains("redact.wasm"), "{err}");
    }
}
