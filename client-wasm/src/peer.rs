//! One `RTCPeerConnection` to one remote peer, negotiated with the perfect-negotiation
//! pattern. The decisions (who is polite, whether to ignore an offer, which channel to keep
//! when both sides created one) come from [`swarm_core::negotiation`]; this module performs
//! the browser calls. Its callbacks post what happens to the shell's inbox, tagged with the
//! connection's serial number so the shell can ignore a connection it has replaced.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

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
use crate::inbox::{self, Inbox};
use crate::upload_cap::UploadCap;

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

/// What the negotiation's asynchronous steps share with the link.
struct Negotiator {
    peer: PeerId,
    serial: u32,
    pc: RtcPeerConnection,
    negotiation: RefCell<Negotiation>,
    inbox: Inbox,
    /// Channels the other side announced, their callbacks attached at once so no message is
    /// lost, until the shell adopts them ([`PeerLink::on_remote_channel`]).
    announced: RefCell<Vec<Channel>>,
}

/// A peer connection with its callbacks; dropping it unregisters them and closes it.
pub(crate) struct PeerLink {
    negotiator: Rc<Negotiator>,
    channel: Option<Channel>,
    /// Whether `channel` is the one this side created.
    own_channel: bool,
    /// Whether this side keeps its own channel when both sides created one.
    keeps_own_channel: bool,
    /// The channel the other side created when both did and ours was kept: only read from,
    /// until the other side closes it.
    spare: Option<Channel>,
    /// Our senders, by the id of the local stream their track belongs to.
    senders: Vec<(String, RtcRtpSender)>,
    /// Remote streams and their `removetrack` listeners, by stream id.
    remote_streams: HashMap<String, RemoteStream>,
    _on_negotiation_needed: Closure<dyn FnMut(Event)>,
    _on_track: Closure<dyn FnMut(RtcTrackEvent)>,
    _on_ice_candidate: Closure<dyn FnMut(RtcPeerConnectionIceEvent)>,
    _on_data_channel: Closure<dyn FnMut(RtcDataChannelEvent)>,
    _on_state_change: Closure<dyn FnMut(Event)>,
}

impl PeerLink {
    /// Creates connection `serial` from `me` to `peer`. The `offerer` creates the `swarm` data
    /// channel, which makes the browser ask for negotiation; the other side waits for the
    /// offer and the announced channel.
    pub(crate) fn new(
        inbox: &Inbox,
        me: PeerId,
        peer: PeerId,
        serial: u32,
        offerer: bool,
        config: &RtcConfiguration,
    ) -> Result<Self, JsValue> {
        let pc = RtcPeerConnection::new_with_configuration(config)?;
        let negotiator = Rc::new(Negotiator {
            peer,
            serial,
            pc: pc.clone(),
            negotiation: RefCell::new(Negotiation::new(me, peer)),
            inbox: inbox.clone(),
            announced: RefCell::default(),
        });

        let on_negotiation_needed = {
            let negotiator = Rc::downgrade(&negotiator);
            Closure::<dyn FnMut(Event)>::new(move |_: Event| {
                if let Some(negotiator) = negotiator.upgrade() {
                    spawn_local(negotiator.offer());
                }
            })
        };
        let on_ice_candidate = {
            let inbox = inbox.clone();
            Closure::<dyn FnMut(RtcPeerConnectionIceEvent)>::new(
                move |event: RtcPeerConnectionIceEvent| {
                    let candidate = event.candidate().map(|c| IceCandidateInit {
                        candidate: c.candidate(),
                        sdp_mid: c.sdp_mid(),
                        sdp_m_line_index: c.sdp_m_line_index(),
                        username_fragment: None,
                    });
                    inbox.post(inbox::Event::LocalSignal {
                        peer,
                        link: serial,
                        data: SignalData::Candidate(candidate),
                    });
                },
            )
        };
        let on_data_channel = {
            let negotiator = Rc::downgrade(&negotiator);
            Closure::<dyn FnMut(RtcDataChannelEvent)>::new(move |event: RtcDataChannelEvent| {
                let channel = event.channel();
                if channel.label() != channel::LABEL {
                    debug!(%peer, label = channel.label(), "ignoring an unknown data channel");
                    return;
                }
                let Some(negotiator) = negotiator.upgrade() else {
                    return;
                };
                let channel = Channel::attach(channel, peer, serial, &negotiator.inbox);
                negotiator.announced.borrow_mut().push(channel);
                negotiator
                    .inbox
                    .post(inbox::Event::RemoteChannel { peer, link: serial });
            })
        };
        let on_state_change = {
            let (inbox, pc) = (inbox.clone(), pc.clone());
            Closure::<dyn FnMut(Event)>::new(move |_: Event| {
                let state = pc.connection_state();
                debug!(%peer, ?state, "connection state");
                if state == RtcPeerConnectionState::Failed {
                    warn!(%peer, "the peer connection failed");
                }
                if matches!(
                    state,
                    RtcPeerConnectionState::Failed | RtcPeerConnectionState::Closed
                ) {
                    inbox.post(inbox::Event::LinkClosed { peer, link: serial });
                }
            })
        };
        let on_track = {
            let inbox = inbox.clone();
            Closure::<dyn FnMut(RtcTrackEvent)>::new(move |event: RtcTrackEvent| {
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
                inbox.post(inbox::Event::Track {
                    peer,
                    link: serial,
                    stream,
                });
            })
        };
        pc.set_ontrack(Some(on_track.as_ref().unchecked_ref()));
        pc.set_onnegotiationneeded(Some(on_negotiation_needed.as_ref().unchecked_ref()));
        pc.set_onicecandidate(Some(on_ice_candidate.as_ref().unchecked_ref()));
        pc.set_ondatachannel(Some(on_data_channel.as_ref().unchecked_ref()));
        pc.set_onconnectionstatechange(Some(on_state_change.as_ref().unchecked_ref()));

        let mut link = Self {
            negotiator,
            channel: None,
            own_channel: false,
            keeps_own_channel: keeps_own_channel(me, peer),
            spare: None,
            senders: Vec::new(),
            remote_streams: HashMap::new(),
            _on_negotiation_needed: on_negotiation_needed,
            _on_track: on_track,
            _on_ice_candidate: on_ice_candidate,
            _on_data_channel: on_data_channel,
            _on_state_change: on_state_change,
        };
        if offerer {
            let init = RtcDataChannelInit::new();
            init.set_ordered(true);
            let channel = pc.create_data_channel_with_data_channel_dict(channel::LABEL, &init);
            link.channel = Some(Channel::attach(channel, peer, serial, inbox));
            link.own_channel = true;
        }
        Ok(link)
    }

