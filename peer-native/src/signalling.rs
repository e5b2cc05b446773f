//! The WebSocket to the signalling server (tokio-tungstenite).
//!
//! Each connection runs one task: text frames from the server go to the node as
//! [`Input::ServerFrame`], frames the node queues go to the server, and the end of the
//! connection (with its close code, 1006 when it just dropped) is reported once as
//! [`Input::ServerClosed`]. Every connection has a generation number, so the end of an
//! old one is not mistaken for the end of the current one.

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tracing::debug;

use crate::node::Input;

/// Close code reported when the connection ended without a close frame.
const ABNORMAL: u16 = 1006;

/// The node's handle on one server connection; dropping it closes the connection.
pub(crate) struct ServerLink {
    outgoing: mpsc::UnboundedSender<String>,
    task: tokio::task::JoinHandle<()>,
}

impl ServerLink {
    /// Connects to `url` in the background.
    pub(crate) fn connect(
        url: String,
        generation: u64,
        inputs: mpsc::UnboundedSender<Input>,
    ) -> Self {
        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(url, generation, inputs, outgoing_rx));
        Self { outgoing, task }
    }

    /// Closes the connection with a close frame, so the server announces `left` at once
    /// rather than holding our place for the resume grace; the handle ends once it is sent.
    pub(crate) fn close(self) -> tokio::task::JoinHandle<()> {
        // Dropping the sender tells the task to close.
        self.task
    }

    /// Queues a text frame; false if the connection is gone.
    pub(crate) fn send(&self, text: String) -> bool {
        self.outgoing.send(text).is_ok()
    }
}

async fn run(
    url: String,
    generation: u64,
    inputs: mpsc::UnboundedSender<Input>,
    mut outgoing: mpsc::UnboundedReceiver<String>,
) {
    let closed = |code: u16, reason: String| Input::ServerClosed {
        generation,
        code,
        reason,
    };
    let socket = match tokio_tungstenite::connect_async(url.as_str()).await {
        Ok((socket, _)) => socket,
        Err(err) => {
            let _ = inputs.send(closed(ABNORMAL, err.to_string()));
            return;
        }
    };
    let (mut sink, mut stream) = socket.split();
    let (code, reason) = loop {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let _ = inputs.send(Input::ServerFrame {
                        generation,
                        text: text.as_str().to_owned(),
                    });
                }
                Some(Ok(Message::Close(frame))) => {
                    break match frame {
                        Some(frame) => (u16::from(frame.code), frame.reason.as_str().to_owned()),
                        None => (1005, String::new()),
                    };
                }
                Some(Ok(_)) => {} // pings are answered by tungstenite; nothing else is sent
                Some(Err(err)) => break (ABNORMAL, err.to_string()),
                None => break (ABNORMAL, String::new()),
            },
            text = outgoing.recv() => match text {
                Some(text) => {
                    if let Err(err) = sink.send(Message::text(text)).await {
                        break (ABNORMAL, err.to_string());
                    }
                }
                None => {
                    // The node dropped this connection: close it properly.
                    let _ = sink.send(Message::Close(None)).await;
                    debug!(generation, "closed the signalling connection");
                    return;
                }
            },
        }
    };
    let _ = inputs.send(closed(code, reason));
}
