//! Connection bounds of the host's accept loop: header, body and TLS handshake read timeouts,
//! and the connection cap. Each test shortens its bound through `Tuning` and drives the host
//! over raw sockets the way a slow or hostile client would.

#![allow(clippy::unwrap_used)] // Tests fail loudly on the unexpected.

use std::time::Duration;

use serde_json::json;
use testkit::pki::TestPki;
use testkit::{LogDir, TestHost, WAIT, WsClient, agent_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use uuid::Uuid;

/// Short enough for tests, long enough that a loaded machine does not trip it by accident.
const SHORT: Duration = Duration::from_millis(500);

/// Reads until the peer closes; panics if it does not within [`WAIT`]. Returns what was read.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {WAIT:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// One keep-alive `GET /healthz` on `stream`; true when it was answered 200.
async fn healthz(stream: &mut TcpStream) -> bool {
    let sent = stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    if sent.is_err() {
        return false;
    }
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => buf[..n].starts_with(b"HTTP/1.1 200"),
        _ => false,
    }
}

/// A connection that sends half a header is closed once the header read timeout passes.
#[tokio::test]
async fn half_a_header_is_closed_after_the_header_read_timeout() {
    let host = TestHost::start_with(|c| c.tuning.header_read_timeout = SHORT).await;
    let mut stream = TcpStream::connect(host.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_until_closed(&mut stream).await;
    let took = started.elapsed();
    // Well before the 10 s default: it is the configured timeout that closed it.
    assert!(
        took >= SHORT - Duration::from_millis(50) && took < WAIT / 2,
        "closed after {took:?}"
    );
    assert!(
        !String::from_utf8_lossy(&answer).contains("200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    host.stop().await;
}

/// A request body shorter than its `Content-Length` is answered 408 `request_timeout` once
/// the body read timeout passes, and the connection is closed.
#[tokio::test]
async fn a_stalled_body_is_answered_408() {
    let host = TestHost::start_with(|c| c.tuning.body_read_timeout = SHORT).await;
    let token = host.user_token("acme", "alice");
    let mut stream = TcpStream::connect(host.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/stream/start HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"agent_id\""
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = String::from_utf8(read_until_closed(&mut stream).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    host.stop().await;
}

/// A session's WebSocket (and the agent's link) outlive the header and body read timeouts:
/// upgraded connections are not cut by them.
#[tokio::test]
async fn websockets_outlive_the_read_timeouts() {
    let host = TestHost::start_with(|c| {
        c.tuning.header_read_timeout = SHORT;
        c.tuning.body_read_timeout = SHORT;
    })
    .await;
    let logs = LogDir::new();
    let file = logs.create("app.log", &[]);
    let id = Uuid::new_v4();
    let agent = testkit::InProcessAgent::start(agent_config(
        &host,
        host.agent_token("acme", id, "edge"),
        &[("app", &file)],
    ));
    let api = host.api("acme", "alice");
    api.wait_agent_status(&id.to_string(), "online").await;
    let session = api.start_session(json!({"agent_id": id})).await;
    let mut client = WsClient::connect(
        session["websocket_url"].as_str().unwrap(),
        api.token(),
        None,
    )
    .await;
    testkit::sync(&logs, "app.log", |n| format!("probe {n}"), &mut client).await;
    // Time passing is what is tested: several times both timeouts.
    client.expect_silence(SHORT * 4).await;
    logs.append("app.log", &["still here"]).await;
    testkit::skip_until(&mut client, "still here").await;
    agent.stop().await;
    host.stop().await;
}

/// A TLS connection that never completes its handshake is closed after the handshake timeout.
#[tokio::test]
async fn a_stalled_tls_handshake_is_closed() {
    let pki = TestPki::new();
    let host = TestHost::start_tls(&pki, |c| c.tuning.tls_handshake_timeout = SHORT).await;
    let mut stream = TcpStream::connect(host.addr).await.unwrap();
    let started = Instant::now();
    read_until_closed(&mut stream).await;
    let took = started.elapsed();
    // Well before the 10 s default: it is the configured timeout that closed it.
    assert!(
        took >= SHORT - Duration::from_millis(50) && took < WAIT / 2,
        "closed after {took:?}"
    );
    host.stop().await;
}

/// With the cap at N connections, the N+1th is closed at once without an answer, and a new
/// connection is served again once one of the N has gone.
#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once() {
    const CAP: usize = 3;
    let host = TestHost::start_with(|c| c.tuning.max_connections = CAP).await;
    let mut open = Vec::new();
    for _ in 0..CAP {
        let mut stream = TcpStream::connect(host.addr).await.unwrap();
        assert!(
            healthz(&mut stream).await,
            "a connection under the cap is served"
        );
        open.push(stream);
    }
    let mut over = TcpStream::connect(host.addr).await.unwrap();
    let _ = over
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let answer = read_until_closed(&mut over).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    // The first ones are still served.
    assert!(healthz(&mut open[0]).await);

    drop(open.pop());
    // The host frees the slot when it sees the close; a new connection is served after that.
    testkit::wait_for(|| async {
        let mut stream = TcpStream::connect(host.addr).await.ok()?;
        healthz(&mut stream).await.then_some(())
    })
    .await;
    host.stop().await;
}

/// A cap of 0 or a zero timeout would refuse every connection: the binary refuses to start
/// with one, naming the flag.
#[test]
fn zero_bounds_are_refused_at_start() {
    for flag in [
        "--max-connections=0",
        "--header-read-timeout=0s",
        "--body-read-timeout=0s",
        "--tls-handshake-timeout=0s",
    ] {
        let data = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_logfleet-host"))
            .args(["serve", "--listen", "127.0.0.1:0", flag, "--data-dir"])
            .arg(data.path())
            .env("LOGFLEET_JWT_SECRET", testkit::SECRET)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let name = flag.split('=').next().unwrap();
        assert!(stderr.contains(name), "{flag}: {stderr}");
    }
}
