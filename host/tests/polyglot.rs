//! Plugins written in Python and JavaScript with the kits in `plugins/python` and `plugins/js`,
//! built by their real toolchains (componentize-py, componentize-js; `scripts/setup.sh`
//! installs them), uploaded to a real host and run in live sessions on a real agent; and a
//! component knocking on every WASI door in a live session.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::{Api, PluginLang, Stack, WsClient, plugin_bytes, polyglot_plugin_path, skip_until};

async fn upload(api: &Api, name: &str, bytes: Vec<u8>) {
    let (status, body) = api
        .post_raw(&format!("/api/v1/plugins?name={name}"), bytes)
        .await;
    assert_eq!(status, 201, "{name}: {body}");
}

/// Reads `client` until a log message satisfying `last`, returning every log message's text
/// that is not a probe line, in order.
async fn read_until(client: &mut WsClient, last: impl Fn(&str) -> bool) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let msg = client.expect().await;
        assert_ne!(msg["event"], "filter_error", "{msg}");
        if msg["type"] != "log" {
            continue;
        }
        let text = msg["message"].as_str().unwrap().to_owned();
        if text.contains("probe") {
            continue;
        }
        let done = last(&text);
        seen.push(text);
        if done {
            return seen;
        }
    }
}

/// Lines a Python or JavaScript plugin keeps or drops in a live session are exactly the ones
/// its code says: the Python template (contains "keep"), the Python json-field example
/// (`status == 500`), the JavaScript template (contains "keep", tagged) and the JavaScript
/// sampler (one in two), all from one upload each, side by side on one agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_plugins_filter_live_sessions() {
    let plugins = [
        (
            "py-contains",
            PluginLang::Python,
            "template",
            json!({"contains": "keep"}),
        ),
        (
            "py-json",
            PluginLang::Python,
            "json-field",
            json!({"field": "status", "equals": 500}),
        ),
        (
            "js-contains",
            PluginLang::Js,
            "template",
            json!({"contains": "keep", "tag": "[js]"}),
        ),
        (
            "js-sampler",
            PluginLang::Js,
            "sampler",
            json!({"one_in": 2}),
        ),
    ];
    // Built before the stack starts, so a first build's ~15-60 s count against no deadline.
    let built: Vec<_> = plugins
        .iter()
        .map(|(_, lang, dir, _)| std::fs::read(polyglot_plugin_path(*lang, dir)).unwrap())
        .collect();
    let stack = Stack::new().await;
    let mut sessions = Vec::new();
    for ((name, _, _, config), bytes) in plugins.iter().zip(built) {
        upload(&stack.admin, name, bytes).await;
        sessions.push(
            stack
                .start(json!({"filters": {"source": "nginx", "plugins": [{"name": name, "config": config}]}}))
                .await,
        );
    }
    // Sessions start in order: once the plain one started last streams, all are active. The
    // first use of each component compiles it (tens of seconds on a loaded machine), so
    // clients connect only now: an idle client would not answer the host's pings meanwhile.
    let plain = stack.start(json!({"filters": {"source": "nginx"}})).await;
    let mut plain_client = stack.client(&plain).await;
    stack
        .sync("nginx.log", |n| format!("probe {n}"), &mut plain_client)
        .await;
    let mut clients = Vec::new();
    for session in &sessions {
        clients.push(stack.client(session).await);
    }
    // Sessions start when their plugin is compiled, each in its own time: warm-up lines every
    // plugin keeps (one in two for the sampler) go out until each client has had one, so all
    // four see the lines below. `read_until` skips them ("probe").
    let mut warmed = vec![false; clients.len()];
    for n in 0.. {
        assert!(
            n < 600,
            "the plugin sessions never all streamed: {warmed:?}"
        );
        let warm = format!(r#"{{"status": 500, "note": "keep probe {n}"}}"#);
        stack.logs.append("nginx.log", &[&warm]).await;
        for (client, warmed) in clients.iter_mut().zip(warmed.iter_mut()) {
            while !*warmed {
                match client.next(Duration::from_millis(100)).await {
                    Ok(msg) if msg["type"] == "log" => *warmed = true,
                    Ok(msg) => assert_ne!(msg["event"], "filter_error", "{msg}"),
                    Err(_) => break,
                }
            }
        }
        if warmed.iter().all(|w| *w) {
            break;
        }
    }

    let lines = [
        r#"{"status": 500, "note": "keep a"}"#,
        r#"{"status": 200, "note": "keep b"}"#,
        "drop c",
        r#"{"status": 500, "note": "d"}"#,
        r#"{"status": 500, "note": "keep end 1"}"#,
        r#"{"status": 500, "note": "keep end 2"}"#,
    ];
    stack.logs.append("nginx.log", &lines).await;
    let [a, b, c, d, e1, e2] = lines;
    let tagged = |l: &str| format!("[js] {l}");

    let mut clients = clients.into_iter();
    let mut py_contains = clients.next().unwrap();
    assert_eq!(
        read_until(&mut py_contains, |m| m == e2).await,
        [a, b, e1, e2]
    );
    let mut py_json = clients.next().unwrap();
    assert_eq!(read_until(&mut py_json, |m| m == e2).await, [a, d, e1, e2]);
    let mut js_contains = clients.next().unwrap();
    assert_eq!(
        read_until(&mut js_contains, |m| m == tagged(e2)).await,
        [tagged(a), tagged(b), tagged(e1), tagged(e2)]
    );
    // One in two of everything it saw, probes included: every other line, from either end.
    let mut js_sampler = clients.next().unwrap();
    let sampled = read_until(&mut js_sampler, |m| m.contains("end")).await;
    assert!(
        sampled == [a, c, e1] || sampled == [b, d, e2],
        "{sampled:?}"
    );
}

