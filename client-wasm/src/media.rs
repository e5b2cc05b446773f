//! Live media: publishing local streams (camera, microphone, screen) to every peer, and
//! telling the application about remote streams. Which streams started or ended is decided by
//! `swarm-core`'s [`RemoteStreams`]; renegotiation uses the same perfect negotiation as the
//! data channel, so two peers publishing at once never glare.

use std::rc::Rc;

use swarm_core::media::MediaEvent;
use swarm_protocol::PeerId;
use tracing::info;
use web_sys::MediaStream;

use crate::session::Session;

impl Session {
    /// Sends `stream`'s tracks to every connected peer, and to every peer that connects
    /// later. Publishing the same stream twice changes nothing.
    pub(crate) fn publish(self: &Rc<Self>, stream: MediaStream) {
        let id = stream.id();
        {
            let mut published = self.published.borrow_mut();
            if published.iter().any(|s| s.id() == id) {
                return;
            }
            // `Clone::clone`: `stream.clone()` would call `MediaStream.clone()`, a new stream.
            published.push(Clone::clone(&stream));
        }
        info!(stream = id, "publishing");
        for peer in self.open_peers() {
            if let Some(link) = self.link(peer) {
                link.add_stream(&stream);
            }
        }
    }

    /// Stops sending `stream` to everyone. Its tracks keep running (stop them to release the
    /// camera).
    pub(crate) fn unpublish(self: &Rc<Self>, stream: &MediaStream) {
        let id = stream.id();
        self.published.borrow_mut().retain(|s| s.id() != id);
        for link in self.all_links() {
            link.remove_stream(&id);
        }
    }

    /// A channel opened: send it what we publish.
    pub(crate) fn media_peer_open(&self, peer: PeerId) {
        let Some(link) = self.link(peer) else { return };
        for stream in self.published.borrow().iter() {
            link.add_stream(stream);
        }
    }

    /// The peer is gone: its streams have ended.
    pub(crate) fn media_peer_gone(&self, peer: PeerId) {
        let events = self.remote_media.borrow_mut().on_peer_gone(peer);
        for event in events {
            self.emit_media(event, None);
        }
    }

    /// A remote track of `stream` arrived from `peer`.
    pub(crate) fn on_remote_track(&self, peer: PeerId, stream: &MediaStream) {
        let event = self.remote_media.borrow_mut().on_track(peer, &stream.id());
        if let Some(event) = event {
            self.emit_media(event, Some(stream));
        }
    }

    /// A remote track was removed from `stream`.
    pub(crate) fn on_remote_track_removed(&self, peer: PeerId, stream: &MediaStream) {
        let remaining = stream.get_tracks().length() as usize;
        let event = self
            .remote_media
            .borrow_mut()
            .on_track_removed(peer, &stream.id(), remaining);
        if let Some(event) = event {
            self.emit_media(event, Some(stream));
        }
    }

    fn emit_media(&self, event: MediaEvent, stream: Option<&MediaStream>) {
        match event {
            MediaEvent::Started { peer, stream: id } => {
                info!(%peer, stream = id, "remote stream started");
                if let Some(stream) = stream {
                    self.emit("stream", &[peer.to_string().into(), stream.into()]);
                }
            }
            MediaEvent::Ended { peer, stream } => {
                info!(%peer, stream, "remote stream ended");
                self.emit("stream-ended", &[peer.to_string().into(), stream.into()]);
            }
        }
    }
}
