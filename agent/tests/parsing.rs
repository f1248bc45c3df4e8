//! Parsed records, end to end through a real host and agent: clients get a line's message
//! without the prefix a logger put before it, the line's own time as `timestamp` (the read time
//! in `metadata.read_at`), and a structured line's other keys in `metadata.fields`; `pattern`
//! still matches the line as written.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use logfleet_protocol::parse::{Format, Timezone};
use serde_json::json;
use testkit::Stack;

/// The reference's nginx line arrives as the reference shows it: its message, its level and
/// its own time, with the time the agent read it beside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_nginx_line_arrives_parsed() {
    let stack = Stack::new().await;
    let session = stack.start(json!({"filters": {"source": "nginx"}})).await;
    let mut client = stack.client(&session).await;
    stack
        .sync("nginx.log", |n| format!("probe {n}"), &mut client)
        .await;
    stack
        .logs
        .append(
            "nginx.log",
            &["2024/01/15 10:00:00 [error] 1234#0: *5 upstream timed out (110: Connection timed out)"],
        )
        .await;
    let log = client.expect_log().await;
    assert_eq!(
        log["message"],
        "upstream timed out (110: Connection timed out)"
    );
    assert_eq!(log["level"], "ERROR");
    assert_eq!(log["timestamp"], "2024-01-15T10:00:00.000Z");
    assert_eq!(log["agent_id"], stack.agent_id.to_string());
    let read_at = log["metadata"]["read_at"].as_str().unwrap();
    assert!(read_at > "2026", "{read_at}");
    assert!(log["metadata"].get("fields").is_none(), "{log}");
}

/// A JSON line gives its message, level, time and other keys; a logfmt line too, and a
/// `pattern` on a key that went to `fields` still matches (grep semantics on the line).
/// Zone-less times are read in the source's `timezone`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_lines_give_fields_and_pattern_matches_the_line() {
    let stack = Stack::new_with(
        |_| {},
        |agent| {
            let api = agent
                .sources
                .iter_mut()
                .find(|s| s.name == "api-gateway")
                .unwrap();
            api.format = Format::Auto;
            api.timezone = "+02:00".parse::<Timezone>().unwrap();
        },
    )
    .await;
    let session = stack
        .start(json!({"filters": {"source": "api-gateway", "pattern": "user_id=12345|probe"}}))
        .await;
    let mut client = stack.client(&session).await;
    stack
        .sync("api.log", |n| format!("probe {n}"), &mut client)
        .await;
    stack
        .logs
        .append(
            "api.log",
            &[
                r#"{"ts":"2024-01-15T10:00:01Z","level":"warn","msg":"slow query","user_id=12345":true,"db":{"ms":812}}"#,
                r#"time="2024-01-15 12:00:02" level=error msg="payment failed" user_id=12345 retry"#,
                r#"time="2024-01-15 12:00:03" level=error msg="other user" user_id=999"#,
                "probe end",
            ],
        )
        .await;
    let json_line = client.expect_log().await;
    assert_eq!(json_line["message"], "slow query");
    assert_eq!(json_line["level"], "WARN");
    assert_eq!(json_line["timestamp"], "2024-01-15T10:00:01.000Z");
    assert_eq!(
        json_line["metadata"]["fields"],
        json!({"user_id=12345": true, "db": {"ms": 812}})
    );
    let logfmt = client.expect_log().await;
    assert_eq!(logfmt["message"], "payment failed");
    assert_eq!(logfmt["level"], "ERROR");
    // 12:00:02 at +02:00.
    assert_eq!(logfmt["timestamp"], "2024-01-15T10:00:02.000Z");
    assert_eq!(
        logfmt["metadata"]["fields"],
        json!({"user_id": "12345", "retry": true})
    );
    // `user_id=999` does not match the pattern: the next line is the closing probe.
    assert_eq!(client.expect_log().await["message"], "probe end");
}

/// A Java stack trace written to a source arrives as one record (its first line's number,
/// the whole trace as the message), and the line after it as its own record, without waiting
/// for more input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_trace_is_one_record() {
    let stack = Stack::new().await;
    let session = stack.start(json!({"filters": {"source": "nginx"}})).await;
    let mut client = stack.client(&session).await;
    stack
        .sync("nginx.log", |n| format!("probe {n}"), &mut client)
        .await;
    stack
        .logs
        .append(
            "nginx.log",
            &[
                "2024-01-15T10:00:00Z ERROR request failed",
                "java.lang.IllegalStateException: boom",
                "\tat com.example.Foo.bar(Foo.java:10)",
                "\tat com.example.Main.main(Main.java:3)",
                "Caused by: java.io.IOException: disk full",
                "\t... 2 more",
            ],
        )
        .await;
    let first = client.expect_log().await;
    assert_eq!(first["message"], "request failed", "{first}");
    let trace = client.expect_log().await;
    let message = trace["message"].as_str().unwrap();
    assert!(
        message.starts_with("java.lang.IllegalStateException: boom\n\tat com.example.Foo"),
        "{trace}"
    );
    assert!(
        message.ends_with("Caused by: java.io.IOException: disk full\n\t... 2 more"),
        "{trace}"
    );
    assert_eq!(
        trace["metadata"]["line"].as_u64().unwrap(),
        first["metadata"]["line"].as_u64().unwrap() + 1
    );
    // The last record goes out after a short quiet period, not when the next line comes.
    stack.logs.append("nginx.log", &["INFO next"]).await;
    assert_eq!(client.expect_log().await["message"], "next");
}

/// `seq` only increases in the order clients receive records, whatever multiline holds back:
/// an ERROR line (held a moment for a stack trace) and a line of another file read with it both
/// arrive, in ascending `seq`, so no client drops either as a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_ascends_in_delivery_order_across_files() {
    let stack = Stack::new().await;
    let session = stack.start(json!({})).await;
    let mut client = stack.client(&session).await;
    stack
        .sync("nginx.log", |n| format!("probe {n}"), &mut client)
        .await;
    stack
        .logs
        .append("nginx.log", &["ERROR held for a trace"])
        .await;
    stack
        .logs
        .append("api.log", &["INFO from another file"])
        .await;
    let mut seqs = Vec::new();
    let mut messages = Vec::new();
    while messages.len() < 2 {
        let log = client.expect_log().await;
        seqs.push(log["seq"].as_u64().unwrap());
        messages.push(log["message"].as_str().unwrap().to_owned());
    }
    messages.sort();
    assert_eq!(messages, ["from another file", "held for a trace"]);
    assert!(seqs[0] < seqs[1], "{seqs:?}");
}