/// A component that tries every WASI door — read `/etc/passwd`, list `/`, connect to a
/// listening TCP port, read the environment, arguments and stdin, flood stdout — gets a denial
/// (or nothing) for each in a live session, nothing reaches the port, and the session and the
/// agent carry on streaming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_doors_are_shut_in_a_live_session() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let stack = Stack::new().await;
    upload(&stack.admin, "knock", plugin_bytes("hostile-wasi")).await;
    let session = stack
        .start(json!({"filters": {"source": "nginx", "plugins": [
            {"name": "knock", "config": {"connect": target, "print": 1000}}
        ]}}))
        .await;
    let mut client = stack.client(&session).await;
    // The first line the plugin sees comes back as its report.
    let report: Value = loop {
        stack.logs.append("nginx.log", &["knock knock"]).await;
        match client.next(Duration::from_millis(200)).await {
            Ok(msg) if msg["type"] == "log" => {
                break serde_json::from_str(msg["message"].as_str().unwrap()).unwrap();
            }
            Ok(msg) => panic!("unexpected {msg}"),
            Err(testkit::WsEnd::Timeout) => continue,
            Err(e) => panic!("session ended: {e:?}"),
        }
    };
    let cwd = std::env::current_dir().unwrap().display().to_string();
    assert_ne!(
        report["cwd"],
        cwd.as_str(),
        "the host's working directory stays hidden"
    );
    for door in ["file", "dir", "connect"] {
        let got = report[door].as_str().unwrap();
        assert!(got.starts_with("denied: "), "{door}: {got}");
    }
    assert_eq!(report["env"], json!([]), "{report}");
    assert_eq!(report["args"], json!([]), "{report}");
    assert_eq!(report["stdin"], "0 bytes", "{report}");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "nothing may reach the port"
    );
    // The session carries on: later lines pass through the plugin unchanged.
    stack.logs.append("nginx.log", &["still streaming"]).await;
    skip_until(&mut client, "still streaming").await;
    let (_, agent) = stack
        .api
        .get(&format!("/api/v1/agents/{}", stack.agent_id))
        .await;
    assert_eq!(agent["agent"]["status"], "online");
}
