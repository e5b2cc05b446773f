//! The `Swarm` class: what a web page uses.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::Array;
use swarm_core::identity::Identity;
use swarm_core::node::{Node, NodeConfig};
use swarm_core::secret_room::RoomSecret;
use swarm_core::share::ShareConfig;
use swarm_core::signal_guard::SignalPolicy;
use swarm_protocol::RoomName;
use tracing::{info, warn};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::RtcConfiguration;

use crate::channel::OutgoingMessage;
use crate::download::Download;
use crate::error::ClientError;
use crate::files::{file_object, manifest_of};
use crate::library;
use crate::options::JoinOptions;
use crate::shell::Shell;
use crate::signalling::room_url;
use crate::state::{JoinWaiter, State};
use crate::storage::{Started, Storage, Tier};
use crate::streaming::{self, RangeReader};
use crate::timer::{now_ms, random_seed};

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** A file known in the room. */
export interface SwarmFile {
  /** Content id: 64 hex digits. */
  id: string;
  name: string;
  /** Length in bytes. */
  size: number;
  /** MIME type ("" when unknown). */
  mime: string;
  /** Connected peers that offer it. */
  sources: number;
  /** Whether this peer holds all of it (shared it, or finished downloading it). */
  complete: boolean;
}

/** Which pieces this peer and each source have; bit i (most significant first) is piece i. */
export interface PieceMap {
  count: number;
  have: Uint8Array;
  peers: { id: string; have: Uint8Array }[];
}

/** Events a Swarm emits, and the arguments its listeners receive. */
export interface SwarmEvents {
  /** A data channel to this peer opened: it can be sent to. */
  "peer-joined": (id: string) => void;
  /** A peer that had joined is gone (closed, failed, or left the room). */
  "peer-left": (id: string) => void;
  /** A message from a peer: a string if it was sent as one, otherwise bytes. */
  "message": (from: string, data: string | Uint8Array) => void;
  /** A peer offered a file this peer had not heard of. */
  "file": (info: SwarmFile) => void;
  /** Something in `files()` changed (a new file, sources, a finished download). */
  "files": () => void;
  /** A peer started sending a media stream (camera, microphone, screen). */
  "stream": (peerId: string, stream: MediaStream) => void;
  /** A remote stream ended: unpublished, or its peer left. */
  "stream-ended": (peerId: string, streamId: string) => void;
  /** The link to the signalling server changed: "reconnecting" when it dropped (peer
   * connections carry on, and signals go through the mesh), "connected" once welcomed again
   * under the same id. */
  "server": (state: "connected" | "reconnecting") => void;
  /** Something in `stored()` changed. */
  "stored": () => void;
  /** A peer's offer or answer was refused, so no connection to it was made (or a signal to
   * an open one was dropped). `reason` names why: "unsigned" (it does not sign and
   * `requireSigned` is set), "fingerprint-mismatch", "bad-signature", "wrong-key",
   * "bad-key", "malformed-signature", "no-fingerprint" (someone between us altered it),
   * "stale-answer", "replayed-offer", "fingerprint-changed" (replayed), "cannot-open",
   * "truncated", "unsealed", "malformed-sealed" (not sealed with this secret room's key).
   * Told once per peer and reason in 30 s. */
  "peer-rejected": (id: string, reason: string) => void;
}

/** The options of `Swarm.join`. */
export interface JoinOptions {
  /** A room token, for a server that needs one (see the server's --token-secret). */
  token?: string;
  /** "relay" sends every connection through the TURN servers the signalling server hands
   * out (to test TURN, or to hide addresses); "all" (the default) lets WebRTC choose. */
  iceTransportPolicy?: "all" | "relay";
  /** Caps the connections this peer opens itself (1 to 1000): a partial mesh for large
   * rooms. It answers others up to twice that. Default: connect to every peer. */
  maxPeers?: number;
  /** Room size (members, counting this peer) above which the files this peer provides are
   * published in the room's structured layer (found with `lookup`) instead of announced to
   * every peer (0 to 1000000). Default: 64. */
  dhtAbove?: number;
  /** The best storage to keep downloads in; a worse one is used where it is not available
   * (see `Swarm.storage`). Default: the best there is. */
  storage?: StorageTier;
  /** Refuse peers whose offers and answers are not signed with their key (protocol v1
   * clients), so the signalling server cannot put itself between two peers. Offers and
   * answers are always signed, and a signature that does not verify is always refused.
   * Default: false. */
  requireSigned?: boolean;
  /** A secret room: the server sees a name derived from this secret and the room's name
   * (never the name), and relays only sealed signals. Only holders of the secret can
   * connect. Must be unguessable (the page makes 128-bit random ones); 1 to 1024 bytes. */
  secret?: string;
}

