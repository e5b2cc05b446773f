//! Several instances sharing rooms through Redis (`--redis`).
//!
//! Each instance has a random id and keeps, in Redis:
//! - `swarm:room:{room}`: a hash of peer id → instance id, the room's members everywhere;
//! - `swarm:resume:{room}`: a hash of peer id → the fingerprint of the member's latest
//!   `resume` token, so the member can resume on any instance, once per token;
//! - `swarm:proof:{id}:{ts}`: a join proof taken (it expires when the proof is stale);
//! - `swarm:alive:{instance}`: a key that expires after the presence TTL unless the instance
//!   keeps refreshing it (every third of the TTL).
//!
//! and listens on the pub/sub channel `swarm:to:{instance}` for [`Event`]s from the others.
//!
//! Joining runs `HGETALL` and `HSET` in one transaction, so the members of a room are in one
//! order for every instance: a newcomer's `welcome` lists those before it, and each instance
//! serving one of those receives a `joined` naming exactly the local peers to tell. No peer is
//! told twice or missed, whichever instances the peers are on. Leaving runs `HDEL` and
//! `HGETALL` together and tells the instances of the remaining members. A `signal` for a peer
//! on another instance is published to that instance. When an instance's presence key
//! expires, every other instance tells its local peers that the dead instance's peers left
//! (within the TTL plus a third of it) and removes them from the room's hash.
//!
//! A join that claims an id (a key, or a resume token) first looks it up ([`Cluster::claim`]):
//! an id held on another live instance is refused as `id-in-use` unless the join brings the
//! member's latest resume token, which a Lua script compares and deletes in one step (so a
//! token is good once, on whichever instance), and then the instance that held the member
//! closes its connection (4000) without anyone hearing it leave.
//!
//! A graceful shutdown does not announce its peers as left either: it closes their
//! connections (`1001`) and refreshes its presence a last time, so each has a presence TTL to
//! resume on another instance (which takes its place in the hash) before the others report it
//! left.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use swarm_core::cluster::RemoteMembers;
use swarm_protocol::{PeerId, RoomName, ServerMsg};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use swarm_core::identity::JOIN_PROOF_SKEW;

use crate::AppState;
use crate::access::Fingerprint;
use crate::connection::text;

/// A message from one instance to another, as JSON on the recipient's channel. Externally
/// tagged (`{"signal":{…}}`): an internal tag would make serde buffer the fields, which
/// `RawValue` does not survive.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Event {
    /// `peer` (on `instance`) joined `room`; tell the local peers in `to`.
    Joined {
        room: RoomName,
        peer: PeerId,
        instance: String,
        to: Vec<PeerId>,
    },
    /// `peer` left `room`; tell the local peers in `to`.
    Left {
        room: RoomName,
        peer: PeerId,
        to: Vec<PeerId>,
    },
    /// `peer` resumed on another instance: close its connection here (4000), telling
    /// nobody.
    Replaced { room: RoomName, peer: PeerId },
    /// Relay `data` from `from` to the local peer `to` in `room`.
    Signal {
        room: RoomName,
        from: PeerId,
        to: PeerId,
        data: Box<RawValue>,
    },
}

/// Why the cluster could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot use Redis at {url}: {source}")]
pub struct ClusterError {
    url: String,
    source: redis::RedisError,
}

/// This instance's link to the others.
#[derive(Debug)]
pub(crate) struct Cluster {
    instance: String,
    conn: MultiplexedConnection,
    ttl: Duration,
    /// The remote peers local peers know of. A tokio mutex: it is held across Redis calls so
    /// that a join's snapshot and the events that follow it are applied in order.
    remote: Mutex<RemoteMembers<String>>,
}

fn room_key(room: &RoomName) -> String {
    format!("swarm:room:{room}")
}

fn resume_key(room: &RoomName) -> String {
    format!("swarm:resume:{room}")
}

fn proof_key(peer: PeerId, ts: u64) -> String {
    format!("swarm:proof:{peer}:{ts}")
}

/// A fingerprint as Redis keeps it.
fn fingerprint_text(fingerprint: &Fingerprint) -> String {
    URL_SAFE_NO_PAD.encode(fingerprint)
}

