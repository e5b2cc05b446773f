//! One WebRTC connection to one remote peer (webrtc-rs), with its `swarm` data channel.
//!
//! Each link runs one task that performs the negotiation in order (our offer if we are the
//! offerer, then every signal the remote peer sends), and, once the channel opens, a reader
//! task and a writer task. Everything they observe goes back to the node as an [`Input`]
//! tagged with the link's serial number, so that events of a link already replaced are
//! recognised and ignored. Who offers and who is polite come from `swarm-core`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::FutureExt;
use swarm_core::negotiation::{Negotiation, RemoteDescription};
use swarm_core::send_queue::{Frame, SendQueue};
use swarm_protocol::{
    ContentId, IceCandidateInit, PeerId, SdpType, SessionDescription, SignalData,
};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tracing::{debug, warn};
use webrtc::data_channel::{
    DataChannel, DataChannelEvent, RTCDataChannelInit, RTCDataChannelMessage, RTCDataChannelState,
};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceServer, RTCPeerConnectionIceEvent, RTCPeerConnectionState,
    RTCSessionDescription,
};

use crate::node::Input;

/// The label of the one data channel every pair of peers shares.
pub(crate) const LABEL: &str = "swarm";

/// Bytes that may wait unacknowledged in a channel before sending blocks (back-pressure).
const SEND_BUFFER: usize = 1024 * 1024;

/// How the node creates connections.
#[derive(Debug, Clone)]
pub(crate) struct LinkConfig {
    /// Local UDP addresses to bind (`0.0.0.0:0`: every interface but loopback).
    pub(crate) udp_addrs: Vec<String>,
    /// STUN/TURN servers from the last `welcome`.
    pub(crate) ice_servers: Vec<RTCIceServer>,
}

/// Frames waiting for the channel, shared between the node and the writer task.
#[derive(Debug, Default)]
struct Outbox {
    frames: Mutex<SendQueue>,
    ready: Notify,
    /// The writer took a frame and has not finished handing it to the channel. Set and read
    /// with the lock held, so the queue and this together tell whether anything is unsent.
    sending: AtomicBool,
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, SendQueue> {
        // A panic while holding the lock leaves a queue that is still consistent.
        self.frames
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether every queued frame has been handed to the channel.
    fn all_sent(&self) -> bool {
        let frames = self.lock();
        frames.is_empty() && !self.sending.load(Ordering::Relaxed)
    }
}

/// How long a closing link may take to send what is still queued.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// The node's handle on one connection. Dropping it closes the connection once what is
/// queued has been sent (or [`FLUSH_TIMEOUT`] has passed).
pub(crate) struct Link {
    serial: u64,
    signals: mpsc::UnboundedSender<SignalData>,
    queue: Arc<Outbox>,
    task: JoinHandle<()>,
    /// Whether the node was told the channel opened (it may hear it twice).
    pub(crate) open: bool,
}

impl Link {
    /// Starts connecting to `peer`; `offerer` creates the channel and the first offer.
    pub(crate) fn start(
        me: PeerId,
        peer: PeerId,
        offerer: bool,
        serial: u64,
        config: LinkConfig,
        inputs: mpsc::UnboundedSender<Input>,
    ) -> Self {
        let (signals, signals_rx) = mpsc::unbounded_channel();
        let queue = Arc::new(Outbox::default());
        let task = LinkTask {
            me,
            peer,
            serial,
            inputs,
            queue: Arc::clone(&queue),
            channel: Arc::default(),
            down: Arc::default(),
        };
        let task = tokio::spawn(task.run(offerer, config, signals_rx));
        Self {
            serial,
            signals,
            queue,
            task,
            open: false,
        }
    }

    /// Closes the connection once what is queued has gone out; the handle ends then.
    pub(crate) fn close(self) -> JoinHandle<()> {
        // Dropping the signal sender ends the negotiation loop, which flushes and closes.
        self.task
    }

    /// This link's serial number.
    pub(crate) fn serial(&self) -> u64 {
        self.serial
    }

