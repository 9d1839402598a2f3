//! A real server on ephemeral ports over a real SQLite file, for the integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use tracellm_client::Client;
use tracellm_core::{Assembler, NormalizeOptions, PriceTable};
use tracellm_server::{Bound, Limits, ServerConfig};
use tracellm_store::{SqliteOptions, SqliteStore, Store};

pub struct TestServer {
    pub bound: Bound,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start(dir: &std::path::Path) -> TestServer {
        Self::start_with(dir, |_| {}).await
    }

    /// Starts with the test defaults changed by `tweak` (auth settings, redaction…).
    pub async fn start_with(
        dir: &std::path::Path,
        tweak: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        let cfg = ServerConfig {
            host: "127.0.0.1".into(),
            port: 0,
            dashboard_port: Some(0),
            otlp_grpc_port: Some(0),
            otlp_grpc_optional: false,
            limits: Limits::default(),
            normalize: NormalizeOptions::default(),
            require_auth: false,
            insecure_no_auth: false,
            allowed_hosts: Vec::new(),
            admin_token: None,
            redact: Default::default(),
        };
        let mut cfg = cfg;
        tweak(&mut cfg);
        // The store re-assembles OTLP traces with the server's limits, as `tracellm start` does.
        let assembler =
            Arc::new(Assembler { prices: PriceTable::builtin(), opts: cfg.normalize.clone() });
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(
                &dir.join("traces.db"),
                SqliteOptions { assembler, ..Default::default() },
            )
            .await
            .unwrap(),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(tracellm_server::serve(
            cfg,
            store,
            PriceTable::builtin(),
            move |b, _token| {
                let _ = ready_tx.send(b);
            },
            async move {
                let _ = stopped.await;
            },
        ));
        let bound = ready_rx.await.unwrap();
        TestServer { bound, stop: Some(stop), task: Some(task) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.bound.api)
    }

    pub fn client(&self) -> Client {
        Client::new(self.url())
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

/// POSTs `body` to `path` with a content type, gzipped when asked; the status, headers and body.
pub async fn post(
    url: &str,
    path: &str,
    ct: &str,
    gzip: bool,
    body: Vec<u8>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    use std::io::Write;
    let mut req = reqwest::Client::new().post(format!("{url}{path}")).header("content-type", ct);
    let body = if gzip {
        req = req.header("content-encoding", "gzip");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&body).unwrap();
        e.finish().unwrap()
    } else {
        body
    };
    let resp = req.body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.bytes().await.unwrap().to_vec())
}
