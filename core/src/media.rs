//! Which remote media streams exist, and when the application hears that one started or
//! ended.
//!
//! A remote stream (camera, microphone, screen) arrives track by track; the application is
//! told once per stream when its first track arrives, and once when its last track is gone
//! or its peer leaves. Stream ids are the sender's `MediaStream.id`.

use std::collections::{BTreeMap, BTreeSet};

use swarm_protocol::PeerId;

/// Something the application is told about remote media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// `peer` started sending the stream `stream`.
    Started {
        /// The sender.
        peer: PeerId,
        /// Its stream id.
        stream: String,
    },
    /// The stream ended (unpublished, or its peer left).
    Ended {
        /// The sender.
        peer: PeerId,
        /// Its stream id.
        stream: String,
    },
}

/// The remote streams of every peer.
#[derive(Debug, Default)]
pub struct RemoteStreams {
    streams: BTreeMap<PeerId, BTreeSet<String>>,
}

impl RemoteStreams {
    /// No streams yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A track of `stream` arrived from `peer`.
    pub fn on_track(&mut self, peer: PeerId, stream: &str) -> Option<MediaEvent> {
        let streams = self.streams.entry(peer).or_default();
        streams
            .insert(stream.to_owned())
            .then(|| MediaEvent::Started {
                peer,
                stream: stream.to_owned(),
            })
    }

    /// A track of `stream` from `peer` was removed; `remaining` tracks are left in it.
    pub fn on_track_removed(
        &mut self,
        peer: PeerId,
        stream: &str,
        remaining: usize,
    ) -> Option<MediaEvent> {
        if remaining > 0 {
            return None;
        }
        let streams = self.streams.get_mut(&peer)?;
        let removed = streams.remove(stream);
        if streams.is_empty() {
            self.streams.remove(&peer);
        }
        removed.then(|| MediaEvent::Ended {
            peer,
            stream: stream.to_owned(),
        })
    }

    /// `peer` is gone: every stream it sent has ended.
    pub fn on_peer_gone(&mut self, peer: PeerId) -> Vec<MediaEvent> {
        self.streams
            .remove(&peer)
            .unwrap_or_default()
            .into_iter()
            .map(|stream| MediaEvent::Ended { peer, stream })
            .collect()
    }

    /// The streams `peer` is sending.
    pub fn of(&self, peer: PeerId) -> impl Iterator<Item = &str> {
        self.streams
            .get(&peer)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> PeerId {
        PeerId::from_bytes([n; 16])
    }

    #[test]
    fn one_started_event_per_stream_however_many_tracks() {
        let mut media = RemoteStreams::new();
        assert_eq!(
            media.on_track(id(1), "cam"),
            Some(MediaEvent::Started {
                peer: id(1),
                stream: "cam".into()
            })
        );
        assert_eq!(
            media.on_track(id(1), "cam"),
            None,
            "the audio track of the same stream"
        );
        assert!(
            media.on_track(id(2), "cam").is_some(),
            "stream ids are per peer"
        );
    }

    #[test]
    fn ended_when_the_last_track_goes() {
        let mut media = RemoteStreams::new();
        media.on_track(id(1), "cam");
        assert_eq!(media.on_track_removed(id(1), "cam", 1), None);
        assert_eq!(
            media.on_track_removed(id(1), "cam", 0),
            Some(MediaEvent::Ended {
                peer: id(1),
                stream: "cam".into()
            })
        );
        assert_eq!(media.on_track_removed(id(1), "cam", 0), None, "only once");
        assert!(media.on_track(id(1), "cam").is_some(), "published again");
    }

    #[test]
    fn a_peer_leaving_ends_its_streams() {
        let mut media = RemoteStreams::new();
        media.on_track(id(1), "cam");
        media.on_track(id(1), "screen");
        let mut ended = media.on_peer_gone(id(1));
        ended.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        assert_eq!(ended.len(), 2);
        assert!(media.on_peer_gone(id(1)).is_empty());
        assert_eq!(media.of(id(1)).count(), 0);
    }
}