/// Looks a claimed id up in a room: `KEYS[1]` the room's hash, `KEYS[2]` its resume hash,
/// `ARGV[1]` the id, `ARGV[2]` the fingerprint of the token presented (or empty). Returns
/// `{0, ''}` if nobody holds the id, `{1, owner}` if the token is the member's latest (it is
/// deleted: good once), `{2, owner}` otherwise.
const CLAIM_SCRIPT: &str = r"
local owner = redis.call('HGET', KEYS[1], ARGV[1])
if not owner then return {0, ''} end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[2], ARGV[1])
  return {1, owner}
end
return {2, owner}
";

/// What [`Cluster::claim`] found out about an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claimed {
    /// No live instance holds it.
    Free,
    /// A live instance (this one or another) holds it, and the token presented (if any) is
    /// not its latest.
    InUse,
    /// The token presented was the member's latest: it is spent, and the id is the
    /// joiner's (another instance that held it was told to let it go).
    TakenOver,
    /// Redis could not say: only this instance's rooms count.
    Unknown,
}

fn alive_key(instance: &str) -> String {
    format!("swarm:alive:{instance}")
}

fn channel(instance: &str) -> String {
    format!("swarm:to:{instance}")
}

impl Cluster {
    /// Connects to Redis at `url`, subscribes to this instance's channel (so no event sent
    /// once this returns is missed) and announces this instance. Pass the subscription to
    /// [`Cluster::run`].
    pub(crate) async fn connect(
        url: &str,
        ttl: Duration,
    ) -> Result<(Self, redis::aio::PubSub), ClusterError> {
        let error = |source| ClusterError {
            url: url.to_owned(),
            source,
        };
        let client = redis::Client::open(url).map_err(error)?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(error)?;
        let instance = PeerId::from_bytes(rand::random()).to_string();
        let mut pubsub = client.get_async_pubsub().await.map_err(error)?;
        pubsub.subscribe(channel(&instance)).await.map_err(error)?;
        let cluster = Self {
            instance,
            conn,
            ttl,
            remote: Mutex::new(RemoteMembers::new()),
        };
        cluster.heartbeat().await.map_err(error)?;
        info!(instance = %cluster.instance, "sharing rooms through Redis");
        Ok((cluster, pubsub))
    }

    async fn heartbeat(&self) -> redis::RedisResult<()> {
        let secs = self.ttl.as_secs().max(1);
        self.conn
            .clone()
            .set_ex::<_, _, ()>(alive_key(&self.instance), 1, secs)
            .await
    }

    /// Records `peer` joining `room` here, with the fingerprint of the resume token its
    /// `welcome` carries, and tells the other instances; returns the peers in the room on
    /// other instances, for its `welcome`.
    pub(crate) async fn join(
        &self,
        room: &RoomName,
        peer: PeerId,
        resume: &Fingerprint,
    ) -> Vec<PeerId> {
        let mut remote = self.remote.lock().await;
        let key = room_key(room);
        let before: redis::RedisResult<(HashMap<String, String>,)> = redis::pipe()
            .atomic()
            .hgetall(&key)
            .hset(&key, peer.to_string(), &self.instance)
            .ignore()
            .hset(resume_key(room), peer.to_string(), fingerprint_text(resume))
            .ignore()
            .query_async(&mut self.conn.clone())
            .await;
        let mut members = match before {
            Ok((members,)) => members,
            Err(err) => {
                warn!(%room, %err, "Redis failed: this peer only meets peers on this instance");
                return Vec::new();
            }
        };
        // A peer resuming here after its connection to another instance was lost (or that
        // instance shut down): it is ours now, not a remote member.
        members.remove(&peer.to_string());
        remote.remove(room, peer);
        let by_instance = self.others_alive(room, members).await;
        let mut peers = Vec::new();
        for (instance, members) in by_instance {
            for member in &members {
                remote.insert(room, *member, instance.clone());
            }
            peers.extend(&members);
            let event = Event::Joined {
                room: room.clone(),
                peer,
                instance: self.instance.clone(),
                to: members,
            };
            self.publish(&instance, &event).await;
        }
        peers
    }

