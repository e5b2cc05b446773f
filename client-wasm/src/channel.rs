//! The `swarm` data channel of one peer connection.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::{Rc, Weak};

use js_sys::{ArrayBuffer, Uint8Array};
use swarm_protocol::wire::{self, AppMessage, BinaryFrame};
use swarm_protocol::{ContentId, PeerId};
use tracing::{debug, warn};
use wasm_bindgen::prelude::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{Event, MessageEvent, RtcDataChannel, RtcDataChannelState, RtcDataChannelType};

use crate::error::{ClientError, describe};
use crate::session::Session;
use crate::upload_cap::UploadCap;

/// The label of the one data channel every pair of peers shares.
pub(crate) const LABEL: &str = "swarm";

/// Most bytes allowed to wait in a channel's send buffer before `send` refuses. Chromium
/// closes a channel whose buffer passes 16 MiB, so stay well below.
const MAX_BUFFERED: u32 = 8 * 1024 * 1024;

/// Peer-protocol frames are handed to the browser while less than this is buffered; the rest
/// wait in our queue until the buffer drains to [`LOW_WATER`].
///
/// Small on purpose. With much buffered, SCTP's congestion window grows large and it sends
/// in large bursts, and some of a burst is lost inside Chromium (most likely where the page
/// hands packets to the network process, which allows only 64 KiB in flight). An ordered
/// channel then waits for SCTP's retransmission timer, about 400 ms, often several times in
/// a row while the window grows back. With 1 MiB buffered, every one of 8 raw transfers of
/// 128 MiB between two pages stalled like that (22.3 MiB/s on average); with 128 KiB, none
/// of 5 did (33.1 MiB/s; BENCHMARKS.md). It makes stalls rare, not impossible.
/// `bufferedAmount` counts what is queued to be sent, not what is in flight, so this does not
/// cap the window a long path needs.
const HIGH_WATER: u32 = 128 * 1024;

/// `bufferedAmountLowThreshold`: when the buffer drains to this, queued frames go out.
const LOW_WATER: u32 = 32 * 1024;

/// The channel and its callbacks; dropping it unregisters them and closes the channel.
pub(crate) struct Channel {
    channel: RtcDataChannel,
    peer: PeerId,
    /// Peer-protocol frames waiting for the send buffer to drain.
    queue: Rc<RefCell<VecDeque<Vec<u8>>>>,
    cap: Rc<UploadCap>,
    /// Told whenever the queue empties, so the sharing engine reads the next pieces.
    on_drained: Rc<dyn Fn()>,
    _on_open: Closure<dyn FnMut(Event)>,
    _on_close: Closure<dyn FnMut(Event)>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_buffered_low: Closure<dyn FnMut(Event)>,
}

impl Channel {
    /// Takes over `channel` (created by us or announced by the remote peer). Handlers are
    /// attached at once, so no message can arrive unheard.
    pub(crate) fn attach(
        channel: RtcDataChannel,
        peer: PeerId,
        session: Weak<Session>,
        cap: Rc<UploadCap>,
    ) -> Self {
        channel.set_binary_type(RtcDataChannelType::Arraybuffer);
        let on_open = {
            let session = session.clone();
            Closure::<dyn FnMut(Event)>::new(move |_: Event| {
                if let Some(session) = session.upgrade() {
                    session.on_channel_open(peer);
                }
            })
        };
        let on_close = {
            let session = session.clone();
            Closure::<dyn FnMut(Event)>::new(move |_: Event| {
                if let Some(session) = session.upgrade() {
                    session.on_channel_closed(peer);
                }
            })
        };
        let on_message = {
            let session = session.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
                if let Some(session) = session.upgrade() {
                    on_frame(&session, peer, event.data());
                }
            })
        };
        let queue: Rc<RefCell<VecDeque<Vec<u8>>>> = Rc::default();
        let on_drained: Rc<dyn Fn()> = {
            let session = session.clone();
            Rc::new(move || {
                if let Some(session) = session.upgrade() {
                    session.files_upload_drained(peer);
                }
            })
        };
        let on_buffered_low = {
            let (queue, channel, cap) = (Rc::clone(&queue), channel.clone(), Rc::clone(&cap));
            let drained = Rc::clone(&on_drained);
            Closure::<dyn FnMut(Event)>::new(move |_: Event| {
                pump(&channel, &queue, &cap, &*drained)
            })
        };
        channel.set_buffered_amount_low_threshold(LOW_WATER);
        channel.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        channel.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        channel.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        channel.set_onbufferedamountlow(Some(on_buffered_low.as_ref().unchecked_ref()));
        Self {
            channel,
            peer,
            queue,
            cap,
            on_drained,
            _on_open: on_open,
            _on_close: on_close,
            _on_message: on_message,
            _on_buffered_low: on_buffered_low,
        }
    }

    /// Queues a peer-protocol frame; it is sent as soon as the send buffer has room, so
    /// neither side's memory balloons however fast pieces are read.
    pub(crate) fn send_frame(&self, frame: Vec<u8>) {
        self.queue.borrow_mut().push_back(frame);
        self.pump();
    }

    /// Drops the queued chunks of `piece` of `id` (the peer cancelled it); returns whether
    /// that emptied the queue.
    pub(crate) fn withdraw(&self, id: ContentId, piece: u32) -> bool {
        let mut queue = self.queue.borrow_mut();
        let before = queue.len();
        queue.retain(|frame| !wire::is_piece_chunk(frame, id, piece));
        queue.len() < before && queue.is_empty()
    }

    /// Sends what the buffer (and the upload cap, if any) allows now.
    pub(crate) fn pump(&self) {
        pump(&self.channel, &self.queue, &self.cap, &*self.on_drained);
    }

    /// Whether the channel was already open when it was attached (its `open` event may have
    /// fired before we listened).
    pub(crate) fn is_open(&self) -> bool {
        self.channel.ready_state() == RtcDataChannelState::Open
    }

    /// Sends one application message.
    pub(crate) fn send(&self, message: &OutgoingMessage) -> Result<(), ClientError> {
        let buffered = self.channel.buffered_amount();
        if buffered > MAX_BUFFERED {
            return Err(ClientError::SendBufferFull {
                peer: self.peer.to_string(),
                buffered,
            });
        }
        let sent = match message {
            OutgoingMessage::Text(text) => self.channel.send_with_str(text),
            OutgoingMessage::Frame(frame) => self.channel.send_with_u8_array(frame),
        };
        sent.map_err(|err| ClientError::SendFailed {
            peer: self.peer.to_string(),
            reason: describe(&err),
        })
    }

    /// Unregisters the callbacks and closes the channel. Idempotent.
    /// Only delivers what arrives: its opening and closing are not the connection's (see
    /// `PeerLink::on_remote_channel`).
    pub(crate) fn receive_only(&self) {
        self.channel.set_onopen(None);
        self.channel.set_onclose(None);
        self.channel.set_onbufferedamountlow(None);
    }

    pub(crate) fn close(&self) {
        self.channel.set_onopen(None);
        self.channel.set_onclose(None);
        self.channel.set_onmessage(None);
        self.channel.set_onbufferedamountlow(None);
        self.queue.borrow_mut().clear();
        self.channel.close();
    }
}

