//! What JavaScript callbacks report, and where they report it.
//!
//! Every callback of the client (the signalling socket, a peer connection, a data channel,
//! the storage worker, a timer, a finished read) does one thing: it posts an [`Event`] to its
//! [`Inbox`] and returns. The shell ([`crate::shell`]) drains the inbox from a microtask of
//! its own and handles the events one at a time, so no callback ever runs while the client's
//! state is borrowed, and nothing a callback owns is freed while it runs.

use std::rc::Weak;

use swarm_core::node::ReadPiece;
use swarm_protocol::{ContentId, PeerId, SignalData};
use web_sys::{Blob, MediaStream};

use crate::error::ClientError;

/// Something that happened, for the shell to handle in order.
pub(crate) enum Event {
    /// A text frame from signalling connection `socket`.
    ServerFrame { socket: u32, text: String },
    /// Signalling connection `socket` ended.
    ServerClosed {
        socket: u32,
        code: u16,
        reason: String,
    },
    /// Signalling connection `socket` has not answered within
    /// [`crate::state::SOCKET_ANSWER_MS`].
    SocketSilent { socket: u32 },
    /// Time to try the signalling server again.
    Reconnect,
    /// The node's upkeep is due.
    Upkeep,
    /// Connection `link` to `peer` produced a signal for it.
    LocalSignal {
        peer: PeerId,
        link: u32,
        data: SignalData,
    },
    /// The other side of connection `link` announced a data channel.
    RemoteChannel { peer: PeerId, link: u32 },
    /// The `swarm` channel of connection `link` opened.
    ChannelOpen { peer: PeerId, link: u32 },
    /// Connection `link` closed or failed (its channel or the peer connection).
    LinkClosed { peer: PeerId, link: u32 },
    /// A text message arrived on connection `link`.
    Text {
        peer: PeerId,
        link: u32,
        text: String,
    },
    /// A binary message arrived on connection `link`.
    Binary {
        peer: PeerId,
        link: u32,
        data: Vec<u8>,
    },
    /// The send buffer of connection `link` drained to its low mark.
    Writable { peer: PeerId, link: u32 },
    /// A remote track of `stream` arrived on connection `link`.
    Track {
        peer: PeerId,
        link: u32,
        stream: MediaStream,
    },
    /// A track left remote `stream` on connection `link`.
    TrackRemoved {
        peer: PeerId,
        link: u32,
        stream: MediaStream,
    },
    /// A piece asked for by `to` was read (`None`: it could not be).
    PieceRead {
        read: ReadPiece,
        data: Option<Vec<u8>>,
    },
    /// A piece went to storage: `Ok(true)` written, `Ok(false)` refused by its hash check.
    PieceWritten {
        id: ContentId,
        piece: u32,
        from: Option<PeerId>,
        result: Result<bool, ClientError>,
    },
    /// Storage for download `id` cannot be used.
    StorageFailed { id: ContentId, error: ClientError },
    /// The storage quota was checked before download `id` starts (`None`: unknown).
    SpaceChecked { id: ContentId, free: Option<f64> },
    /// A content kept from before was checked ([`crate::library`]): `have` the pieces that
    /// still verify (`None` for a shared file, of which only the manifest is kept), `blob`
    /// the whole file when every piece does.
    Restored {
        id: ContentId,
        have: Option<swarm_core::bitfield::Bitfield>,
        blob: Option<Blob>,
    },
    /// A finished download was closed and opened as a Blob, or could not be.
    Finished {
        id: ContentId,
        result: Result<Blob, ClientError>,
    },
}

/// Takes posted events.
pub(crate) trait Sink {
    /// Queues `event` for handling; never handles it before returning.
    fn post(&self, event: Event);
}

/// Where a callback posts its events; posting after the shell is gone does nothing.
#[derive(Clone)]
pub(crate) struct Inbox(Weak<dyn Sink>);

impl Inbox {
    pub(crate) fn new(sink: Weak<dyn Sink>) -> Self {
        Self(sink)
    }

    /// Posts `event` (see [`Sink::post`]).
    pub(crate) fn post(&self, event: Event) {
        if let Some(sink) = self.0.upgrade() {
            sink.post(event);
        }
    }
}