    /// Looks up the id `peer` that a join claims in `room`, with the fingerprint of the
    /// resume token it presents: see [`Claimed`]. A token that matches is spent, and the
    /// instance holding the member is told to let it go.
    pub(crate) async fn claim(
        &self,
        room: &RoomName,
        peer: PeerId,
        token: Option<&Fingerprint>,
    ) -> Claimed {
        let found: redis::RedisResult<(u8, String)> = redis::cmd("EVAL")
            .arg(CLAIM_SCRIPT)
            .arg(2)
            .arg(room_key(room))
            .arg(resume_key(room))
            .arg(peer.to_string())
            .arg(token.map(fingerprint_text).unwrap_or_default())
            .query_async(&mut self.conn.clone())
            .await;
        match found {
            Ok((1, owner)) => {
                if owner != self.instance {
                    let event = Event::Replaced {
                        room: room.clone(),
                        peer,
                    };
                    self.publish(&owner, &event).await;
                }
                Claimed::TakenOver
            }
            Ok((2, owner)) if owner == self.instance || self.is_alive(&owner).await => {
                Claimed::InUse
            }
            Ok(_) => Claimed::Free,
            Err(err) => {
                warn!(%room, %err, "Redis failed: cannot tell whether another instance holds this id");
                Claimed::Unknown
            }
        }
    }

    /// Takes the join proof of `peer` made at `ts` for the whole cluster: `false` if some
    /// instance took it before. If Redis cannot say, only this instance's memory counts.
    pub(crate) async fn take_proof(&self, peer: PeerId, ts: u64) -> bool {
        let set: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(proof_key(peer, ts))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(2 * JOIN_PROOF_SKEW + 1)
            .query_async(&mut self.conn.clone())
            .await;
        set.unwrap_or_else(|err| {
            warn!(%err, "Redis failed: a join proof is checked against this instance only");
            Some("OK".to_owned())
        })
        .is_some()
    }

    /// Whether `peer` of `room` now belongs to another instance (it resumed there after its
    /// connection here was lost).
    pub(crate) async fn owned_elsewhere(&self, room: &RoomName, peer: PeerId) -> bool {
        let owner: redis::RedisResult<Option<String>> = self
            .conn
            .clone()
            .hget(room_key(room), peer.to_string())
            .await;
        matches!(owner, Ok(Some(owner)) if owner != self.instance)
    }

    /// Records `peer` leaving `room` here and tells the instances of the remaining members.
    /// `last_here`: no local peer is left in the room.
    pub(crate) async fn leave(&self, room: &RoomName, peer: PeerId, last_here: bool) {
        let mut remote = self.remote.lock().await;
        let key = room_key(room);
        let after: redis::RedisResult<(HashMap<String, String>,)> = redis::pipe()
            .atomic()
            .hdel(&key, peer.to_string())
            .ignore()
            .hdel(resume_key(room), peer.to_string())
            .ignore()
            .hgetall(&key)
            .query_async(&mut self.conn.clone())
            .await;
        if last_here {
            remote.forget_room(room);
        }
        let members = match after {
            Ok((members,)) => members,
            Err(err) => {
                warn!(%room, %err, "Redis failed: other instances will not hear that a peer left");
                return;
            }
        };
        for (instance, members) in group_by_instance(members, &self.instance) {
            let event = Event::Left {
                room: room.clone(),
                peer,
                to: members,
            };
            self.publish(&instance, &event).await;
        }
    }

    /// Relays a `signal` to `to` on another instance; `false` if `to` is in the room nowhere.
    pub(crate) async fn relay(
        &self,
        room: &RoomName,
        from: PeerId,
        to: PeerId,
        data: Box<RawValue>,
    ) -> bool {
        let known = self.remote.lock().await.instance_of(room, to).cloned();
        let instance = match known {
            Some(instance) => Some(instance),
            None => self
                .conn
                .clone()
                .hget::<_, _, Option<String>>(room_key(room), to.to_string())
                .await
                .unwrap_or_else(|err| {
                    warn!(%err, "Redis failed: cannot look a peer up");
                    None
                }),
        };
        let Some(instance) = instance.filter(|i| *i != self.instance) else {
            return false;
        };
        let event = Event::Signal {
            room: room.clone(),
            from,
            to,
            data,
        };
        self.publish(&instance, &event).await;
        true
    }