/// Sends queued frames while the browser's buffer is below [`HIGH_WATER`] and the upload cap
/// allows; calls `drained` when that empties the queue.
fn pump(
    channel: &RtcDataChannel,
    queue: &RefCell<VecDeque<Vec<u8>>>,
    cap: &UploadCap,
    drained: &dyn Fn(),
) {
    if channel.ready_state() != RtcDataChannelState::Open {
        return;
    }
    let mut sent = false;
    while channel.buffered_amount() < HIGH_WATER {
        let Some(len) = queue.borrow().front().map(Vec::len) else {
            break;
        };
        if !cap.take(len) {
            return; // the session's tick pumps again
        }
        let Some(frame) = queue.borrow_mut().pop_front() else {
            break;
        };
        if let Err(err) = channel.send_with_u8_array(&frame) {
            warn!(error = %describe(&err), "a data channel refused a frame");
            queue.borrow_mut().clear();
            return;
        }
        sent = true;
    }
    // Also when the last frame filled the buffer: no later pump would find anything to send,
    // so this is the only time to tell.
    if sent && queue.borrow().is_empty() {
        drained();
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.close();
    }
}

/// An application message checked and framed once, ready to send to any number of peers.
#[derive(Debug)]
pub(crate) enum OutgoingMessage {
    /// Sent as a text frame.
    Text(String),
    /// A complete binary frame (tag and payload).
    Frame(Vec<u8>),
}

impl OutgoingMessage {
    /// Accepts a string, a Uint8Array (or any typed array view) or an ArrayBuffer.
    pub(crate) fn from_js(data: &JsValue) -> Result<Self, ClientError> {
        if let Some(text) = data.as_string() {
            AppMessage::Text(&text)
                .check_len()
                .map_err(ClientError::TooLarge)?;
            return Ok(Self::Text(text));
        }
        let bytes = if let Some(array) = data.dyn_ref::<Uint8Array>() {
            array.to_vec()
        } else if let Some(buffer) = data.dyn_ref::<ArrayBuffer>() {
            Uint8Array::new(buffer).to_vec()
        } else {
            return Err(ClientError::BadData);
        };
        wire::encode_app_binary(&bytes)
            .map(Self::Frame)
            .map_err(ClientError::TooLarge)
    }
}

/// A frame arrived from `peer`: text frames are application strings, binary frames are read
/// with the wire module.
fn on_frame(session: &Rc<Session>, peer: PeerId, data: JsValue) {
    if data.is_string() {
        session.on_app_message(peer, data);
        return;
    }
    let Some(buffer) = data.dyn_ref::<ArrayBuffer>() else {
        warn!(%peer, "ignoring a data-channel frame that is neither text nor binary");
        return;
    };
    let frame = Uint8Array::new(buffer).to_vec();
    match wire::decode_binary(&frame) {
        Ok(BinaryFrame::App(payload)) => {
            session.on_app_message(peer, Uint8Array::from(payload).into());
        }
        Ok(BinaryFrame::Peer(msg)) => session.files_message(peer, msg),
        Ok(BinaryFrame::Relay(relay)) => session.on_relay(peer, relay),
        Ok(BinaryFrame::Route(route)) => session.on_route(peer, route),
        Err(err) => debug!(%peer, error = %err, "dropping a frame"),
    }
}
