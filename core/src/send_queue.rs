//! The send queue of one `swarm` data channel, with back-pressure: frames wait here, not in
//! the transport's buffer, until the buffer has room, so neither side's memory balloons
//! however fast pieces are read; the queued chunks of a piece the peer cancelled can still be
//! withdrawn; and the owner learns when the queue has emptied, which is when the sharing
//! engine reads the next pieces ([`crate::node::Input::Drained`]).
//!
//! Both shells use it: the browser hands frames to its channel while `bufferedAmount` is
//! below [`HIGH_WATER`] and again on `bufferedamountlow` ([`LOW_WATER`]); the native peer's
//! writer takes one frame at a time and waits for the channel to accept it.

use std::collections::VecDeque;

use swarm_protocol::ContentId;
use swarm_protocol::wire;

/// Frames go to the transport while less than this is buffered in it. Small on purpose:
/// with much buffered, SCTP's bursts lose packets inside Chromium and an ordered channel
/// waits for its retransmission timer (BENCHMARKS.md, "send buffer").
pub const HIGH_WATER: usize = 128 * 1024;

/// When the transport's buffer drains to this, queued frames go out again (the browser's
/// `bufferedAmountLowThreshold`).
pub const LOW_WATER: usize = 32 * 1024;

/// A message waiting for the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A binary frame: the peer protocol, the relay, the structured layer, or an application
    /// binary message.
    Binary(Vec<u8>),
    /// An application text message.
    Text(String),
}

impl Frame {
    /// Its length in bytes, as the transport counts it.
    pub fn len(&self) -> usize {
        match self {
            Self::Binary(bytes) => bytes.len(),
            Self::Text(text) => text.len(),
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Frames waiting for one channel, in order.
#[derive(Debug, Default)]
pub struct SendQueue {
    frames: VecDeque<Frame>,
    /// Frames left the queue since the owner was last told it drained.
    unreported: bool,
}

impl SendQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a frame at the back.
    pub fn push(&mut self, frame: Frame) {
        self.frames.push_back(frame);
    }

    /// The next frame to hand to a transport that has `buffered` bytes waiting, if the
    /// buffer is below [`HIGH_WATER`] and anything is queued.
    pub fn next(&mut self, buffered: usize) -> Option<Frame> {
        if buffered >= HIGH_WATER {
            return None;
        }
        let frame = self.frames.pop_front()?;
        self.unreported = true;
        Some(frame)
    }

    /// The length of the frame [`SendQueue::next`] would return (for a rate cap).
    pub fn front_len(&self) -> Option<usize> {
        self.frames.front().map(Frame::len)
    }

    /// Drops the queued chunks of `piece` of `id` (the peer cancelled it).
    pub fn withdraw(&mut self, id: ContentId, piece: u32) {
        let before = self.frames.len();
        self.frames.retain(|frame| match frame {
            Frame::Binary(bytes) => !wire::is_piece_chunk(bytes, id, piece),
            Frame::Text(_) => true,
        });
        if self.frames.len() < before {
            self.unreported = true;
        }
    }

    /// Whether the queue has emptied since frames last left it (by sending or withdrawing):
    /// true once per emptying, so the owner reports [`crate::node::Input::Drained`] once.
    /// It is also true when the last frame filled the transport's buffer: no later call would
    /// find anything to send, so this is the only time to tell.
    pub fn take_drained(&mut self) -> bool {
        if self.frames.is_empty() && self.unreported {
            self.unreported = false;
            return true;
        }
        false
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// How many frames are queued.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Drops everything queued (the channel is gone).
    pub fn clear(&mut self) {
        self.frames.clear();
        self.unreported = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarm_protocol::PeerMsg;

    fn chunk(id: ContentId, piece: u32) -> Frame {
        let frame = PeerMsg::Piece {
            id,
            piece,
            offset: 0,
            data: &[7; 16],
        };
        Frame::Binary(frame.encode())
    }

    #[test]
    fn frames_leave_in_order_while_the_buffer_has_room() {
        let mut queue = SendQueue::new();
        queue.push(Frame::Text("a".into()));
        queue.push(Frame::Text("b".into()));
        assert_eq!(queue.next(HIGH_WATER), None, "a full buffer takes nothing");
        assert_eq!(queue.next(0), Some(Frame::Text("a".into())));
        assert_eq!(queue.next(HIGH_WATER - 1), Some(Frame::Text("b".into())));
        assert_eq!(queue.next(0), None);
    }

    #[test]
    fn drained_is_reported_once_per_emptying() {
        let mut queue = SendQueue::new();
        assert!(!queue.take_drained(), "nothing was ever sent");
        queue.push(Frame::Binary(vec![1]));
        queue.push(Frame::Binary(vec![2]));
        assert!(queue.next(0).is_some());
        assert!(!queue.take_drained(), "a frame still waits");
        assert!(queue.next(0).is_some());
        assert!(queue.take_drained());
        assert!(!queue.take_drained(), "told once");
    }

    #[test]
    fn the_last_frame_filling_the_buffer_still_reports_drained() {
        let mut queue = SendQueue::new();
        queue.push(Frame::Binary(vec![0; 10]));
        assert!(queue.next(HIGH_WATER - 1).is_some());
        // The buffer is full now, and nothing is left: this is the only time to tell.
        assert!(queue.take_drained());
    }

    #[test]
    fn withdrawing_a_cancelled_piece_keeps_the_others_and_can_drain() {
        let id = ContentId::from_bytes([3; 32]);
        let other = ContentId::from_bytes([4; 32]);
        let mut queue = SendQueue::new();
        queue.push(chunk(id, 1));
        queue.push(chunk(other, 1));
        queue.push(chunk(id, 2));
        queue.withdraw(id, 1);
        assert_eq!(queue.len(), 2);
        assert!(!queue.take_drained());
        queue.withdraw(other, 1);
        queue.withdraw(id, 2);
        assert!(queue.is_empty());
        assert!(
            queue.take_drained(),
            "withdrawing the last frames empties the queue"
        );
    }

    #[test]
    fn withdrawing_nothing_reports_nothing() {
        let mut queue = SendQueue::new();
        queue.withdraw(ContentId::from_bytes([3; 32]), 0);
        assert!(!queue.take_drained());
    }

    #[test]
    fn clearing_forgets_a_pending_drain() {
        let mut queue = SendQueue::new();
        queue.push(Frame::Binary(vec![1]));
        queue.push(Frame::Binary(vec![2]));
        let _ = queue.next(0);
        queue.clear();
        assert!(!queue.take_drained());
    }
}