    async fn publish(&self, instance: &str, event: &Event) {
        let payload = match serde_json::to_string(event) {
            Ok(payload) => payload,
            Err(err) => {
                warn!(%err, "cannot encode an event");
                return;
            }
        };
        let published: redis::RedisResult<()> =
            self.conn.clone().publish(channel(instance), payload).await;
        if let Err(err) = published {
            warn!(%err, "Redis failed: an event to another instance was lost");
        }
    }

    /// The members of `room` grouped by instance, other than this one, from live instances;
    /// members of dead instances are removed from the room's hash.
    async fn others_alive(
        &self,
        room: &RoomName,
        members: HashMap<String, String>,
    ) -> BTreeMap<String, Vec<PeerId>> {
        let mut grouped = group_by_instance(members, &self.instance);
        let mut dead = Vec::new();
        for instance in grouped.keys() {
            if !self.is_alive(instance).await {
                dead.push(instance.clone());
            }
        }
        for instance in dead {
            if let Some(stale) = grouped.remove(&instance) {
                self.forget(room, &stale).await;
            }
        }
        grouped
    }

    async fn is_alive(&self, instance: &str) -> bool {
        self.conn
            .clone()
            .exists(alive_key(instance))
            .await
            // If Redis cannot say, do not declare anyone dead.
            .unwrap_or(true)
    }

    async fn forget(&self, room: &RoomName, peers: &[PeerId]) {
        let fields: Vec<String> = peers.iter().map(ToString::to_string).collect();
        let removed: redis::RedisResult<()> = redis::pipe()
            .hdel(room_key(room), &fields)
            .ignore()
            .hdel(resume_key(room), &fields)
            .ignore()
            .query_async(&mut self.conn.clone())
            .await;
        if let Err(err) = removed {
            debug!(%err, "could not remove stale members");
        }
    }

    /// Runs until `state` shuts down: keeps this instance alive in Redis, applies the events
    /// other instances send, and reports the peers of dead instances as left.
    pub(crate) async fn run(&self, state: AppState, mut pubsub: redis::aio::PubSub) {
        let mut events = pubsub.on_message();
        let mut beat = tokio::time::interval(self.ttl / 3);
        let shutdown = state.shutdown_token();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = beat.tick() => {
                    if let Err(err) = self.heartbeat().await {
                        warn!(%err, "cannot refresh this instance's presence in Redis");
                    }
                    self.reap(&state).await;
                }
                message = events.next() => {
                    let Some(message) = message else {
                        warn!("the Redis subscription ended: other instances cannot reach this one");
                        break;
                    };
                    match message.get_payload::<String>().map(|p| serde_json::from_str::<Event>(&p)) {
                        Ok(Ok(event)) => self.apply(&state, event).await,
                        Ok(Err(err)) => warn!(%err, "ignoring an unreadable event"),
                        Err(err) => warn!(%err, "ignoring an unreadable event"),
                    }
                }
            }
        }
    }

    /// Refreshes this instance's presence one last time as it stops (after its connections
    /// have closed): its peers' places stay in Redis for one presence TTL, so they resume on
    /// another instance without anyone hearing them leave; the other instances report those
    /// that do not come back as left once it runs out.
    pub(crate) async fn stop(&self) {
        if let Err(err) = self.heartbeat().await {
            debug!(%err, "could not refresh this instance's presence");
        }
    }

    async fn apply(&self, state: &AppState, event: Event) {
        match event {
            Event::Joined {
                room,
                peer,
                instance,
                to,
            } => {
                let mut remote = self.remote.lock().await;
                let outboxes = local_outboxes(state, &room, &to);
                if !outboxes.is_empty() {
                    remote.insert(&room, peer, instance);
                }
                let frame = text(&ServerMsg::Joined { id: peer });
                for outbox in outboxes {
                    outbox.push(frame.clone());
                }
            }
            Event::Left { room, peer, to } => {
                let mut remote = self.remote.lock().await;
                remote.remove(&room, peer);
                let frame = text(&ServerMsg::Left { id: peer });
                for outbox in local_outboxes(state, &room, &to) {
                    outbox.push(frame.clone());
                }
            }
            Event::Replaced { room, peer } => {
                let mut remote = self.remote.lock().await;
                let (old, emptied) = {
                    let mut rooms = state.rooms();
                    match rooms.route(&room, peer).cloned() {
                        Some(old) => (Some(old), rooms.leave(&room, peer).is_empty()),
                        None => (None, false),
                    }
                };
                if emptied {
                    remote.forget_room(&room);
                }
                if let Some(old) = old {
                    info!(%room, %peer, "resumed on another instance");
                    old.replaced().cancel();
                }
            }
            Event::Signal {
                room,
                from,
                to,
                data,
            } => {
                let target = state.rooms().route(&room, to).cloned();
                match target {
                    Some(outbox) => outbox.push_relayed(
                        text(&ServerMsg::Signal { from, data }),
                        std::time::Instant::now(),
                    ),
                    None => debug!(%room, peer = %to, "a relayed signal for a peer that left"),
                }
            }
        }
    }

    /// Tells local peers that the peers of instances that stopped refreshing their presence
    /// left.
    async fn reap(&self, state: &AppState) {
        let mut remote = self.remote.lock().await;
        let mut dead = BTreeSet::new();
        for instance in remote.instances() {
            if !self.is_alive(&instance).await {
                dead.insert(instance);
            }
        }
        if dead.is_empty() {
            return;
        }
        warn!(
            ?dead,
            "instances stopped refreshing their presence: their peers are gone"
        );
        let gone = remote.remove_instances(&dead);
        drop(remote);
        for (room, peer) in gone {
            self.forget(&room, &[peer]).await;
            let frame = text(&ServerMsg::Left { id: peer });
            let members = state.rooms().members(&room);
            for outbox in local_outboxes(state, &room, &members) {
                outbox.push(frame.clone());
            }
        }
    }
}