/** The options of `Swarm.shareFile`. */
export interface ShareOptions {
  /** Keep a copy in this browser's storage, so the file is offered again after a reload. */
  keep?: boolean;
}

/** Where downloads are kept: "opfs" (the Origin Private File System; a secure context),
 * "indexeddb" (also over plain http:// from a LAN address; slower) or "memory" (bounded;
 * nothing survives a reload). */
export type StorageTier = "opfs" | "indexeddb" | "memory";

/** Something the page keeps in storage (see `Swarm.stored`). */
export interface StoredFile {
  /** Content id: 64 hex digits. */
  id: string;
  name: string;
  /** Length in bytes. */
  size: number;
  mime: string;
  /** Verified bytes stored (the size, once complete). */
  received: number;
  /** Whether every piece is here. */
  complete: boolean;
  /** "download": its bytes are in storage; "shared": a file shared from the user's disk, of
   * which only the manifest is kept. */
  kind: "download" | "shared";
  /** Whether it can be served now. A shared file is not available after a reload until it
   * is shared again; a kept download is not while its pieces are being checked. */
  available: boolean;
}

/** What can be sent: text, or bytes (at most 65535 bytes; text at most 65536 UTF-8 bytes). */
export type SwarmMessage = string | Uint8Array | ArrayBuffer;

/** The `code` of every error the API throws or rejects with (`err.name === "SwarmError"`). */
export type SwarmErrorCode =
  | "invalid-room" | "invalid-url" | "server-unreachable" | "unknown-peer"
  | "message-too-large" | "bad-data" | "unknown-event" | "not-a-function"
  | "send-buffer-full" | "send-failed" | "left" | "invalid-content-id" | "unknown-content"
  | "not-a-file" | "file-too-large" | "cancelled" | "storage" | "storage-quota" | "not-a-stream"
  | "range-not-satisfiable" | "streaming-unavailable" | "invalid-option"
  // Refusals by the signalling server when joining:
  | "unauthorized" | "origin-not-allowed" | "room-full" | "server-full"
  | "too-many-connections" | "invalid-key" | "id-in-use" | "refused";
"#;

/// A member of one room: connected to the others directly over WebRTC data channels.
#[wasm_bindgen]
pub struct Swarm {
    shell: Rc<Shell>,
    /// The storage tier in use (`None`: no storage worker could start).
    tier: Option<Tier>,
    /// Our reader registered with the page's streaming bridge, once `streamUrl` was called.
    range_reader: RefCell<Option<RangeReader>>,
}

/// Converts a list of peer ids to a JavaScript array of strings.
fn id_array(ids: Vec<swarm_protocol::PeerId>) -> Array {
    ids.into_iter()
        .map(|id| JsValue::from(id.to_string()))
        .collect()
}