    /// This connection's serial number.
    pub(crate) fn serial(&self) -> u32 {
        self.negotiator.serial
    }

    /// The other side announced a `swarm` channel. If we created one too (both sides offered
    /// at once), one of the two is kept by a rule both sides follow
    /// ([`keeps_own_channel`]); otherwise it is the channel. Returns whether the channel
    /// taken is already open (its `open` event may have fired before we listened).
    pub(crate) fn on_remote_channel(&mut self) -> bool {
        let announced = std::mem::take(&mut *self.negotiator.announced.borrow_mut());
        let mut open = false;
        for channel in announced {
            open |= self.adopt(channel);
        }
        open
    }

    fn adopt(&mut self, channel: Channel) -> bool {
        let peer = self.negotiator.peer;
        let have_own = self.own_channel && self.channel.is_some();
        if have_own && self.keeps_own_channel {
            debug!(%peer, "both sides created the channel: keeping ours");
            channel.receive_only();
            // Dropping the old spare closes it.
            self.spare = Some(channel);
            return false;
        }
        if have_own {
            debug!(%peer, "both sides created the channel: adopting theirs");
        }
        self.own_channel = false;
        let open = channel.is_open();
        self.channel = Some(channel);
        open
    }

    /// Sends one application message on the data channel.
    pub(crate) fn send(&self, message: &OutgoingMessage) -> Result<(), ClientError> {
        match &self.channel {
            Some(channel) => channel.send(message),
            None => Err(ClientError::UnknownPeer(self.negotiator.peer.to_string())),
        }
    }

    /// Queues a peer-protocol frame on the data channel (dropped if there is none) and sends
    /// what fits; returns whether the queue drained.
    pub(crate) fn send_frame(&mut self, frame: Vec<u8>, cap: &mut UploadCap, now: u64) -> bool {
        match &mut self.channel {
            Some(channel) => {
                channel.queue_frame(frame);
                channel.pump(cap, now)
            }
            None => false,
        }
    }

    /// Sends queued frames the buffer and the upload cap allow now; returns whether the
    /// queue drained.
    pub(crate) fn pump(&mut self, cap: &mut UploadCap, now: u64) -> bool {
        self.channel
            .as_mut()
            .is_some_and(|channel| channel.pump(cap, now))
    }

    /// Drops the queued chunks of a piece the peer cancelled; returns whether the queue
    /// drained.
    pub(crate) fn withdraw(
        &mut self,
        id: ContentId,
        piece: u32,
        cap: &mut UploadCap,
        now: u64,
    ) -> bool {
        match &mut self.channel {
            Some(channel) => {
                channel.withdraw(id, piece);
                channel.pump(cap, now)
            }
            None => false,
        }
    }