/// The outboxes of those of `peers` that are in `room` here.
fn local_outboxes(
    state: &AppState,
    room: &RoomName,
    peers: &[PeerId],
) -> Vec<crate::state::Outbox> {
    let rooms = state.rooms();
    peers
        .iter()
        .filter_map(|peer| rooms.route(room, *peer).cloned())
        .collect()
}

/// Members (peer id → instance) grouped by instance, without `me`'s and unreadable ids.
fn group_by_instance(members: HashMap<String, String>, me: &str) -> BTreeMap<String, Vec<PeerId>> {
    let mut grouped: BTreeMap<String, Vec<PeerId>> = BTreeMap::new();
    for (peer, instance) in members {
        if instance == me {
            continue;
        }
        if let Ok(peer) = peer.parse() {
            grouped.entry(instance).or_default().push(peer);
        }
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_signal_data_byte_for_byte() {
        let data = RawValue::from_string(r#"{"sdp": {"type":"offer" , "sdp":"v=0"}}"#.to_owned())
            .expect("raw JSON");
        let event = Event::Signal {
            room: RoomName::new("r".to_owned()).expect("room"),
            from: PeerId::from_bytes([1; 16]),
            to: PeerId::from_bytes([2; 16]),
            data,
        };
        let text = serde_json::to_string(&event).expect("encodes");
        let Event::Signal { data, .. } = serde_json::from_str(&text).expect("decodes") else {
            panic!("not a signal: {text}");
        };
        assert_eq!(data.get(), r#"{"sdp": {"type":"offer" , "sdp":"v=0"}}"#);
    }

    #[test]
    fn members_are_grouped_by_instance_without_this_one() {
        let members = HashMap::from([
            (PeerId::from_bytes([1; 16]).to_string(), "me".to_owned()),
            (PeerId::from_bytes([2; 16]).to_string(), "other".to_owned()),
            ("not an id".to_owned(), "other".to_owned()),
        ]);
        let grouped = group_by_instance(members, "me");
        assert_eq!(
            grouped,
            BTreeMap::from([("other".to_owned(), vec![PeerId::from_bytes([2; 16])])])
        );
    }
}