#[wasm_bindgen]
impl Swarm {
    /// Joins `room` through the signalling server at `server` (`ws://host:port`, or an
    /// `http(s)://` origin such as `location.origin`). Resolves once the server has welcomed
    /// this peer; connections to the peers already there are then being made. Rejects with a
    /// `SwarmError` (`invalid-room`, `invalid-url`, `invalid-option`, `server-unreachable`, or
    /// the server's refusal: `unauthorized`, `origin-not-allowed`, `room-full`,
    /// `server-full`, `too-many-connections`).
    pub async fn join(
        server: String,
        room: String,
        #[wasm_bindgen(unchecked_param_type = "JoinOptions")] options: Option<js_sys::Object>,
    ) -> Result<Swarm, JsValue> {
        let room = RoomName::new(room).map_err(ClientError::from)?;
        let options = JoinOptions::from_js(&options.map_or(JsValue::UNDEFINED, JsValue::from))?;
        let secret = match &options.secret {
            None => None,
            Some(secret) => Some(RoomSecret::derive(secret, &room).map_err(|err| {
                ClientError::InvalidOption {
                    name: "secret",
                    reason: err.to_string(),
                }
            })?),
        };
        // In a secret room the server sees only the name derived from the secret.
        let server_room = secret
            .as_ref()
            .map_or_else(|| room.clone(), |s| s.server_room().clone());
        let mut url = room_url(&server, &server_room)?;
        if let Some(token) = &options.token {
            url = format!("{url}?token={}", js_sys::encode_uri_component(token));
        }
        let rtc_config = RtcConfiguration::new();
        if let Some(policy) = options.ice_transport_policy {
            rtc_config.set_ice_transport_policy(policy);
        }
        let seed = random_seed()?;
        let mut config = NodeConfig::new(
            server_room,
            Identity::from_seed(seed),
            js_sys::Date::now() as u64,
            u64::from_le_bytes([
                seed[0], seed[9], seed[3], seed[27], seed[5], seed[18], seed[7], seed[30],
            ]),
        );
        config.max_peers = options.max_peers;
        config.signals = SignalPolicy {
            require_signed: options.require_signed,
            secret,
        };
        if let Some(dht_above) = options.dht_above {
            config.dht_above = dht_above;
        }
        // The storage, and what it kept from before (only the list: its pieces are checked
        // in the background).
        let (storage, started, kept) =
            match Storage::start(options.storage.unwrap_or(Tier::Opfs), options.memory_limit).await
            {
                Ok((storage, started)) => {
                    let kept = storage.list().await.unwrap_or_else(|err| {
                        warn!(error = %err, "cannot list what the storage kept");
                        Vec::new()
                    });
                    let kept = library::readable(&storage, kept);
                    (Some(Rc::new(storage)), Some(started), kept)
                }
                Err(err) => {
                    warn!(error = %err, "no storage: downloads will fail");
                    (None, None, Vec::new())
                }
            };
        if let Some(Started { tier, skipped, .. }) = &started {
            info!(tier = tier.as_str(), ?skipped, kept = kept.len(), "storage");
        }
        let hashing = started.as_ref().is_some_and(|s| s.hashing);
        config.share = ShareConfig {
            // With `crypto.subtle`, hashed by the storage worker with the browser's SHA-256;
            // without (an insecure context), by the node's own.
            owner_checks_pieces: hashing,
            ..ShareConfig::default()
        };
        let node = Node::new(config, now_ms());
        let shell = Shell::new(|inbox| {
            let mut state = State::new(url, room, node, rtc_config, storage.clone(), inbox);
            state.library.expect(&kept);
            state
        });
        if let Some(storage) = storage {
            let inbox = shell.read(|state| state.inbox().clone());
            library::check_kept(storage, hashing, kept, inbox);
        }
        let swarm = Swarm {
            shell,
            tier: started.map(|s| s.tier),
            range_reader: RefCell::new(None),
        };
        if let Err(err) = swarm.welcomed().await {
            swarm.leave();
            return Err(err);
        }
        Ok(swarm)
    }

    /// Connects to the server; resolves once `welcome` arrives, rejects if the connection
    /// ends first.
    async fn welcomed(&self) -> Result<(), JsValue> {
        let mut waiter = None;
        let welcomed = js_sys::Promise::new(&mut |resolve, reject| {
            waiter = Some(JoinWaiter { resolve, reject });
        });
        self.shell.with(|state| {
            if let Some(waiter) = waiter {
                state.set_join_waiter(waiter);
            }
            state.open_socket()
        })?;
        wasm_bindgen_futures::JsFuture::from(welcomed)
            .await
            .map(drop)
    }

    /// This peer's id in the room (32 hex digits).
    #[wasm_bindgen(getter)]
    pub fn id(&self) -> String {
        self.shell
            .read(|state| state.node.me())
            .map(|id| id.to_string())
            .unwrap_or_default()
    }

    /// The room's name.
    #[wasm_bindgen(getter)]
    pub fn room(&self) -> String {
        self.shell.read(|state| state.room().to_string())
    }