    /// Hands a signal from the remote peer to the negotiation.
    pub(crate) fn on_signal(&self, data: SignalData) {
        let _ = self.signals.send(data);
    }

    /// Queues a frame; the writer sends it as the channel's buffer allows.
    pub(crate) fn send(&self, frame: Frame) {
        self.queue.lock().push(frame);
        self.queue.ready.notify_one();
    }

    /// Drops the queued chunks of `piece` of `id`; returns whether the queue has drained
    /// (to be reported as [`Input::Drained`]).
    pub(crate) fn withdraw(&self, id: ContentId, piece: u32) -> bool {
        let mut queue = self.queue.lock();
        queue.withdraw(id, piece);
        queue.take_drained()
    }
}

/// What runs the connection.
#[derive(Clone)]
struct LinkTask {
    me: PeerId,
    peer: PeerId,
    serial: u64,
    inputs: mpsc::UnboundedSender<Input>,
    queue: Arc<Outbox>,
    /// The `swarm` channel, once there is one.
    channel: Arc<OnceLock<Arc<dyn DataChannel>>>,
    /// Told when the connection failed or closed, so the channel's reader reports the end
    /// after the messages that arrived before it.
    down: Arc<Notify>,
}

impl LinkTask {
    fn tell(&self, input: Input) {
        let _ = self.inputs.send(input);
    }

    fn closed(&self) {
        self.tell(Input::LinkClosed {
            peer: self.peer,
            serial: self.serial,
        });
    }

    fn signal(&self, data: SignalData) {
        self.tell(Input::SignalOut {
            peer: self.peer,
            data,
        });
    }

    async fn run(
        self,
        offerer: bool,
        config: LinkConfig,
        mut signals: mpsc::UnboundedReceiver<SignalData>,
    ) {
        let rtc_config = RTCConfigurationBuilder::new()
            .with_ice_servers(config.ice_servers)
            .build();
        let built = PeerConnectionBuilder::new()
            .with_configuration(rtc_config)
            .with_handler(Arc::new(Handler { task: self.clone() }))
            .with_udp_addrs(config.udp_addrs)
            .with_data_channel_send_buffer_limit(SEND_BUFFER)
            .build()
            .await;
        let pc: Arc<dyn PeerConnection> = match built {
            Ok(pc) => Arc::new(pc),
            Err(err) => {
                warn!(peer = %self.peer, error = %err, "cannot create a peer connection");
                self.closed();
                return;
            }
        };
        let mut negotiation = Negotiation::new(self.me, self.peer);
        let mut have_local_offer = false;
        if offerer {
            let init = RTCDataChannelInit {
                ordered: true,
                ..Default::default()
            };
            match pc.create_data_channel(LABEL, Some(init)).await {
                Ok(channel) => self.attach(channel),
                Err(err) => {
                    warn!(peer = %self.peer, error = %err, "cannot create the data channel");
                    self.closed();
                    let _ = pc.close().await;
                    return;
                }
            }
            negotiation.begin_offer();
            let offered = self.offer(&*pc).await;
            negotiation.end_offer();
            match offered {
                Ok(()) => have_local_offer = true,
                Err(err) => {
                    warn!(peer = %self.peer, error = %err, "cannot create an offer");
                    self.closed();
                    let _ = pc.close().await;
                    return;
                }
            }
        }
        let mut remote_set = false;
        let mut early_candidates = Vec::new();
        // Ends when the node drops the link.
        while let Some(data) = signals.recv().await {
            match data {
                SignalData::Sdp(description) => {
                    let decision =
                        negotiation.on_remote_description(description.kind, !have_local_offer);
                    let RemoteDescription::Apply { answer } = decision else {
                        debug!(peer = %self.peer, "ignoring a colliding offer");
                        continue;
                    };
                    if let Err(err) = self.apply(&*pc, description, answer).await {
                        warn!(peer = %self.peer, error = %err, "negotiation failed");
                        self.closed();
                        break;
                    }
                    negotiation.remote_applied();
                    have_local_offer = false;
                    remote_set = true;
                    for candidate in early_candidates.drain(..) {
                        add_candidate(&*pc, self.peer, candidate).await;
                    }
                }
                SignalData::Candidate(Some(candidate)) if !candidate.candidate.is_empty() => {
                    if remote_set {
                        add_candidate(&*pc, self.peer, candidate).await;
                    } else {
                        early_candidates.push(candidate);
                    }
                }
                SignalData::Candidate(_) => {} // the end of the remote candidates
                // Handled by swarm_core::client: busy replies, and sealed signals (opened
                // there before they reach a connection).
                SignalData::Busy | SignalData::Sealed(_) => {}
            }
        }
        self.flush().await;
        let _ = pc.close().await;
    }

