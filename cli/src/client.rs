//! [`Client`]: the host's REST API, typed with the wire types of `logfleet-protocol`.
//!
//! It exists so the CLI (and any Rust program) never builds URLs, headers or error handling by
//! hand: every call returns the documented body or an [`Error`] that says what went wrong.

use std::sync::Arc;
use std::time::Duration;

use logfleet_protocol::FilterSpec;
use logfleet_protocol::rest::{
    AgentInfo, AgentList, EnrollRequest, EnrollResponse, PatchSessionRequest, PluginInfo,
    PluginList, PluginResponse, RevokeResponse, Session, SessionList, SessionResponse,
    SessionSummary, StartRequest, StopRequest,
};
use reqwest::Url;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, root_cause};
use crate::stream::LogStream;

/// How long establishing a TCP (and TLS) connection to the host may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one REST call may take in total.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an idle pooled connection is kept for reuse: below the host's 10 s header read
/// timeout (which closes idle keep-alive connections), so a request never races that close.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a plugin upload may take: the host compiles the component before answering.
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// A client of one LogFleet host, acting with one user token. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: String,
    /// Whom to trust for `https://` and `wss://`; `None`: the public web PKI roots.
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// `{"agent": {...}}`, the answer to `GET /api/v1/agents/{id}`.
#[derive(Deserialize)]
struct AgentResponse {
    agent: AgentInfo,
}

impl Client {
    /// A client of the host at `base_url` (`http://` or `https://`, optionally with a path
    /// prefix when behind a proxy), authenticating with the user JWT `token`.
    pub fn new(base_url: &str, token: impl Into<String>) -> Result<Client, Error> {
        Client::with_tls(base_url, token, None)
    }

