//! The `swarm` data channel of one peer connection: its callbacks post what happens to the
//! shell's inbox, and frames wait in `swarm-core`'s [`SendQueue`] until the channel's send
//! buffer has room.

use js_sys::{ArrayBuffer, Uint8Array};
use swarm_core::send_queue::{Frame, HIGH_WATER, LOW_WATER, SendQueue};
use swarm_protocol::wire::{self, AppMessage};
use swarm_protocol::{ContentId, PeerId};
use tracing::warn;
use wasm_bindgen::prelude::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{Event, MessageEvent, RtcDataChannel, RtcDataChannelState, RtcDataChannelType};

use crate::error::{ClientError, describe};
use crate::inbox::{self, Inbox};
use crate::upload_cap::UploadCap;

/// The label of the one data channel every pair of peers shares.
pub(crate) const LABEL: &str = "swarm";

/// Most bytes allowed to wait in a channel's send buffer before `send` refuses. Chromium
/// closes a channel whose buffer passes 16 MiB, so stay well below.
const MAX_BUFFERED: u32 = 8 * 1024 * 1024;

/// The channel and its callbacks; dropping it unregisters them and closes the channel.
pub(crate) struct Channel {
    channel: RtcDataChannel,
    peer: PeerId,
    /// Peer-protocol frames waiting for the send buffer to drain.
    queue: SendQueue,
    _on_open: Closure<dyn FnMut(Event)>,
    _on_close: Closure<dyn FnMut(Event)>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_buffered_low: Closure<dyn FnMut(Event)>,
}

impl Channel {
    /// Takes over `channel` (created by us or announced by the remote peer) of connection
    /// `link` to `peer`. Handlers are attached at once, so no message can arrive unheard.
    pub(crate) fn attach(channel: RtcDataChannel, peer: PeerId, link: u32, inbox: &Inbox) -> Self {
        channel.set_binary_type(RtcDataChannelType::Arraybuffer);
        let on_open = {
            let inbox = inbox.clone();
            Closure::<dyn FnMut(Event)>::new(move |_: Event| {
                inbox.post(inbox::Event::ChannelOpen { peer, link })
            })
        };
        let on_close = {
            let inbox = inbox.clone();
            Closure::<dyn FnMut(Event)>::new(move |_: Event| {
                inbox.post(inbox::Event::LinkClosed { peer, link })
            })
        };
        let on_message = {
            let inbox = inbox.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
                let data = event.data();
                if let Some(text) = data.as_string() {
                    inbox.post(inbox::Event::Text { peer, link, text });
                } else if let Some(buffer) = data.dyn_ref::<ArrayBuffer>() {
                    let data = Uint8Array::new(buffer).to_vec();
                    inbox.post(inbox::Event::Binary { peer, link, data });
                } else {
                    warn!(%peer, "ignoring a data-channel frame that is neither text nor binary");
                }
            })
        };
        let on_buffered_low = {
            let inbox = inbox.clone();
            Closure::<dyn FnMut(Event)>::new(move |_: Event| {
                inbox.post(inbox::Event::Writable { peer, link })
            })
        };
        channel.set_buffered_amount_low_threshold(LOW_WATER as u32);
        channel.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        channel.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        channel.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        channel.set_onbufferedamountlow(Some(on_buffered_low.as_ref().unchecked_ref()));
        Self {
            channel,
            peer,
            queue: SendQueue::new(),
            _on_open: on_open,
            _on_close: on_close,
            _on_message: on_message,
            _on_buffered_low: on_buffered_low,
        }
    }

    /// Queues a peer-protocol frame; [`Channel::pump`] sends it once the buffer has room.
    pub(crate) fn queue_frame(&mut self, frame: Vec<u8>) {
        self.queue.push(Frame::Binary(frame));
    }

    /// Drops the queued chunks of `piece` of `id` (the peer cancelled it).
    pub(crate) fn withdraw(&mut self, id: ContentId, piece: u32) {
        self.queue.withdraw(id, piece);
    }

    /// Sends queued frames while the browser's buffer has room and `cap` allows; returns
    /// whether the queue has drained since frames last left it (see
    /// [`SendQueue::take_drained`]).
    pub(crate) fn pump(&mut self, cap: &mut UploadCap, now: u64) -> bool {
        if self.channel.ready_state() != RtcDataChannelState::Open {
            return self.queue.take_drained();
        }
        while let Some(len) = self.queue.front_len() {
            let buffered = self.channel.buffered_amount() as usize;
            // `bufferedamountlow` pumps again, or the upkeep when the cap held it back.
            if buffered >= HIGH_WATER || !cap.take(len, now) {
                break;
            }
            let Some(frame) = self.queue.next(buffered) else {
                break;
            };
            let sent = match &frame {
                Frame::Binary(bytes) => self.channel.send_with_u8_array(bytes),
                Frame::Text(text) => self.channel.send_with_str(text),
            };
            if let Err(err) = sent {
                warn!(peer = %self.peer, error = %describe(&err), "a data channel refused a frame");
                self.queue.clear();
                break;
            }
        }
        self.queue.take_drained()
    }

    /// Whether the channel was already open when it was attached (its `open` event may have
    /// fired before we listened).
    pub(crate) fn is_open(&self) -> bool {
        self.channel.ready_state() == RtcDataChannelState::Open
    }

    /// Sends one application message now (ahead of queued frames).
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

    /// Only delivers what arrives: its opening and closing are not the connection's (see
    /// `PeerLink`'s second-channel rule).
    pub(crate) fn receive_only(&self) {
        self.channel.set_onopen(None);
        self.channel.set_onclose(None);
        self.channel.set_onbufferedamountlow(None);
    }

    /// Unregisters the callbacks and closes the channel. Idempotent.
    pub(crate) fn close(&mut self) {
        self.channel.set_onopen(None);
        self.channel.set_onclose(None);
        self.channel.set_onmessage(None);
        self.channel.set_onbufferedamountlow(None);
        self.queue.clear();
        self.channel.close();
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
