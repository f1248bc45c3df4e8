//! Test plugin: on its first batch, knocks on every WASI door a component can import — open
//! and list files, connect a TCP socket (to `{"connect": "127.0.0.1:PORT"}`), read the
//! environment, arguments and stdin, and flood stdout/stderr — then rewrites record 0 with a
//! JSON report of what each attempt got (`"denied: <error>"` or what leaked). It keeps
//! running afterwards, so a test can also see the session carry on. With `sleep_secs` it
//! sleeps in every batch first (a host call that blocks).

use std::io::{Read, Write};

use logfleet_filter_sdk::{Batch, Fields, Filter, Verdicts, export_filter, parse_config};
use serde::Deserialize;

/// Where to connect to.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    connect: Option<String>,
    /// Lines to print to stdout on the first batch (the log capture's bounds).
    #[serde(default)]
    print: usize,
    /// Seconds to sleep (a WASI clock pollable, blocked on) in every batch before deciding:
    /// a host call that waits must not outlive the call's CPU deadline.
    #[serde(default)]
    sleep_secs: u64,
}

/// The door-knocking filter.
struct Knock {
    config: Config,
    reported: bool,
}

fn denied<T>(result: std::io::Result<T>, leaked: impl FnOnce(T) -> String) -> String {
    match result {
        Ok(value) => format!("LEAKED: {}", leaked(value)),
        Err(e) => format!("denied: {e}"),
    }
}

impl Knock {
    fn report(&self) -> String {
        let file = denied(std::fs::read_to_string("/etc/passwd"), |s| s);
        let dir = denied(std::fs::read_dir("/"), |d| format!("{} entries", d.count()));
        // wasi-libc answers "/" when the host gives no working directory: not the host's.
        let cwd = match std::env::current_dir() {
            Ok(path) => path.display().to_string(),
            Err(e) => format!("denied: {e}"),
        };
        let connect = match &self.config.connect {
            Some(addr) => denied(std::net::TcpStream::connect(addr.as_str()), |_| {
                format!("connected to {addr}")
            }),
            None => "not tried".to_owned(),
        };
        let env: Vec<String> = std::env::vars().map(|(k, v)| k + "=" + &v).collect();
        let args: Vec<String> = std::env::args().collect();
        let mut stdin = String::new();
        // Reading stdin is allowed; what matters is that it holds nothing.
        let stdin = match std::io::stdin().read_to_string(&mut stdin) {
            Ok(n) => format!("{n} bytes"),
            Err(e) => format!("error: {e}"),
        };
        for i in 0..self.config.print {
            println!("hostile-wasi line {i}");
        }
        let _ = writeln!(std::io::stderr(), "hostile-wasi on stderr");
        serde_json::json!({
            "file": file,
            "dir": dir,
            "cwd": cwd,
            "connect": connect,
            "env": env,
            "args": args,
            "stdin": stdin,
        })
        .to_string()
    }
}

impl Filter for Knock {
    const FIELDS: Fields = Fields::empty();

    fn configure(config: &str) -> Result<Self, String> {
        Ok(Knock {
            config: parse_config(config)?,
            reported: false,
        })
    }

    fn batch(&mut self, _batch: &Batch<'_>, verdicts: &mut Verdicts) {
        if self.config.sleep_secs > 0 {
            std::thread::sleep(std::time::Duration::from_secs(self.config.sleep_secs));
        }
        if !self.reported && !verdicts.is_empty() {
            self.reported = true;
            verdicts.rewrite(0, self.report());
        }
    }
}

export_filter!(Knock);
