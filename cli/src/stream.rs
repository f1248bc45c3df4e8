//! [`LogStream`]: one session's WebSocket, as a sequence of typed messages.
//!
//! It exists to hide the WebSocket details (authentication header, `since_seq`, pings, close
//! codes, message types this version does not know yet) behind one `next()` call.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use logfleet_protocol::client::{CLOSE_CLIENT_TOO_SLOW, ClientMessage};
use logfleet_protocol::rest::Session;
use reqwest::Url;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::error::{Error, root_cause};

/// How long opening the WebSocket (TCP, TLS and upgrade) may take.
pub const WS_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected session WebSocket.
pub struct LogStream {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    session_id: String,
}

impl LogStream {
    /// Connects to `session.websocket_url`, authenticating with a `Bearer` header (so the
    /// token stays out of URLs that proxies log). `since_seq` asks for a replay of the
    /// session's buffered lines after that `seq`.
    pub async fn connect(
        session: &Session,
        token: &str,
        since_seq: Option<u64>,
    ) -> Result<LogStream, Error> {
        LogStream::connect_with(session, token, since_seq, None).await
    }

    /// Like [`LogStream::connect`], trusting what `tls` trusts for `wss://` (`None`: the
    /// public web PKI roots).
    pub async fn connect_with(
        session: &Session,
        token: &str,
        since_seq: Option<u64>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<LogStream, Error> {
        let mut url = Url::parse(&session.websocket_url).map_err(|e| {
            Error::Protocol(format!(
                "bad websocket_url '{}': {e}",
                session.websocket_url
            ))
        })?;
        if let Some(seq) = since_seq {
            url.query_pairs_mut()
                .append_pair("since_seq", &seq.to_string());
        }
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| Error::Protocol(format!("bad websocket_url: {e}")))?;
        let auth = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| Error::Protocol("the token is not a valid header value".to_owned()))?;
        request.headers_mut().insert(AUTHORIZATION, auth);

        let network = |detail: String| Error::Network {
            url: session.websocket_url.clone(),
            detail,
        };
        let connected = tokio::time::timeout(
            WS_CONNECT_TIMEOUT,
            tokio_tungstenite::connect_async_tls_with_config(
                request,
                None,
                false,
                tls.map(tokio_tungstenite::Connector::Rustls),
            ),
        )
        .await
        .map_err(|_| network("timed out".to_owned()))?;
        let (ws, _) = connected.map_err(|e| match e {
            tungstenite::Error::Http(resp) => Error::from_response(
                resp.status().as_u16(),
                resp.body().as_deref().unwrap_or_default(),
            ),
            other => network(root_cause(&other)),
        })?;
        tracing::debug!(session = %session.id, ?since_seq, "stream connected");
        Ok(LogStream {
            ws,
            session_id: session.id.clone(),
        })
    }

    /// The session this stream belongs to.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The next message. `Ok(None)` when the host closed the stream normally (after
    /// `session_ended`); [`Error::StreamClosed`] when it closed any other way, e.g. with
    /// close code 4008 because this client read too slowly.
    ///
    /// Cancel-safe: dropping the future loses no message.
    pub async fn next(&mut self) -> Result<Option<ClientMessage>, Error> {
        loop {
            let frame = match self.ws.next().await {
                None => return Err(self.closed("the connection ended without a close frame")),
                Some(Err(e)) => return Err(self.closed(&root_cause(&e))),
                Some(Ok(frame)) => frame,
            };
            match frame {
                Message::Text(text) => match serde_json::from_str::<ClientMessage>(&text) {
                    Ok(msg) => return Ok(Some(msg)),
                    // A newer host may send events this client does not know; they are
                    // informational by contract, so skipping them is safe.
                    Err(e) => tracing::debug!(%text, error = %e, "skipping unknown message"),
                },
                Message::Close(frame) => {
                    return match frame {
                        None => Ok(None),
                        Some(f) if f.code == CloseCode::Normal => Ok(None),
                        Some(f) if u16::from(f.code) == CLOSE_CLIENT_TOO_SLOW => Err(self.closed(
                            "this client read too slowly and the host closed the stream (4008)",
                        )),
                        Some(f) => Err(self.closed(&format!(
                            "close code {}: {}",
                            u16::from(f.code),
                            f.reason
                        ))),
                    };
                }
                // tungstenite answers pings itself; nothing else is expected.
                Message::Ping(_) | Message::Pong(_) | Message::Binary(_) | Message::Frame(_) => {}
            }
        }
    }

    /// Closes the WebSocket politely. The session itself keeps running on the host.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    fn closed(&self, detail: &str) -> Error {
        Error::StreamClosed {
            session_id: self.session_id.clone(),
            detail: detail.to_owned(),
        }
    }
}
