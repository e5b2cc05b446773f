//! Live media: publishing local streams (camera, microphone, screen) to every peer, and
//! telling the application about remote streams. Which streams started or ended is decided by
//! `swarm-core`'s [`RemoteStreams`](swarm_core::media::RemoteStreams); renegotiation uses the
//! same perfect negotiation as the data channel, so two peers publishing at once never glare.

use swarm_core::media::MediaEvent;
use swarm_protocol::PeerId;
use tracing::info;
use web_sys::MediaStream;

use crate::state::State;

impl State {
    /// Sends `stream`'s tracks to every connected peer, and to every peer that connects
    /// later. Publishing the same stream twice changes nothing.
    pub(crate) fn publish(&mut self, stream: MediaStream) {
        let id = stream.id();
        if self.published.iter().any(|s| s.id() == id) {
            return;
        }
        info!(stream = id, "publishing");
        let open = self.node.open_peers();
        for (peer, link) in self.links_mut() {
            if open.contains(peer) {
                link.add_stream(&stream);
            }
        }
        // `Clone::clone`: `stream.clone()` would call `MediaStream.clone()`, a new stream.
        self.published.push(Clone::clone(&stream));
    }

    /// Stops sending `stream` to everyone. Its tracks keep running (stop them to release the
    /// camera).
    pub(crate) fn unpublish(&mut self, stream: &MediaStream) {
        let id = stream.id();
        self.published.retain(|s| s.id() != id);
        for (_, link) in self.links_mut() {
            link.remove_stream(&id);
        }
    }

    /// A channel opened: send it what we publish.
    pub(crate) fn media_peer_open(&mut self, peer: PeerId) {
        let published = self.published.clone();
        if let Some(link) = self.link_mut(peer) {
            for stream in &published {
                link.add_stream(stream);
            }
        }
    }

    /// The peer is gone: its streams have ended.
    pub(crate) fn media_peer_gone(&mut self, peer: PeerId) {
        for event in self.remote_media.on_peer_gone(peer) {
            self.emit_media(event, None);
        }
    }

    /// A remote track of `stream` arrived from `peer`.
    pub(crate) fn on_remote_track(&mut self, peer: PeerId, stream: &MediaStream) {
        if let Some(event) = self.remote_media.on_track(peer, &stream.id()) {
            self.emit_media(event, Some(stream));
        }
    }

    /// A remote track was removed from `stream`.
    pub(crate) fn on_remote_track_removed(&mut self, peer: PeerId, stream: &MediaStream) {
        let remaining = stream.get_tracks().length() as usize;
        let event = self
            .remote_media
            .on_track_removed(peer, &stream.id(), remaining);
        if let Some(event) = event {
            self.emit_media(event, Some(stream));
        }
    }

    fn emit_media(&mut self, event: MediaEvent, stream: Option<&MediaStream>) {
        match event {
            MediaEvent::Started { peer, stream: id } => {
                info!(%peer, stream = id, "remote stream started");
                if let Some(stream) = stream {
                    self.emit("stream", vec![peer.to_string().into(), stream.into()]);
                }
            }
            MediaEvent::Ended { peer, stream } => {
                info!(%peer, stream, "remote stream ended");
                self.emit("stream-ended", vec![peer.to_string().into(), stream.into()]);
            }
        }
    }
}
