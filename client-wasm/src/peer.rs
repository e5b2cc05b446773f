//! One `RTCPeerConnection` to one remote peer, negotiated with the perfect-negotiation
//! pattern. The decisions (who is polite, whether to ignore an offer) come from
//! [`swarm_core::negotiation::Negotiation`]; this module performs the browser calls.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};

use js_sys::Promise;
use swarm_core::negotiation::{Negotiation, RemoteDescription, keeps_own_channel};
use swarm_protocol::{
    ContentId, IceCandidateInit, PeerId, SdpType, SessionDescription, SignalData,
};
use tracing::{debug, warn};
use wasm_bindgen::prelude::{Closure, wasm_bindgen};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::{JsFuture, spawn_local};
use web_sys::{
    Event, MediaStream, MediaStreamTrack, RtcConfiguration, RtcDataChannelEvent,
    RtcDataChannelInit, RtcIceCandidateInit, RtcPeerConnection, RtcPeerConnectionIceEvent,
    RtcPeerConnectionState, RtcRtpSender, RtcSdpType, RtcSessionDescriptionInit, RtcSignalingState,
    RtcTrackEvent,
};

use crate::channel::{self, Channel, OutgoingMessage};
use crate::error::{ClientError, describe};
use crate::session::Session;

#[wasm_bindgen]
extern "C" {
    /// `RTCPeerConnection` with the bindings web-sys lacks.
    #[wasm_bindgen(extends = RtcPeerConnection, js_name = RTCPeerConnection)]
    type PeerConnectionExt;

    /// `setLocalDescription()` without arguments: the browser creates the right offer or
    /// answer for the current state itself, which perfect negotiation relies on.
    #[wasm_bindgen(method, js_name = setLocalDescription)]
    fn set_local_description_implicit(this: &PeerConnectionExt) -> Promise;
}

/// Calls `setLocalDescription()` without arguments.
fn set_local_description(pc: &RtcPeerConnection) -> Promise {
    pc.unchecked_ref::<PeerConnectionExt>()
        .set_local_description_implicit()
}

/// A stream a peer sends us, with the listener that reports its tracks leaving.
type RemoteStream = (MediaStream, Closure<dyn FnMut(Event)>);

/// A peer connection with its callbacks; dropping it unregisters them and closes it.
pub(crate) struct PeerLink {
    peer: PeerId,
    pc: RtcPeerConnection,
    negotiation: RefCell<Negotiation>,
    channel: RefCell<Option<Channel>>,
    /// Whether `channel` is the one this side created.
    own_channel: Cell<bool>,
    /// Whether this side keeps its own channel when both sides created one.
    keeps_own_channel: bool,
    /// The channel the other side created when both did and ours was kept: only read from,
    /// until the other side closes it.
    spare: RefCell<Option<Channel>>,
    /// Our senders, by the id of the local stream their track belongs to.
    senders: RefCell<Vec<(String, RtcRtpSender)>>,
    /// Remote streams and their `removetrack` listeners, by stream id.
    remote_streams: RefCell<HashMap<String, RemoteStream>>,
    _on_negotiation_needed: Closure<dyn FnMut(Event)>,
    _on_track: Closure<dyn FnMut(RtcTrackEvent)>,
    _on_ice_candidate: Closure<dyn FnMut(RtcPeerConnectionIceEvent)>,
    _on_data_channel: Closure<dyn FnMut(RtcDataChannelEvent)>,
    _on_state_change: Closure<dyn FnMut(Event)>,
}

