//! Sans-I/O logic of the swarm, shared by the signalling server, the browser client and the
//! native peer. Nothing here touches a socket, a clock or a browser: callers feed in what
//! happened and carry out the actions that come back, so every rule is unit-tested natively.
//!
//! # Layout
//! - [`backoff`]: reconnection delays, exponential with jitter.
//! - [`room`]: the server's room registry: who is in which room, whom to tell when someone
//!   joins or leaves, and where a `signal` may be relayed.
//! - [`negotiation`]: who offers, who is polite, and the perfect-negotiation decisions that
//!   keep two peers from glaring when both renegotiate at once.
//! - [`merkle`]: piece hashes, the Merkle root, content ids, manifest and piece verification.
//! - [`bitfield`]: which pieces of a content someone has.
//! - [`selector`]: which piece to request from which peer (rarest first, end game, timeouts).
//! - [`share`]: file sharing between peers: announcements, manifests, requests, verification,
//!   serving. Both the browser client and the native peer drive it.
//! - [`media`]: which remote media streams exist, and when each started or ended.
//! - [`identity`]: self-certifying peer ids (an Ed25519 key that hashes to the id), join
//!   proofs, and signed signals relayed through the mesh.
//! - [`sdp_auth`]: offers and answers signed over their DTLS fingerprints, so a server that
//!   relays them cannot answer in a peer's place.
//! - [`secret_room`]: secret rooms: the name the server sees and the key that seals every
//!   signal, derived from a secret it never learns.
//! - [`signal_guard`]: what every signal goes through on the way out (signed, sealed) and in
//!   (opened, checked, refused with a named reason), on every path.
//! - [`relay`]: signalling through the mesh: signed signals forwarded by neighbours, with a
//!   hop limit and duplicate suppression, while the server is away.
//! - [`directory`]: which peers beyond our neighbours provide which content, heard by
//!   gossip through the mesh.
//! - [`dht`]: the structured layer of large rooms: provider records kept by the peers
//!   closest to a content's key, published and found by routing over the overlay.
//! - [`client`]: a room member's signalling: the mesh, the relay and the server link, as
//!   effects the browser client and the native peer both carry out.
//! - [`mesh`]: a client's view of its room: which peers to connect to, in which role, and
//!   when the application hears `peer-joined` and `peer-left`.
//! - [`node`]: one peer: [`client`] and [`share`] composed, fed with inputs (server frames,
//!   channel events, peer frames, storage results, time) and drained of outputs. The browser
//!   client and the native peer are both thin shells around it.
//! - [`send_queue`]: the per-peer send queue both shells use: back-pressure against the
//!   transport's buffer, withdrawal of pieces not yet sent, and the "drained" signal.
//! - [`cluster`]: what a signalling server knows of peers other instances serve.
//! - [`gossip`]: duplicate suppression for messages flooded over the overlay.
//! - [`kademlia`]: the id space behind [`dht`] and [`mesh`]: keys, XOR distance, the
//!   provider store.
//! - [`token_bucket`]: a burst and a rate, for what neighbours may flood us with.

pub mod backoff;
pub mod bitfield;
pub mod client;
pub mod cluster;
pub mod dht;
pub mod directory;
pub mod gossip;
pub mod identity;
pub mod kademlia;
pub mod media;
pub mod merkle;
pub mod mesh;
pub mod negotiation;
pub mod node;
pub mod relay;
pub mod room;
pub mod sdp_auth;
pub mod secret_room;
pub mod selector;
pub mod send_queue;
pub mod share;
pub mod signal_guard;
pub mod token_bucket;
