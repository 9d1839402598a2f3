//! `GET /ws`: the live stream. `system.connected` first, then `trace.created` / `trace.updated`
//! for every change of the client's project, sent after the change is durable.

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::AppState;
use crate::auth::{self, Access};
use crate::error::ApiError;

#[utoipa::path(
    get, path = "/ws", tag = "live",
    responses((status = 101, description = "WebSocket: {\"type\":\"system.connected\",\"version\"} then {\"type\":\"trace.created\"|\"trace.updated\",\"trace\":{summary}}"))
)]
pub async fn ws(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    // Browsers cannot set headers on a WebSocket: the key may come as `?api_key=`.
    let mut p = crate::params::Params::parse(raw.as_deref());
    let key = p.take("api_key")?;
    let access = auth::resolve(&state, &headers, key.as_deref()).await?;
    let (_, environment) = crate::params::scope(&mut p, &access)?;
    p.finish(&["api_key", "project", "environment"])?;
    let scope = Access { environment, ..access };
    Ok(upgrade.on_upgrade(move |socket| serve(socket, state, scope)))
}

async fn serve(mut socket: WebSocket, state: AppState, scope: Access) {
    let project = scope.project_id.clone();
    let mut events = state.store.subscribe();
    let mut shutdown = state.shutdown.clone();
    let hello = json!({"type": "system.connected", "version": crate::VERSION, "project": project});
    if socket.send(Message::Text(hello.to_string().into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            ev = events.recv() => {
                let msg = match ev {
                    Ok(ev)
                        if ev.trace.project_id == project
                            && (scope.environment.is_none()
                                || ev.trace.environment == scope.environment) =>
                    {
                        json!({"type": ev.kind, "trace": &*ev.trace})
                    }
                    Ok(_) => continue,
                    // A slow client skips what it could not keep up with, and is told so.
                    Err(RecvError::Lagged(missed)) => json!({"type": "system.lagged", "missed": missed}),
                    Err(RecvError::Closed) => break,
                };
                if socket.send(Message::Text(msg.to_string().into())).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            _ = shutdown.changed() => {
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
        }
    }
}
