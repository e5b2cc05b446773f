//! The options of `Swarm.join(server, room, options)`.

use js_sys::Reflect;
use wasm_bindgen::JsValue;
use web_sys::RtcIceTransportPolicy;

use crate::error::ClientError;
use crate::storage::Tier;

/// What `Swarm.join` may be told besides the server and the room.
#[derive(Debug, Default)]
pub(crate) struct JoinOptions {
    /// A room token for servers that need one (sent as `?token=`).
    pub(crate) token: Option<String>,
    /// `"relay"` makes every peer connection go through the TURN servers the signalling
    /// server hands out; `"all"` (the default) lets WebRTC choose.
    pub(crate) ice_transport_policy: Option<RtcIceTransportPolicy>,
    /// Caps the connections this peer opens (a partial mesh); `None` connects to everyone.
    pub(crate) max_peers: Option<usize>,
    /// Room size above which what we provide is published in the structured layer instead
    /// of flooded; `None`: the default ([`swarm_core::client::DHT_ABOVE`]).
    pub(crate) dht_above: Option<usize>,
    /// The best storage tier to use (a worse one if it is not available here); `None`: the
    /// best there is.
    pub(crate) storage: Option<Tier>,
    /// Refuse peers whose offers and answers are not signed (protocol v1 clients).
    pub(crate) require_signed: bool,
    /// The secret of a secret room: the server sees a name derived from it and relays only
    /// sealed signals.
    pub(crate) secret: Option<String>,
    /// **Testing only** (`_memoryLimit`): the bytes the memory tier may hold, instead of its
    /// default bound.
    pub(crate) memory_limit: Option<usize>,
}

/// Largest `maxPeers` accepted.
const MAX_PEERS_LIMIT: f64 = 1000.0;

/// Largest `_memoryLimit` accepted (4 GiB).
const MEMORY_LIMIT_LIMIT: f64 = 4_294_967_296.0;

/// Largest `dhtAbove` accepted.
const DHT_ABOVE_LIMIT: f64 = 1_000_000.0;

impl JoinOptions {
    /// Reads `{ token?: string, iceTransportPolicy?: "all" | "relay", maxPeers?: number,
    /// dhtAbove?: number, storage?: "opfs" | "indexeddb" | "memory", requireSigned?: boolean,
    /// secret?: string }`; `undefined` or `null` means no options.
    pub(crate) fn from_js(value: &JsValue) -> Result<Self, ClientError> {
        if value.is_undefined() || value.is_null() {
            return Ok(Self::default());
        }
        if !value.is_object() {
            return Err(ClientError::InvalidOption {
                name: "options",
                reason: "must be an object".to_owned(),
            });
        }
        let token = string(value, "token")?;
        let ice_transport_policy = match field(value, "iceTransportPolicy") {
            None => None,
            Some(policy) => Some(match policy.as_string().as_deref() {
                Some("all") => RtcIceTransportPolicy::All,
                Some("relay") => RtcIceTransportPolicy::Relay,
                _ => {
                    return Err(ClientError::InvalidOption {
                        name: "iceTransportPolicy",
                        reason: "must be \"all\" or \"relay\"".to_owned(),
                    });
                }
            }),
        };
        let max_peers = whole_number(value, "maxPeers", 1.0, MAX_PEERS_LIMIT)?;
        let dht_above = whole_number(value, "dhtAbove", 0.0, DHT_ABOVE_LIMIT)?;
        let storage = match field(value, "storage") {
            None => None,
            Some(tier) => Some(
                tier.as_string()
                    .as_deref()
                    .and_then(Tier::parse)
                    .ok_or_else(|| ClientError::InvalidOption {
                        name: "storage",
                        reason: "must be \"opfs\", \"indexeddb\" or \"memory\"".to_owned(),
                    })?,
            ),
        };
        let memory_limit = whole_number(value, "_memoryLimit", 0.0, MEMORY_LIMIT_LIMIT)?;
        let require_signed = match field(value, "requireSigned") {
            None => false,
            Some(flag) => flag.as_bool().ok_or_else(|| ClientError::InvalidOption {
                name: "requireSigned",
                reason: "must be true or false".to_owned(),
            })?,
        };
        let secret = string(value, "secret")?;
        Ok(Self {
            require_signed,
            secret,
            storage,
            memory_limit,
            token,
            ice_transport_policy,
            max_peers,
            dht_above,
        })
    }
}

/// `object[name]` as a string; `None` when it is missing, an `invalid-option` error when it is
/// anything else.
fn string(object: &JsValue, name: &'static str) -> Result<Option<String>, ClientError> {
    field(object, name)
        .map(|value| {
            value.as_string().ok_or_else(|| ClientError::InvalidOption {
                name,
                reason: "must be a string".to_owned(),
            })
        })
        .transpose()
}

/// `object[name]` as a whole number from `min` to `max`; `None` when it is missing, an
/// `invalid-option` error when it is anything else.
fn whole_number(
    object: &JsValue,
    name: &'static str,
    min: f64,
    max: f64,
) -> Result<Option<usize>, ClientError> {
    let Some(value) = field(object, name) else {
        return Ok(None);
    };
    match value.as_f64() {
        Some(n) if n.fract() == 0.0 && (min..=max).contains(&n) => Ok(Some(n as usize)),
        _ => Err(ClientError::InvalidOption {
            name,
            reason: format!("must be a whole number from {min} to {max}"),
        }),
    }
}

/// `object[name]`, or `None` when it is missing or `undefined`.
fn field(object: &JsValue, name: &str) -> Option<JsValue> {
    Reflect::get(object, &JsValue::from_str(name))
        .ok()
        .filter(|v| !v.is_undefined())
}