    /// The state of the link to the signalling server: `"connected"` or `"reconnecting"`.
    #[wasm_bindgen(getter, js_name = serverState, unchecked_return_type = "\"connected\" | \"reconnecting\"")]
    pub fn server_state(&self) -> String {
        self.shell
            .read(|state| state.server_state().as_str().to_owned())
    }

    /// The ids of every member of the room this peer knows of, connected or not (in a
    /// partial mesh, more than `peers()`), sorted.
    #[wasm_bindgen(unchecked_return_type = "string[]")]
    pub fn members(&self) -> Array {
        id_array(self.shell.read(|state| state.node.members()))
    }

    /// Opens a direct connection to room member `id` (through the signalling server, or
    /// through the mesh while the server is away); `peer-joined` tells when it is open.
    /// Throws `unknown-peer` for an id that is not a member this peer knows of.
    pub fn connect(&self, id: &str) -> Result<(), JsValue> {
        Ok(self.shell.with(|state| state.dial(id))?)
    }

    /// The ids of the peers with an open data channel, sorted.
    #[wasm_bindgen(unchecked_return_type = "string[]")]
    pub fn peers(&self) -> Array {
        id_array(self.shell.read(|state| state.node.open_peers()))
    }

    /// Registers `listener` for `event`: `'peer-joined'`, `'peer-left'`, `'message'`,
    /// `'file'`, `'files'`, `'stream'`, `'stream-ended'` or `'server'`.
    pub fn on(
        &self,
        #[wasm_bindgen(unchecked_param_type = "keyof SwarmEvents")] event: &str,
        #[wasm_bindgen(unchecked_param_type = "SwarmEvents[keyof SwarmEvents]")] listener: JsValue,
    ) -> Result<(), JsValue> {
        Ok(self.shell.listeners().add(event, listener)?)
    }

    /// Removes a listener registered with `on`. Returns whether it was registered.
    pub fn off(
        &self,
        #[wasm_bindgen(unchecked_param_type = "keyof SwarmEvents")] event: &str,
        #[wasm_bindgen(unchecked_param_type = "SwarmEvents[keyof SwarmEvents]")] listener: JsValue,
    ) -> Result<bool, JsValue> {
        Ok(self.shell.listeners().remove(event, listener)?)
    }

    /// Sends `data` to the peer `id` over its data channel. Throws a `SwarmError`
    /// (`unknown-peer`, `bad-data`, `message-too-large`, `send-buffer-full`, `send-failed`,
    /// `left`).
    pub fn send(
        &self,
        id: &str,
        #[wasm_bindgen(unchecked_param_type = "SwarmMessage")] data: JsValue,
    ) -> Result<(), JsValue> {
        self.shell.read(State::check_joined)?;
        let message = OutgoingMessage::from_js(&data)?;
        Ok(self.shell.read(|state| state.send_to(id, &message))?)
    }

    /// Sends `data` to every peer with an open data channel; returns how many peers it was
    /// sent to. Throws like `send` for bad data.
    pub fn broadcast(
        &self,
        #[wasm_bindgen(unchecked_param_type = "SwarmMessage")] data: JsValue,
    ) -> Result<u32, JsValue> {
        self.shell.read(State::check_joined)?;
        let message = OutgoingMessage::from_js(&data)?;
        Ok(self.shell.read(|state| state.broadcast(&message))?)
    }

    /// Shares a `File` or `Blob` with the room: hashes it piece by piece, then offers it to
    /// every peer, and serves it while this swarm is in the room. Resolves with its content id
    /// (64 hex digits). A zero-byte file is allowed. With `{ keep: true }` a copy goes into
    /// this browser's storage first, so the file is offered again after a reload (without,
    /// only its manifest is kept, and `stored()` lists it as not available until it is
    /// shared again); a copy that does not fit rejects with `storage-quota`.
    #[wasm_bindgen(js_name = shareFile)]
    pub async fn share_file(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Blob")] file: JsValue,
        #[wasm_bindgen(unchecked_param_type = "ShareOptions")] options: Option<js_sys::Object>,
    ) -> Result<String, JsValue> {
        let blob = file
            .clone()
            .dyn_into::<web_sys::Blob>()
            .map_err(|_| ClientError::NotAFile)?;
        let name = file
            .dyn_ref::<web_sys::File>()
            .map(web_sys::File::name)
            .unwrap_or_else(|| "blob".to_owned());
        let keep = match options.map(|o| js_sys::Reflect::get(&o, &"keep".into())) {
            Some(Ok(keep)) if !keep.is_undefined() => {
                keep.as_bool().ok_or_else(|| ClientError::InvalidOption {
                    name: "keep",
                    reason: "must be a boolean".to_owned(),
                })?
            }
            _ => false,
        };
        self.shell.read(State::check_joined)?;
        let (id, manifest) = manifest_of(&blob, name).await?;
        info!(%id, size = manifest.size, keep, "hashed a file to share");
        let blob = if keep {
            let storage = self.shell.read(State::storage)?;
            let copy = library::keep_copy(&storage, id, &manifest, &blob).await?;
            self.shell.with(|state| state.keep_copied(id, &manifest));
            copy
        } else {
            blob
        };
        self.shell.with(|state| {
            state.check_joined()?;
            state.share(id, manifest, blob);
            Ok::<_, ClientError>(())
        })?;
        Ok(id.to_string())
    }

