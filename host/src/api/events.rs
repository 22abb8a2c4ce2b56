//! The dashboard's pushed updates: `GET /api/events`, a stream of
//! Server-Sent Events (`text/event-stream`) saying when the job system
//! changed, so pages refresh what they show when there is news instead of
//! polling.
//!
//! One watcher per server process (not per client) reads the database's
//! change fingerprint ([`crate::jobs::changes`]) about once a second while
//! anyone listens, and broadcasts a `change` event when it differs: changes
//! made by other nodes sharing the database (or by the `weir` CLI) count as
//! much as this server's own. Each stream opens with a `ready` event and
//! carries a comment every 15 s (a proxy keeps the connection; a client that
//! is gone is noticed). The stream ends when the server shuts down, so a
//! graceful stop never waits for a dashboard.
//!
//! It is authorized like every read endpoint (a bearer token in the
//! `Authorization` header: browsers' `EventSource` cannot send one, so the
//! dashboard reads the stream with `fetch`). A request that does not accept
//! `text/event-stream` is answered 406: a client that reads bodies to their
//! end would otherwise wait forever.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use tokio::sync::{broadcast, mpsc, watch};

use crate::Weir;

/// How often the watcher reads the fingerprint.
const EVERY: Duration = Duration::from_secs(1);
/// How often an idle stream carries a comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The process's watcher and its subscribers.
pub(super) struct Events {
    changes: broadcast::Sender<()>,
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    closed: watch::Sender<bool>,
}

impl Default for Events {
    fn default() -> Self {
        Events { changes: broadcast::channel(16).0, watcher: Mutex::new(None), closed: watch::channel(false).0 }
    }
}

impl Events {
    /// Ends every stream and the watcher (the server is stopping).
    pub(super) fn close(&self) {
        self.closed.send_replace(true);
    }

    /// A new subscriber's stream body, starting the watcher if it is not
    /// running yet.
    pub(super) fn subscribe(self: &Arc<Self>, weir: &Arc<Weir>) -> Body {
        let changes = self.changes.subscribe();
        self.start(weir);
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        tokio::spawn(forward(changes, self.closed.subscribe(), tx));
        Body::new(Stream(rx))
    }

    fn start(self: &Arc<Self>, weir: &Arc<Weir>) {
        let mut watcher = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
        if watcher.as_ref().is_some_and(|w| !w.is_finished()) {
            return;
        }
        let (events, weir) = (self.clone(), weir.clone());
        *watcher = Some(tokio::spawn(async move { events.watch(weir).await }));
    }

    /// Reads the fingerprint every second while anyone listens; broadcasts
    /// a change when it differs from the last read (and on the first read
    /// after a quiet spell: what happened meanwhile is unknown).
    async fn watch(&self, weir: Arc<Weir>) {
        let mut closed = self.closed.subscribe();
        let mut last: Option<crate::jobs::changes::Fingerprint> = None;
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = closed.wait_for(|c| *c) => return,
            }
            if self.changes.receiver_count() == 0 {
                last = None;
                continue;
            }
            let w = weir.clone();
            let read = tokio::task::spawn_blocking(move || {
                w.pool().with_conn(|conn| {
                    let now = crate::time::now_on(conn)?;
                    crate::jobs::changes::fingerprint(conn, now)
                })
            })
            .await;
            match read {
                Ok(Ok(now)) => {
                    if last.as_ref() != Some(&now) {
                        let _ = self.changes.send(());
                    }
                    last = Some(now);
                }
                // A busy or unreachable database: try again next tick.
                Ok(Err(e)) => tracing::warn!("the dashboard's change watcher could not read the database: {e}"),
                Err(e) => tracing::warn!("the dashboard's change watcher failed: {e}"),
            }
        }
    }
}

/// Writes one subscriber's events until it goes away or the server stops.
async fn forward(mut changes: broadcast::Receiver<()>, mut closed: watch::Receiver<bool>, tx: mpsc::Sender<Bytes>) {
    if tx.send(Bytes::from_static(b"event: ready\ndata: {}\n\n")).await.is_err() {
        return;
    }
    loop {
        let message: &'static [u8] = tokio::select! {
            got = changes.recv() => match got {
                // Missed some: that is a change all the same.
                Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => b"event: change\ndata: {}\n\n",
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tokio::time::sleep(KEEP_ALIVE) => b": still here\n\n",
            _ = closed.wait_for(|c| *c) => return,
        };
        if tx.send(Bytes::from_static(message)).await.is_err() {
            return;
        }
    }
}

/// The response body: what [`forward`] writes, as it comes.
struct Stream(mpsc::Receiver<Bytes>);

impl http_body::Body for Stream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(http_body::Frame::data(b))))
    }
}