    /// Waits (at most [`FLUSH_TIMEOUT`]) until the queue is empty and the channel has no
    /// unacknowledged bytes, so that a last message is not lost by closing.
    async fn flush(&self) {
        let Some(channel) = self.channel.get() else {
            return;
        };
        let deadline = tokio::time::Instant::now() + FLUSH_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            let all_sent = self.queue.all_sent();
            let outstanding = channel.outstanding_bytes().await.unwrap_or(0);
            if all_sent && outstanding == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Creates and sends our offer.
    async fn offer(&self, pc: &dyn PeerConnection) -> webrtc::error::Result<()> {
        let offer = pc.create_offer(None).await?;
        pc.set_local_description(offer).await?;
        self.send_local_description(pc, SdpType::Offer).await;
        Ok(())
    }

    /// Applies a remote description, and answers it if it is an offer.
    async fn apply(
        &self,
        pc: &dyn PeerConnection,
        description: SessionDescription,
        answer: bool,
    ) -> webrtc::error::Result<()> {
        let remote = match description.kind {
            SdpType::Offer => RTCSessionDescription::offer(description.sdp)?,
            SdpType::Answer => RTCSessionDescription::answer(description.sdp)?,
        };
        pc.set_remote_description(remote).await?;
        if answer {
            let local = pc.create_answer(None).await?;
            pc.set_local_description(local).await?;
            self.send_local_description(pc, SdpType::Answer).await;
        }
        Ok(())
    }

    async fn send_local_description(&self, pc: &dyn PeerConnection, kind: SdpType) {
        if let Some(local) = pc.local_description().await {
            self.signal(SignalData::Sdp(SessionDescription {
                kind,
                sdp: local.sdp,
                want: None,
                auth: None,
            }));
        }
    }

    /// Reads a second `swarm` channel: the other side created one too (both offered at
    /// once). We keep sending on ours; what arrives on theirs is passed on until it closes,
    /// which does not end the link. A browser on the other side follows
    /// [`swarm_core::negotiation::keeps_own_channel`]: if it keeps its own, this is it; if it
    /// adopts ours, it closes this one.
    fn read_spare(&self, channel: Arc<dyn DataChannel>) {
        let task = self.clone();
        tokio::spawn(async move {
            while let Some(event) = channel.poll().await {
                match event {
                    DataChannelEvent::OnMessage(message) => task.received(&message),
                    DataChannelEvent::OnClose => break,
                    _ => {}
                }
            }
        });
    }

    /// Passes a message that arrived on a `swarm` channel to the node.
    fn received(&self, message: &RTCDataChannelMessage) {
        self.tell(Input::Frame {
            peer: self.peer,
            serial: self.serial,
            text: message.is_string,
            data: message.data.to_vec(),
        });
    }

    /// Takes over the `swarm` channel: a reader task reports what arrives, and once the
    /// channel is open a writer task sends what the node queues.
    fn attach(&self, channel: Arc<dyn DataChannel>) {
        if self.channel.get().is_some() {
            debug!(peer = %self.peer, "both sides created the channel: reading theirs, sending on ours");
            self.read_spare(channel);
            return;
        }
        let _ = self.channel.set(Arc::clone(&channel));
        let task = self.clone();
        tokio::spawn(async move {
            let mut writer = None;
            // A channel the remote peer created may be open before we listen.
            let mut opened = matches!(channel.ready_state().await, Ok(RTCDataChannelState::Open));
            let mut down = false;
            loop {
                let event = if std::mem::take(&mut opened) {
                    Some(DataChannelEvent::OnOpen)
                } else if down {
                    // The connection is gone: take what already arrived, then stop.
                    channel.poll().now_or_never().flatten()
                } else {
                    tokio::select! {
                        event = channel.poll() => event,
                        () = task.down.notified() => {
                            down = true;
                            continue;
                        }
                    }
                };
                let Some(event) = event else { break };
                match event {
                    DataChannelEvent::OnOpen => {
                        if writer.is_none() {
                            writer = Some(tokio::spawn(task.clone().write(Arc::clone(&channel))));
                        }
                        task.tell(Input::ChannelOpen {
                            peer: task.peer,
                            serial: task.serial,
                        });
                    }
                    DataChannelEvent::OnMessage(message) => task.received(&message),
                    DataChannelEvent::OnClose => break,
                    _ => {}
                }
            }
            if let Some(writer) = writer {
                writer.abort();
            }
            task.closed();
        });
    }

    /// Sends queued frames in order; sending waits while the channel's buffer is full. Tells
    /// the node each time the queue has drained, so the sharing engine reads the next pieces.
    async fn write(self, channel: Arc<dyn DataChannel>) {
        loop {
            let (next, drained) = {
                let mut frames = self.queue.lock();
                // webrtc-rs's `send` itself waits while its buffer is full: nothing is
                // buffered as far as the queue is concerned.
                let next = frames.next(0);
                self.queue.sending.store(next.is_some(), Ordering::Relaxed);
                // Asked only once the last frame has been sent, not as it is taken.
                let drained = next.is_none() && frames.take_drained();
                (next, drained)
            };
            let Some(frame) = next else {
                if drained {
                    self.tell(Input::Drained { peer: self.peer });
                }
                self.queue.ready.notified().await;
                continue;
            };
            let result = match frame {
                Frame::Binary(frame) => channel.send(BytesMut::from(&frame[..])).await,
                Frame::Text(text) => channel.send_text(&text).await,
            };
            self.queue.sending.store(false, Ordering::Relaxed);
            if let Err(err) = result {
                warn!(peer = %self.peer, error = %err, "the data channel refused a frame");
                self.queue.lock().clear();
                return;
            }
        }
    }
}

async fn add_candidate(pc: &dyn PeerConnection, peer: PeerId, candidate: IceCandidateInit) {
    let init = RTCIceCandidateInit {
        candidate: candidate.candidate,
        sdp_mid: candidate.sdp_mid,
        sdp_mline_index: candidate.sdp_m_line_index,
        username_fragment: candidate.username_fragment,
        url: None,
    };
    if let Err(err) = pc.add_ice_candidate(init).await {
        debug!(%peer, error = %err, "ignoring a remote candidate");
    }
}

/// The connection's callbacks.
struct Handler {
    task: LinkTask,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => self
                .task
                .signal(SignalData::Candidate(Some(IceCandidateInit {
                    candidate: init.candidate,
                    // One bundled section: its index is enough for every browser.
                    sdp_mid: None,
                    sdp_m_line_index: Some(0),
                    username_fragment: None,
                }))),
            Err(err) => debug!(peer = %self.task.peer, error = %err, "unreadable local candidate"),
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        debug!(peer = %self.task.peer, ?state, "connection state");
        if matches!(
            state,
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
        ) {
            // With a channel, its reader reports the end once it has passed on every message
            // that arrived first; reporting it from here could overtake them.
            if self.task.channel.get().is_some() {
                self.task.down.notify_one();
            } else {
                self.task.closed();
            }
        }
    }

    async fn on_data_channel(&self, channel: Arc<dyn DataChannel>) {
        match channel.label().await {
            Ok(label) if label == LABEL => self.task.attach(channel),
            Ok(label) => debug!(peer = %self.task.peer, label, "ignoring an unknown data channel"),
            Err(err) => {
                debug!(peer = %self.task.peer, error = %err, "a data channel closed at once")
            }
        }
    }
}