    /// The files known in the room: those peers offer and those this peer holds.
    #[wasm_bindgen(unchecked_return_type = "SwarmFile[]")]
    pub fn files(&self) -> Array {
        self.shell
            .read(State::files_list)
            .iter()
            .map(file_object)
            .collect()
    }

    /// Starts downloading content `id` from every peer that has pieces of it, and returns its
    /// `Download` (the same one again while it runs). Throws a `SwarmError`
    /// (`invalid-content-id`, `unknown-content` when no peer offers it, `left`). A file
    /// larger than the storage quota fails with `storage-quota` before any transfer.
    pub fn download(&self, id: &str) -> Result<Download, JsValue> {
        let state = self.shell.with(|state| state.start_download(id))?;
        Ok(Download::new(state, self.shell.weak()))
    }

    /// Where this page keeps downloads: `"opfs"`, `"indexeddb"` or `"memory"` (the best
    /// this origin has, or the `storage` option of `join`); `null` if no storage worker
    /// could start, when downloads fail with `storage`.
    #[wasm_bindgen(getter, unchecked_return_type = "StorageTier | null")]
    pub fn storage(&self) -> JsValue {
        self.tier.map_or(JsValue::NULL, |tier| tier.as_str().into())
    }

    /// What this page keeps in storage: downloads (complete, or partial to resume with
    /// `download(id)`) and files it shared, also those kept from before a reload.
    #[wasm_bindgen(unchecked_return_type = "StoredFile[]")]
    pub fn stored(&self) -> Array {
        self.shell.read(State::stored_list)
    }

    /// Deletes what this page keeps of content `id`: a download stops (its `blob()` rejects
    /// with `cancelled`), the room is no longer offered it, and its data goes from storage.
    /// Resolves once it is deleted. Rejects with `invalid-content-id`, or `unknown-content`
    /// if the page keeps nothing of `id`.
    pub async fn forget(&self, id: String) -> Result<(), JsValue> {
        let removed = self.shell.with(|state| state.forget(&id))?;
        Ok(removed.await?)
    }

    /// How much the storage may hold and holds now (`{quota, usage}` in bytes; for
    /// `"memory"`, its own bound), or `null` if the browser does not say.
    #[wasm_bindgen(js_name = storageEstimate, unchecked_return_type = "Promise<{ quota: number; usage: number } | null>")]
    pub async fn storage_estimate(&self) -> Result<JsValue, JsValue> {
        let Some(storage) = self.shell.read(|state| state.storage.clone()) else {
            return Ok(JsValue::NULL);
        };
        let estimate = storage.estimate().await?;
        Ok(match estimate {
            Some((quota, usage)) => {
                let object = js_sys::Object::new();
                let _ = js_sys::Reflect::set(&object, &"quota".into(), &quota.into());
                let _ = js_sys::Reflect::set(&object, &"usage".into(), &usage.into());
                object.into()
            }
            None => JsValue::NULL,
        })
    }

    /// Looks for peers that provide content `id` through the room's structured layer (in a
    /// large room, files are not announced to every peer), for a minute or until one is
    /// found. What is found arrives as a `file` event and in `files()`, after which
    /// `download(id)` works. Throws a `SwarmError` (`invalid-content-id`, `left`).
    pub fn lookup(&self, id: &str) -> Result<(), JsValue> {
        Ok(self.shell.with(|state| state.lookup(id))?)
    }