    /// Sends every track of `stream` on this connection (renegotiating).
    pub(crate) fn add_stream(&mut self, stream: &MediaStream) {
        let id = stream.id();
        if self.senders.iter().any(|(s, _)| *s == id) {
            return;
        }
        for track in stream.get_tracks().iter() {
            let track: MediaStreamTrack = track.unchecked_into();
            let sender = self.negotiator.pc.add_track_0(&track, stream);
            self.senders.push((id.clone(), sender));
        }
    }

    /// Stops sending the tracks of local stream `id` (renegotiating).
    pub(crate) fn remove_stream(&mut self, id: &str) {
        let (gone, kept) = std::mem::take(&mut self.senders)
            .into_iter()
            .partition(|(stream, _)| stream == id);
        self.senders = kept;
        for (_, sender) in gone {
            self.negotiator.pc.remove_track(&sender);
        }
    }

    /// Listens for tracks leaving a remote stream, once per stream.
    pub(crate) fn watch_remote_stream(&mut self, stream: &MediaStream) {
        let id = stream.id();
        if self.remote_streams.contains_key(&id) {
            return;
        }
        let (peer, link) = (self.negotiator.peer, self.negotiator.serial);
        let on_remove = {
            let (inbox, stream) = (self.negotiator.inbox.clone(), Clone::clone(stream));
            Closure::<dyn FnMut(Event)>::new(move |_: Event| {
                inbox.post(inbox::Event::TrackRemoved {
                    peer,
                    link,
                    stream: Clone::clone(&stream),
                });
            })
        };
        stream.set_onremovetrack(Some(on_remove.as_ref().unchecked_ref()));
        self.remote_streams
            .insert(id, (Clone::clone(stream), on_remove));
    }

    /// The connection's statistics (`RTCPeerConnection.getStats()`).
    pub(crate) fn stats(&self) -> Promise {
        self.negotiator.pc.get_stats()
    }

    /// A `signal` from this peer. The browser call is made before returning, so signals are
    /// applied in the order they arrived; only the waiting for the result is asynchronous.
    pub(crate) fn on_signal(&self, data: SignalData) {
        Rc::clone(&self.negotiator).on_signal(data);
    }

    /// Unregisters every callback and closes the channel and the connection. The closures
    /// themselves are freed when the link is dropped.
    pub(crate) fn close(&mut self) {
        if let Some(channel) = &mut self.channel {
            channel.close();
        }
        if let Some(spare) = &mut self.spare {
            spare.close();
        }
        self.negotiator.announced.borrow_mut().clear();
        for (stream, _) in self.remote_streams.values() {
            stream.set_onremovetrack(None);
        }
        let pc = &self.negotiator.pc;
        pc.set_ontrack(None);
        pc.set_onnegotiationneeded(None);
        pc.set_onicecandidate(None);
        pc.set_ondatachannel(None);
        pc.set_onconnectionstatechange(None);
        pc.close();
    }
}

impl Drop for PeerLink {
    fn drop(&mut self) {
        self.close();
    }
}

impl Negotiator {
    /// `negotiationneeded`: create and send an offer.
    async fn offer(self: Rc<Self>) {
        self.negotiation.borrow_mut().begin_offer();
        let result = JsFuture::from(set_local_description(&self.pc)).await;
        self.negotiation.borrow_mut().end_offer();
        match result {
            Ok(_) => self.send_local_description(),
            Err(err) => warn!(peer = %self.peer, error = %describe(&err), "cannot create an offer"),
        }
    }

    fn on_signal(self: Rc<Self>, data: SignalData) {
        match data {
            SignalData::Sdp(description) => self.on_description(description),
            // Handled by the room logic (swarm_core::client; sealed signals are opened
            // there); never passed on.
            SignalData::Busy | SignalData::Sealed(_) => {}
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
                spawn_local(async move {
                    if let Err(err) = JsFuture::from(added).await
                        && !self.negotiation.borrow().candidate_error_expected()
                    {
                        warn!(peer = %self.peer, error = %describe(&err), "cannot add an ICE candidate");
                    }
                });
            }
        }
    }

    fn on_description(self: Rc<Self>, description: SessionDescription) {
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
        spawn_local(async move {
            let result = JsFuture::from(applied).await;
            self.negotiation.borrow_mut().remote_applied();
            if let Err(err) = result {
                warn!(peer = %self.peer, error = %describe(&err), "cannot apply a remote description");
                return;
            }
            if answer {
                match JsFuture::from(set_local_description(&self.pc)).await {
                    Ok(_) => self.send_local_description(),
                    Err(err) => {
                        warn!(peer = %self.peer, error = %describe(&err), "cannot create an answer");
                    }
                }
            }
        });
    }

    fn send_local_description(&self) {
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
            auth: None,
        };
        self.inbox.post(inbox::Event::LocalSignal {
            peer: self.peer,
            link: self.serial,
            data: SignalData::Sdp(description),
        });
    }
}
