//! Typed client of the TraceLLM HTTP API and its WebSocket, shared by the CLI, the monitor and
//! the Rust SDK.

use futures::StreamExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracellm_core::Trace;
use tracellm_core::api::{Analytics, FailurePage, TracePage};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error body.
    #[error("{status} {code}: {message}")]
    Api { status: u16, code: String, message: String },
    #[error("cannot reach TraceLLM at {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("unexpected answer: {0}")]
    Protocol(String),
    #[error("websocket: {0}")]
    WebSocket(String),
}

pub type Result<T> = std::result::Result<T, ClientError>;

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// Answer of `POST /traces`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Accepted {
    pub accepted: usize,
    pub ids: Vec<String>,
}

/// Answer of `GET /`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Health {
    pub status: String,
    pub version: String,
    pub store: String,
}

#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    api_key: Option<String>,
    admin_token: Option<String>,
}

impl Client {
    /// A client of the server at `base` (e.g. `http://127.0.0.1:8000`).
    pub fn new(base: impl Into<String>) -> Self {
        Client {
            base: base.into().trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            api_key: None,
            admin_token: None,
        }
    }

    /// The admin token for project and key management, when the server requires it.
    pub fn with_admin_token(mut self, token: impl Into<String>) -> Self {
        self.admin_token = Some(token.into());
        self
    }

    /// `POST /projects`: the project and its first key (the secret is shown only here).
    pub async fn create_project(
        &self,
        name: &str,
        environment: &str,
        description: Option<&str>,
    ) -> Result<Value> {
        let mut q = vec![("name", name), ("environment", environment)];
        if let Some(d) = description {
            q.push(("description", d));
        }
        self.send(self.admin(reqwest::Method::POST, "/projects").query(&q)).await
    }

    pub async fn list_projects(&self) -> Result<Value> {
        self.send(self.admin(reqwest::Method::GET, "/projects")).await
    }

    /// `POST /api-keys`: a new key (the secret is shown only here).
    pub async fn create_api_key(
        &self,
        project: &str,
        environment: &str,
        name: Option<&str>,
    ) -> Result<Value> {
        let mut q = vec![("project", project), ("environment", environment)];
        if let Some(n) = name {
            q.push(("name", n));
        }
        self.send(self.admin(reqwest::Method::POST, "/api-keys").query(&q)).await
    }

    pub async fn list_api_keys(&self, project: Option<&str>) -> Result<Value> {
        let q: Vec<(&str, &str)> = project.map(|p| vec![("project", p)]).unwrap_or_default();
        self.send(self.admin(reqwest::Method::GET, "/api-keys").query(&q)).await
    }

    pub async fn revoke_api_key(&self, id: &str) -> Result<Value> {
        let path = format!("/api-keys/{}", urlencode(id));
        self.send(self.admin(reqwest::Method::DELETE, &path)).await
    }

    fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.admin_token {
            Some(t) => r.header("x-admin-token", t),
            None => r,
        }
    }

    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.api_key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        let resp = req
            .send()
            .await
            .map_err(|source| ClientError::Unreachable { url: self.base.clone(), source })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Protocol(e.to_string()))?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(b) => ClientError::Api {
                    status: status.as_u16(),
                    code: b.error.code,
                    message: b.error.message,
                },
                Err(_) => ClientError::Api {
                    status: status.as_u16(),
                    code: "http".into(),
                    message: String::from_utf8_lossy(&bytes).into_owned(),
                },
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    pub async fn health(&self) -> Result<Health> {
        self.send(self.request(reqwest::Method::GET, "/")).await
    }

    /// Sends one trace document or `{"traces": [...]}`.
    pub async fn ingest(&self, doc: &Value) -> Result<Accepted> {
        self.send(self.request(reqwest::Method::POST, "/traces").json(doc)).await
    }

    /// `GET /traces` with filters given as query pairs.
    pub async fn list_traces(&self, query: &[(&str, &str)]) -> Result<TracePage> {
        self.send(self.request(reqwest::Method::GET, "/traces").query(query)).await
    }

    pub async fn get_trace(&self, id: &str) -> Result<Trace> {
        let path = format!("/traces/{}", urlencode(id));
        self.send(self.request(reqwest::Method::GET, &path)).await
    }

    pub async fn analytics(&self, query: &[(&str, &str)]) -> Result<Analytics> {
        self.send(self.request(reqwest::Method::GET, "/analytics").query(query)).await
    }

    pub async fn failures(&self, query: &[(&str, &str)]) -> Result<FailurePage> {
        self.send(self.request(reqwest::Method::GET, "/failures").query(query)).await
    }

    /// Opens the live stream; the first message is `system.connected`.
    pub async fn subscribe(&self) -> Result<Subscription> {
        let url = format!("{}/ws", self.base.replacen("http", "ws", 1));
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                url.as_str(),
            )
            .map_err(|e| ClientError::WebSocket(e.to_string()))?;
        if let Some(k) = &self.api_key {
            let v = format!("Bearer {k}")
                .parse()
                .map_err(|_| ClientError::WebSocket("invalid api key".into()))?;
            req.headers_mut().insert("authorization", v);
        }
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .map_err(|e| ClientError::WebSocket(e.to_string()))?;
        Ok(Subscription { ws })
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A live stream of server events.
pub struct Subscription {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Subscription {
    /// The next event as JSON (`{"type": …, …}`), or `None` when the server closed the stream.
    pub async fn next(&mut self) -> Option<Result<Value>> {
        use tokio_tungstenite::tungstenite::Message;
        loop {
            match self.ws.next().await? {
                Ok(Message::Text(t)) => {
                    return Some(
                        serde_json::from_str(t.as_str())
                            .map_err(|e| ClientError::Protocol(e.to_string())),
                    );
                }
                Ok(Message::Close(_)) => return None,
                Ok(_) => continue,
                Err(e) => return Some(Err(ClientError::WebSocket(e.to_string()))),
            }
        }
    }
}