impl PeerLink {
    /// Creates the connection from `me` to `peer`. The `offerer` creates the `swarm` data
    /// channel, which makes the browser ask for negotiation; the other side waits for the
    /// offer and the announced channel.
    pub(crate) fn new(
        session: &Rc<Session>,
        me: PeerId,
        peer: PeerId,
        offerer: bool,
        config: &RtcConfiguration,
    ) -> Result<Rc<Self>, JsValue> {
        let pc = RtcPeerConnection::new_with_configuration(config)?;
        let weak = Rc::downgrade(session);

        let on_negotiation_needed = {
            let session = weak.clone();
            Closure::<dyn FnMut(Event)>::new(move |_: Event| {
                if let Some(link) = link_of(&session, peer) {
                    spawn_local(link.offer(session.clone()));
                }
            })
        };
        let on_ice_candidate = {
            let session = weak.clone();
            Closure::<dyn FnMut(RtcPeerConnectionIceEvent)>::new(
                move |event: RtcPeerConnectionIceEvent| {
                    let Some(session) = session.upgrade() else {
                        return;
                    };
                    let candidate = event.candidate().map(|c| IceCandidateInit {
                        candidate: c.candidate(),
                        sdp_mid: c.sdp_mid(),
                        sdp_m_line_index: c.sdp_m_line_index(),
                        username_fragment: None,
                    });
                    session.send_signal(peer, &SignalData::Candidate(candidate));
                },
            )
        };
        let on_data_channel = {
            let session = weak.clone();
            Closure::<dyn FnMut(RtcDataChannelEvent)>::new(move |event: RtcDataChannelEvent| {
                let channel = event.channel();
                if channel.label() != channel::LABEL {
                    debug!(%peer, label = channel.label(), "ignoring an unknown data channel");
                    return;
                }
                if let Some(link) = link_of(&session, peer) {
                    link.on_remote_channel(channel, session.clone());
                }
            })
        };
        let on_state_change = {
            let session = weak.clone();
            Closure::<dyn FnMut(Event)>::new(move |_: Event| {
                let Some(session) = session.upgrade() else {
                    return;
                };
                let Some(link) = session.link(peer) else {
                    return;
                };
                let state = link.pc.connection_state();
                debug!(%peer, ?state, "connection state");
                if state == RtcPeerConnectionState::Failed {
                    warn!(%peer, "the peer connection failed");
                }
                if matches!(
                    state,
                    RtcPeerConnectionState::Failed | RtcPeerConnectionState::Closed
                ) {
                    session.on_channel_closed(peer);
                }
            })
        };
        let on_track = {
            let session = weak.clone();
            Closure::<dyn FnMut(RtcTrackEvent)>::new(move |event: RtcTrackEvent| {
                let Some(session) = session.upgrade() else {
                    return;
                };
                let Some(link) = session.link(peer) else {
                    return;
                };
                let streams = event.streams();
                let stream: MediaStream = match streams.get(0).dyn_into() {
                    Ok(stream) => stream,
                    // A track sent without a stream: give it one of its own.
                    Err(_) => match MediaStream::new() {
                        Ok(stream) => {
                            stream.add_track(&event.track());
                            stream
                        }
                        Err(_) => return,
                    },
                };
                link.watch_remote_stream(&session, &stream);
                session.on_remote_track(peer, &stream);
            })
        };
        pc.set_ontrack(Some(on_track.as_ref().unchecked_ref()));
        pc.set_onnegotiationneeded(Some(on_negotiation_needed.as_ref().unchecked_ref()));
        pc.set_onicecandidate(Some(on_ice_candidate.as_ref().unchecked_ref()));
        pc.set_ondatachannel(Some(on_data_channel.as_ref().unchecked_ref()));
        pc.set_onconnectionstatechange(Some(on_state_change.as_ref().unchecked_ref()));

        let link = Rc::new(Self {
            peer,
            pc,
            negotiation: RefCell::new(Negotiation::new(me, peer)),
            channel: RefCell::new(None),
            own_channel: Cell::new(false),
            keeps_own_channel: keeps_own_channel(me, peer),
            spare: RefCell::new(None),
            senders: RefCell::new(Vec::new()),
            remote_streams: RefCell::new(HashMap::new()),
            _on_negotiation_needed: on_negotiation_needed,
            _on_track: on_track,
            _on_ice_candidate: on_ice_candidate,
            _on_data_channel: on_data_channel,
            _on_state_change: on_state_change,
        });
        if offerer {
            let init = RtcDataChannelInit::new();
            init.set_ordered(true);
            let channel = link
                .pc
                .create_data_channel_with_data_channel_dict(channel::LABEL, &init);
            link.attach(channel, weak);
            link.own_channel.set(true);
        }
        Ok(link)
    }

    /// The other side announced a `swarm` channel. If we created one too (both sides offered
    /// at once), one of the two is kept by a rule both sides follow
    /// ([`keeps_own_channel`]); otherwise it is the channel.
    fn on_remote_channel(&self, channel: web_sys::RtcDataChannel, session: Weak<Session>) {
        let have_own = self.own_channel.get() && self.channel.borrow().is_some();
        if have_own && self.keeps_own_channel {
            debug!(peer = %self.peer, "both sides created the channel: keeping ours");
            let Some(cap) = session.upgrade().map(|s| s.upload_cap()) else {
                return;
            };
            let spare = Channel::attach(channel, self.peer, session, cap);
            spare.receive_only();
            if let Some(old) = self.spare.borrow_mut().replace(spare) {
                old.close();
            }
            return;
        }
        if have_own {
            debug!(peer = %self.peer, "both sides created the channel: adopting theirs");
        }
        self.own_channel.set(false);
        self.attach(channel, session);
    }