    /// Like [`Client::new`], trusting what `tls` trusts (e.g. [`crate::tls::trusting`] a
    /// private CA) for `https://` and `wss://` instead of the public web PKI roots.
    pub fn with_tls(
        base_url: &str,
        token: impl Into<String>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Client, Error> {
        let token = token.into();
        if token.trim().is_empty() {
            return Err(Error::MissingToken);
        }
        let invalid = |detail: &str| Error::InvalidUrl {
            url: base_url.to_owned(),
            detail: detail.to_owned(),
        };
        let base = Url::parse(base_url).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        if base.cannot_be_a_base() || base.host_str().is_none() {
            return Err(invalid("it has no host"));
        }
        let mut http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .user_agent(concat!("logfleet-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(tls) = &tls {
            http = http.use_preconfigured_tls(rustls::ClientConfig::clone(tls));
        }
        let http = http
            .build()
            .map_err(|e| Error::Protocol(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            token,
            tls,
        })
    }

    /// The same client with a connection pool of its own: for retrying a call whose pooled
    /// connection may be the broken one.
    pub fn fresh(&self) -> Result<Client, Error> {
        Client::with_tls(self.base.as_str(), self.token.clone(), self.tls.clone())
    }

    /// The host's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The token this client sends.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// `GET /api/v1/agents`: every agent of the token's organisation.
    pub async fn agents(&self) -> Result<Vec<AgentInfo>, Error> {
        let list: AgentList = self
            .call(self.http.get(self.url(&["api", "v1", "agents"])))
            .await?;
        Ok(list.agents)
    }

    /// `GET /api/v1/agents/{id}`: one agent, by UUID or name.
    pub async fn agent(&self, id_or_name: &str) -> Result<AgentInfo, Error> {
        let resp: AgentResponse = self
            .call(
                self.http
                    .get(self.url(&["api", "v1", "agents", id_or_name])),
            )
            .await?;
        Ok(resp.agent)
    }

    /// `POST /api/v1/agents` (admin): enrolls an agent; the answer holds its token.
    pub async fn enroll(
        &self,
        name: &str,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<EnrollResponse, Error> {
        let body = EnrollRequest {
            name: name.to_owned(),
            labels,
        };
        self.call(
            self.http
                .post(self.url(&["api", "v1", "agents"]))
                .json(&body),
        )
        .await
    }

    /// `DELETE /api/v1/agents/{id}` (admin): revokes an agent, by UUID or name.
    pub async fn revoke(&self, id_or_name: &str) -> Result<RevokeResponse, Error> {
        self.call(
            self.http
                .delete(self.url(&["api", "v1", "agents", id_or_name])),
        )
        .await
    }

    /// `GET /api/v1/stream/sessions`: the organisation's active sessions.
    pub async fn sessions(&self) -> Result<Vec<SessionSummary>, Error> {
        let list: SessionList = self
            .call(
                self.http
                    .get(self.url(&["api", "v1", "stream", "sessions"])),
            )
            .await?;
        Ok(list.sessions)
    }

    /// `POST /api/v1/stream/start`: starts a session.
    pub async fn start(&self, request: &StartRequest) -> Result<Session, Error> {
        let resp: SessionResponse = self
            .call(
                self.http
                    .post(self.url(&["api", "v1", "stream", "start"]))
                    .json(request),
            )
            .await?;
        Ok(resp.session)
    }

    /// `PATCH /api/v1/stream/sessions/{id}`: changes a running session's filters; returns
    /// the session with them. Its clients get `filters_changed` before the first record under
    /// the new filters.
    pub async fn change_filters(
        &self,
        session_id: &str,
        filters: FilterSpec,
    ) -> Result<Session, Error> {
        let body = PatchSessionRequest { filters };
        let resp: SessionResponse = self
            .call(
                self.http
                    .patch(self.url(&["api", "v1", "stream", "sessions", session_id]))
                    .json(&body),
            )
            .await?;
        Ok(resp.session)
    }

    /// `POST /api/v1/stream/stop`: stops a session; its clients get `session_ended`.
    pub async fn stop(&self, session_id: &str) -> Result<Session, Error> {
        let body = StopRequest {
            session_id: session_id.to_owned(),
        };
        let resp: SessionResponse = self
            .call(
                self.http
                    .post(self.url(&["api", "v1", "stream", "stop"]))
                    .json(&body),
            )
            .await?;
        Ok(resp.session)
    }

    /// `GET /api/v1/plugins`: the organisation's uploaded filter plugins.
    pub async fn plugins(&self) -> Result<Vec<PluginInfo>, Error> {
        let list: PluginList = self
            .call(self.http.get(self.url(&["api", "v1", "plugins"])))
            .await?;
        Ok(list.plugins)
    }

    /// `POST /api/v1/plugins?name=NAME`: uploads (or replaces) a plugin component.
    pub async fn upload_plugin(&self, name: &str, component: Vec<u8>) -> Result<PluginInfo, Error> {
        let mut url = self.url(&["api", "v1", "plugins"]);
        url.query_pairs_mut().append_pair("name", name);
        let resp: PluginResponse = self
            .call(
                self.http
                    .post(url)
                    .timeout(UPLOAD_TIMEOUT)
                    .header(reqwest::header::CONTENT_TYPE, "application/wasm")
                    .body(component),
            )
            .await?;
        Ok(resp.plugin)
    }

    /// `DELETE /api/v1/plugins/{name}`.
    pub async fn delete_plugin(&self, name: &str) -> Result<(), Error> {
        let resp = self
            .send(self.http.delete(self.url(&["api", "v1", "plugins", name])))
            .await?;
        Self::check(resp).await.map(drop)
    }

    /// Connects to a session's WebSocket. With `since_seq`, the host first replays the
    /// session's buffered lines after that `seq`.
    pub async fn connect(
        &self,
        session: &Session,
        since_seq: Option<u64>,
    ) -> Result<LogStream, Error> {
        LogStream::connect_with(session, &self.token, since_seq, self.tls.clone()).await
    }

    /// The base URL with these path segments appended (each percent-encoded).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        // `new` checked the URL can be a base, so this cannot fail.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, Error> {
        req.bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.network_error(&e))
    }

    /// Turns a non-success response into [`Error::Api`].
    async fn check(resp: reqwest::Response) -> Result<Vec<u8>, Error> {
        let status = resp.status();
        let url = resp.url().to_string();
        let body = resp.bytes().await.map_err(|e| Error::Network {
            url,
            detail: root_cause(&e),
        })?;
        if status.is_success() {
            Ok(body.to_vec())
        } else {
            Err(Error::from_response(status.as_u16(), &body))
        }
    }

    async fn call<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, Error> {
        let body = Self::check(self.send(req).await?).await?;
        serde_json::from_slice(&body).map_err(|e| Error::Protocol(e.to_string()))
    }

    fn network_error(&self, e: &reqwest::Error) -> Error {
        let detail = if e.is_timeout() {
            "timed out".to_owned()
        } else {
            root_cause(e)
        };
        Error::Network {
            url: self.base.to_string(),
            detail,
        }
    }
}
