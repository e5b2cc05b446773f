//! Wire types shared by every part of the swarm: the signalling server, the browser client
//! and (later) the native peer. Nothing here performs I/O; everything builds for `wasm32`
//! and native alike.
//!
//! # Layout
//! - [`peer_id`]: the 128-bit random [`PeerId`] the server assigns, written as 32 hex digits.
//! - [`room`]: [`RoomName`], the validated room name in `GET /ws/{room}`.
//! - [`signal`]: signalling protocol v1, the JSON frames between a client and the server
//!   ([`ClientMsg`], [`ServerMsg`]) and the `data` payloads peers exchange through it
//!   ([`SignalData`]).
//! - [`content`]: content ids and [`Manifest`]s of shared files.
//! - [`gossip`]: room-wide announcements ([`gossip::Gossip`]) spread through the mesh.
//! - [`wire`]: frames on the `swarm` data channel between peers: application messages and
//!   the peer protocol ([`PeerMsg`]) that moves files.
//!
//! The contract itself, with examples, is written down in `PROTOCOL.md` next to this crate.

mod codec;
pub mod content;
pub mod gossip;
pub mod hex;
pub mod peer_id;
pub mod room;
pub mod route;
pub mod signal;
pub mod wire;

pub use content::{ContentId, ContentIdError, Manifest};
pub use peer_id::{PeerId, PeerIdError};
pub use room::{RoomName, RoomNameError};
pub use signal::{
    ClientMsg, ErrorCode, IceCandidateInit, IceServer, ParseError, SdpAuth, SdpType, ServerMsg,
    SessionDescription, SignalData,
};
pub use wire::{AppMessage, BinaryFrame, PeerMsg, WireError};