    fn attach(&self, channel: web_sys::RtcDataChannel, session: Weak<Session>) {
        let Some(cap) = session.upgrade().map(|s| s.upload_cap()) else {
            return;
        };
        let channel = Channel::attach(channel, self.peer, session.clone(), cap);
        let already_open = channel.is_open();
        if let Some(old) = self.channel.borrow_mut().replace(channel) {
            old.close();
        }
        if already_open && let Some(session) = session.upgrade() {
            session.on_channel_open(self.peer);
        }
    }

    /// Sends one application message on the data channel.
    pub(crate) fn send(&self, message: &OutgoingMessage) -> Result<(), ClientError> {
        match self.channel.borrow().as_ref() {
            Some(channel) => channel.send(message),
            None => Err(ClientError::UnknownPeer(self.peer.to_string())),
        }
    }

    /// Sends every track of `stream` on this connection (renegotiating).
    pub(crate) fn add_stream(&self, stream: &MediaStream) {
        let id = stream.id();
        if self.senders.borrow().iter().any(|(s, _)| *s == id) {
            return;
        }
        for track in stream.get_tracks().iter() {
            let track: MediaStreamTrack = track.unchecked_into();
            let sender = self.pc.add_track_0(&track, stream);
            self.senders.borrow_mut().push((id.clone(), sender));
        }
    }

    /// Stops sending the tracks of local stream `id` (renegotiating).
    pub(crate) fn remove_stream(&self, id: &str) {
        let removed: Vec<RtcRtpSender> = {
            let mut senders = self.senders.borrow_mut();
            let (gone, kept) = std::mem::take(&mut *senders)
                .into_iter()
                .partition(|(stream, _)| stream == id);
            *senders = kept;
            gone.into_iter().map(|(_, sender)| sender).collect()
        };
        for sender in removed {
            self.pc.remove_track(&sender);
        }
    }

    /// Listens for tracks leaving a remote stream, once per stream.
    fn watch_remote_stream(&self, session: &Rc<Session>, stream: &MediaStream) {
        let id = stream.id();
        if self.remote_streams.borrow().contains_key(&id) {
            return;
        }
        let peer = self.peer;
        let on_remove = {
            let (session, stream) = (Rc::downgrade(session), Clone::clone(stream));
            Closure::<dyn FnMut(Event)>::new(move |_: Event| {
                if let Some(session) = session.upgrade() {
                    session.on_remote_track_removed(peer, &stream);
                }
            })
        };
        stream.set_onremovetrack(Some(on_remove.as_ref().unchecked_ref()));
        self.remote_streams
            .borrow_mut()
            .insert(id, (Clone::clone(stream), on_remove));
    }

    /// The connection's statistics (`RTCPeerConnection.getStats()`).
    pub(crate) fn stats(&self) -> Promise {
        self.pc.get_stats()
    }

    /// Sends queued frames the buffer and the upload cap allow now.
    pub(crate) fn pump(&self) {
        if let Some(channel) = self.channel.borrow().as_ref() {
            channel.pump();
        }
    }

    /// Queues a peer-protocol frame on the data channel (dropped if there is none).
    pub(crate) fn send_frame(&self, frame: Vec<u8>) {
        if let Some(channel) = self.channel.borrow().as_ref() {
            channel.send_frame(frame);
        }
    }

    /// Drops the queued chunks of a piece the peer cancelled; returns whether that emptied
    /// the send queue.
    pub(crate) fn withdraw(&self, id: ContentId, piece: u32) -> bool {
        self.channel
            .borrow()
            .as_ref()
            .is_some_and(|channel| channel.withdraw(id, piece))
    }