    /// A URL that plays content `id` in a `<video>` or `<audio>` element while it downloads,
    /// with seeking: pieces around the requested position are fetched first. Starts the
    /// download if needed. It registers the streaming service worker at `worker_url`
    /// (default `swarm-sw.js` beside the page; serve `www/swarm-sw.js` there) and resolves
    /// once that worker controls the page. Rejects with `invalid-content-id`,
    /// `unknown-content` or `streaming-unavailable`.
    #[wasm_bindgen(js_name = streamUrl)]
    pub async fn stream_url(
        &self,
        id: String,
        worker_url: Option<String>,
    ) -> Result<String, JsValue> {
        let worker = worker_url.unwrap_or_else(|| "swarm-sw.js".to_owned());
        if self.range_reader.borrow().is_none() && !self.shell.read(State::has_left) {
            *self.range_reader.borrow_mut() = Some(RangeReader::register(self.shell.weak()));
        }
        Ok(streaming::stream_url(&self.shell, &id, &worker).await?)
    }

    /// Which pieces of content `id` this peer and each source have (`null` until its manifest
    /// is known), for drawing a piece map.
    #[wasm_bindgen(js_name = pieceMap, unchecked_return_type = "PieceMap | null")]
    pub fn piece_map(&self, id: &str) -> Result<JsValue, JsValue> {
        let id = id
            .parse()
            .map_err(|_| ClientError::InvalidContentId(id.to_owned()))?;
        Ok(self.shell.read(|state| state.piece_map(id)))
    }

    /// **Testing only**: when on, every piece this peer serves is corrupted, to exercise the
    /// verification of the others.
    #[wasm_bindgen(js_name = _corruptUploads)]
    pub fn corrupt_uploads(&self, on: bool) {
        self.shell.with(|state| state.node.set_corrupt_uploads(on));
    }

    /// Sends `stream`'s tracks (from `getUserMedia` or `getDisplayMedia`) to every peer in
    /// the room, including peers that join later. Resolves once it is being sent.
    pub async fn publish(
        &self,
        #[wasm_bindgen(unchecked_param_type = "MediaStream")] stream: JsValue,
    ) -> Result<(), JsValue> {
        self.shell.read(State::check_joined)?;
        let stream = stream
            .dyn_into::<web_sys::MediaStream>()
            .map_err(|_| ClientError::NotAStream)?;
        self.shell.with(|state| state.publish(stream));
        Ok(())
    }

    /// Stops sending `stream` to the room; the others see `stream-ended`. The tracks keep
    /// running: stop them to release the device.
    pub fn unpublish(
        &self,
        #[wasm_bindgen(unchecked_param_type = "MediaStream")] stream: JsValue,
    ) -> Result<(), JsValue> {
        let stream = stream
            .dyn_into::<web_sys::MediaStream>()
            .map_err(|_| ClientError::NotAStream)?;
        self.shell.with(|state| state.unpublish(&stream));
        Ok(())
    }

    /// `RTCPeerConnection.getStats()` of the connection to peer `id` (throws `unknown-peer`).
    #[wasm_bindgen(js_name = getStats, unchecked_return_type = "Promise<RTCStatsReport>")]
    pub fn get_stats(&self, id: &str) -> Result<js_sys::Promise, JsValue> {
        let stats = id
            .parse()
            .ok()
            .and_then(|peer| self.shell.read(|state| state.link(peer).map(|l| l.stats())))
            .ok_or_else(|| ClientError::UnknownPeer(id.to_owned()))?;
        Ok(stats)
    }

    /// **Testing and benchmarks only**: caps this peer's upload of file data to
    /// `bytes_per_second` across all its peers (0 removes the cap).
    #[wasm_bindgen(js_name = _capUpload)]
    pub fn cap_upload(&self, bytes_per_second: f64) {
        self.shell.with(|state| state.cap_upload(bytes_per_second));
    }

    /// Leaves the room: closes every peer connection and the signalling connection, and
    /// removes all listeners. Calling it again does nothing.
    pub fn leave(&self) {
        self.range_reader.borrow_mut().take();
        self.shell.leave();
    }
}
