//! A raw agent: a WebSocket on `/api/v1/agent/connect` that speaks the agent protocol frame by
//! frame, for tests and benchmarks that need to send exactly what a (simulated, misbehaving or
//! hostile) agent would, without the real agent's pipeline in between.

use futures_util::{SinkExt, StreamExt};
use logfleet_protocol::agent::{self, AgentFrame, Hello, HostFrame, PROTOCOL_VERSION};
use logfleet_protocol::rest::SourceInfo;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::WAIT;

/// One agent link, driven by hand.
pub struct RawAgent {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What the host sent next.
#[derive(Debug)]
pub enum FromHost {
    Frame(HostFrame),
    /// The host closed the link (with its close frame, if any).
    Closed(Option<CloseFrame>),
}

/// A `Hello` of this protocol with `sources` as `(name, path)`.
pub fn hello(name: &str, hostname: &str, sources: &[(&str, &str)]) -> AgentFrame {
    AgentFrame::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        name: name.to_owned(),
        hostname: hostname.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        sources: sources
            .iter()
            .map(|(name, path)| SourceInfo {
                name: (*name).to_owned(),
                path: (*path).to_owned(),
            })
            .collect(),
        // A fresh outbox: this link's frames count from 1 and are never resends.
        outbox: uuid::Uuid::new_v4().as_u64_pair().0,
        next_frame: 1,
    })
}

impl RawAgent {
    /// Connects to `url` (`ws://…/api/v1/agent/connect`) with `Authorization: Bearer token`.
    /// Nothing is sent yet: the first frame should be a [`hello`].
    pub async fn connect(url: &str, token: &str) -> anyhow::Result<RawAgent> {
        let mut request = url.into_client_request()?;
        request.headers_mut().insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}"))?,
        );
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(RawAgent { ws })
    }

    /// Like [`RawAgent::connect`], with a receive window of a few KiB, as over a stalled link:
    /// what the host writes backs up after a few MiB (its own send buffer) instead of the tens
    /// of MiB loopback's autotuned windows take.
    pub async fn connect_slow_reader(url: &str, token: &str) -> anyhow::Result<RawAgent> {
        let mut request = url.into_client_request()?;
        request.headers_mut().insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}"))?,
        );
        let authority = request
            .uri()
            .authority()
            .ok_or_else(|| anyhow::anyhow!("no host in {url}"))?
            .as_str()
            .to_owned();
        let addr = tokio::net::lookup_host(&authority)
            .await?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{authority} does not resolve"))?;
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_recv_buffer_size(4096)?;
        let stream = socket.connect(addr).await?;
        let (ws, _) =
            tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await?;
        Ok(RawAgent { ws })
    }

    /// Sends one frame, encoded as the real agent encodes it.
    pub async fn send(&mut self, frame: &AgentFrame) -> Result<(), tungstenite::Error> {
        self.send_bytes(agent::encode(frame)).await
    }

    /// Sends one binary message as it is (hand-made frames).
    pub async fn send_bytes(&mut self, bytes: Vec<u8>) -> Result<(), tungstenite::Error> {
        self.ws.send(Message::Binary(bytes.into())).await
    }

    /// The next host frame or the close; pings are answered while reading, and so are the
    /// host's acknowledgements skipped (a raw agent resends nothing). An error is a link that
    /// failed without a close.
    pub async fn recv(&mut self) -> anyhow::Result<FromHost> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Binary(bytes))) => match agent::decode::<HostFrame>(&bytes)? {
                    HostFrame::Ack { .. } => continue,
                    frame => return Ok(FromHost::Frame(frame)),
                },
                Some(Ok(Message::Close(frame))) => return Ok(FromHost::Closed(frame)),
                None => return Ok(FromHost::Closed(None)),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// Reads (within [`WAIT`]) until the host acknowledges frames up to at least `upto`;
    /// returns the acknowledgement. Other host frames read meanwhile are dropped.
    pub async fn expect_ack(&mut self, upto: u64) -> u64 {
        let acked = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Binary(bytes))) => {
                        if let Ok(HostFrame::Ack { upto: acked }) = agent::decode(&bytes)
                            && acked >= upto
                        {
                            return acked;
                        }
                    }
                    Some(Ok(Message::Close(frame))) => panic!("link closed: {frame:?}"),
                    None => panic!("link closed"),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => panic!("link failed: {e}"),
                }
            }
        };
        tokio::time::timeout(WAIT, acked)
            .await
            .unwrap_or_else(|_| panic!("no acknowledgement of frame {upto}"))
    }

    /// The next host frame, within [`WAIT`]; panics on a close or a failure.
    pub async fn expect_frame(&mut self) -> HostFrame {
        match tokio::time::timeout(WAIT, self.recv()).await {
            Ok(Ok(FromHost::Frame(frame))) => frame,
            other => panic!("expected a host frame, got {other:?}"),
        }
    }

    /// Reads until the host closes the link, within [`WAIT`], and returns its close frame.
    pub async fn expect_close(&mut self) -> Option<CloseFrame> {
        let closed = async {
            loop {
                match self.recv().await {
                    Ok(FromHost::Frame(_)) => continue,
                    Ok(FromHost::Closed(frame)) => return frame,
                    Err(e) => panic!("link failed instead of closing: {e}"),
                }
            }
        };
        tokio::time::timeout(WAIT, closed)
            .await
            .expect("the host did not close the link")
    }
}