    /// Unregisters every callback and closes the channel and the connection. The closures
    /// themselves are freed when the link is dropped.
    pub(crate) fn close(&self) {
        if let Some(channel) = self.channel.borrow().as_ref() {
            channel.close();
        }
        if let Some(spare) = self.spare.borrow().as_ref() {
            spare.close();
        }
        for (stream, _) in self.remote_streams.borrow().values() {
            stream.set_onremovetrack(None);
        }
        self.pc.set_ontrack(None);
        self.pc.set_onnegotiationneeded(None);
        self.pc.set_onicecandidate(None);
        self.pc.set_ondatachannel(None);
        self.pc.set_onconnectionstatechange(None);
        self.pc.close();
    }

    /// `negotiationneeded`: create and send an offer.
    async fn offer(self: Rc<Self>, session: Weak<Session>) {
        self.negotiation.borrow_mut().begin_offer();
        let result = JsFuture::from(set_local_description(&self.pc)).await;
        self.negotiation.borrow_mut().end_offer();
        match result {
            Ok(_) => self.send_local_description(&session),
            Err(err) => warn!(peer = %self.peer, error = %describe(&err), "cannot create an offer"),
        }
    }

    /// A `signal` from this peer. The browser call is made before returning, so signals are
    /// applied in the order they arrived; only the waiting for the result is asynchronous.
    pub(crate) fn on_signal(self: &Rc<Self>, session: &Rc<Session>, data: SignalData) {
        match data {
            SignalData::Sdp(description) => self.on_description(session, description),
            // Handled by the room logic (swarm_core::client); never passed on.
            SignalData::Busy => {}
            SignalData::Candidate(candidate) => {
                let init = candidate.map(|c| {
                    let init = RtcIceCandidateInit::new(&c.candidate);
                    init.set_sdp_mid(c.sdp_mid.as_deref());
                    init.set_sdp_m_line_index(c.sdp_m_line_index);
                    init
                });
                let added = self
                    .pc
                    .add_ice_candidate_with_opt_rtc_ice_candidate_init(init.as_ref());
                let link = Rc::clone(self);
                spawn_local(async move {
                    if let Err(err) = JsFuture::from(added).await
                        && !link.negotiation.borrow().candidate_error_expected()
                    {
                        warn!(peer = %link.peer, error = %describe(&err), "cannot add an ICE candidate");
                    }
                });
            }
        }
    }

    fn on_description(self: &Rc<Self>, session: &Rc<Session>, description: SessionDescription) {
        let stable = self.pc.signaling_state() == RtcSignalingState::Stable;
        let decision = self
            .negotiation
            .borrow_mut()
            .on_remote_description(description.kind, stable);
        let RemoteDescription::Apply { answer } = decision else {
            debug!(peer = %self.peer, "ignoring a colliding offer (impolite side)");
            return;
        };
        let kind = match description.kind {
            SdpType::Offer => RtcSdpType::Offer,
            SdpType::Answer => RtcSdpType::Answer,
        };
        let init = RtcSessionDescriptionInit::new(kind);
        init.set_sdp(&description.sdp);
        let applied = self.pc.set_remote_description(&init);
        let link = Rc::clone(self);
        let session = Rc::downgrade(session);
        spawn_local(async move {
            let result = JsFuture::from(applied).await;
            link.negotiation.borrow_mut().remote_applied();
            if let Err(err) = result {
                warn!(peer = %link.peer, error = %describe(&err), "cannot apply a remote description");
                return;
            }
            if answer {
                match JsFuture::from(set_local_description(&link.pc)).await {
                    Ok(_) => link.send_local_description(&session),
                    Err(err) => {
                        warn!(peer = %link.peer, error = %describe(&err), "cannot create an answer");
                    }
                }
            }
        });
    }

    fn send_local_description(&self, session: &Weak<Session>) {
        let Some(session) = session.upgrade() else {
            return;
        };
        let Some(local) = self.pc.local_description() else {
            return;
        };
        let kind = match local.type_() {
            RtcSdpType::Offer => SdpType::Offer,
            RtcSdpType::Answer => SdpType::Answer,
            other => {
                debug!(peer = %self.peer, ?other, "not sending a provisional description");
                return;
            }
        };
        let description = SessionDescription {
            kind,
            sdp: local.sdp(),
            want: None,
        };
        session.send_signal(self.peer, &SignalData::Sdp(description));
    }
}

impl Drop for PeerLink {
    fn drop(&mut self) {
        self.close();
    }
}

fn link_of(session: &Weak<Session>, peer: PeerId) -> Option<Rc<PeerLink>> {
    session.upgrade()?.link(peer)
}
