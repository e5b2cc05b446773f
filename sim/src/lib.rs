//! Simulation of a large room, in rounds, with no browser and no real time: does a partial
//! mesh stay connected under churn, does a flooded announcement reach everyone, and how many
//! hops and messages does a Kademlia provider lookup take?
//!
//! One run ([`run`]) goes:
//! 1. **Build**: `peers` peers join one after the other (each with the server's welcome:
//!    the members so far, or a sample of them), then `warmup_rounds` rounds of overlay repair
//!    (see [`overlay`] for the two neighbour policies); then every peer joins the structured
//!    layer (neighbours into its table, a lookup of its own id, a refresh of its far buckets;
//!    see [`dht`]), and `contents` contents are published, each by one random peer (rare
//!    files: a single provider).
//! 2. **Churn**, for `churn_rounds` rounds. Each round: a `churn` share of the live peers
//!    leave at once (links drop; tables and records go with them) and as many newcomers join;
//!    the overlay repairs (with `server_gone`, nobody joins); newcomers bootstrap their
//!    tables; a content whose provider left is replaced by a new one from a random live peer
//!    (nobody can find a file whose only provider is gone, whatever the method); providers
//!    republish every `republish_ms`; expired records are dropped. Every `flood_every` rounds
//!    an announcement is flooded from a random live peer (see [`flood`]), and each round
//!    `lookups_per_round` random live peers look up the providers of random contents.
//!
//! Connectivity is measured every round twice: right after the departures (among the
//! survivors, before any repair) and after the repair (everyone).

pub mod dht;
pub mod flood;
pub mod kademlia;
pub mod overlay;
pub mod report;
pub mod routed;

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use swarm_core::kademlia::Key;
use swarm_protocol::{ContentId, PeerId};

use crate::dht::{Dht, DhtConfig};
use crate::flood::{FloodOutcome, Gossip};
use crate::overlay::{Connectivity, Overlay, OverlayConfig, Slot};
use crate::routed::Routed;

/// Everything one run depends on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Live peers in the room (kept constant under churn).
    pub peers: usize,
    /// Share of the live peers that leave each churn round (as many join).
    pub churn: f64,
    /// Repair rounds after everyone joined, before anything is measured.
    pub warmup_rounds: u32,
    /// Rounds of churn (and of measurement).
    pub churn_rounds: u32,
    /// Simulated milliseconds per round (only used for record expiry and republishing).
    pub round_ms: u64,
    /// Providers publish their records again this often (0: never).
    pub republish_ms: u64,
    /// The overlay's neighbour policy.
    pub overlay: OverlayConfig,
    /// The structured layer.
    pub dht: DhtConfig,
    /// Hops a flooded announcement lives.
    pub ttl: u8,
    /// Messages each peer's `Seen` remembers.
    pub seen_capacity: usize,
    /// An announcement is flooded every this many rounds.
    pub flood_every: u32,
    /// Contents with a live provider at any time.
    pub contents: usize,
    /// Provider lookups per round.
    pub lookups_per_round: usize,
    /// The signalling server goes away after the warm-up: nobody joins any more (departures
    /// continue at the `churn` rate) and a peer left without neighbours cannot get a new
    /// sample.
    pub server_gone: bool,
    /// Also run every lookup as the clients make it ([`routed`]).
    pub routed: bool,
    /// Seed of the random generator: a run is reproducible.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            peers: 1000,
            churn: 0.01,
            warmup_rounds: 10,
            churn_rounds: 90,
            round_ms: 10_000,
            republish_ms: swarm_core::kademlia::DEFAULT_REPUBLISH_MS,
            overlay: OverlayConfig::default(),
            dht: DhtConfig::default(),
            ttl: swarm_core::gossip::DEFAULT_TTL,
            seen_capacity: swarm_core::gossip::DEFAULT_SEEN_CAPACITY,
            flood_every: 3,
            contents: 200,
            lookups_per_round: 10,
            server_gone: false,
            routed: true,
            seed: 1,
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The run's settings.
    pub config: Config,
    /// Wall-clock time the run took.
    pub elapsed: Duration,
    /// Peers that left over the churn rounds.
    pub departures: usize,
    /// Peers that joined over the churn rounds.
    pub arrivals: usize,
    /// Smallest, mean and largest degree at the end.
    pub degrees: (usize, f64, usize),
    /// Worst largest-component share right after departures, before repair.
    pub worst_after_departures: f64,
    /// Most components right after departures, before repair.
    pub most_components_after_departures: usize,
    /// Worst largest-component share after repair.
    pub worst_after_repair: f64,
    /// Most components after repair.
    pub most_components_after_repair: usize,
    /// Connectivity after the last round.
    pub last: Connectivity,
    /// Server fallbacks (peers left without neighbours) per churn round.
    pub server_fallbacks_per_round: f64,
    /// Dials per live peer per churn round.
    pub dials_per_peer_round: f64,
    /// Dials over the churn rounds that failed: refused by a full peer, to a peer that had
    /// left, and (server gone) to a peer beyond the mesh relay's reach.
    pub failed_dials: (u64, u64, u64),
    /// Every flood.
    pub floods: Vec<FloodOutcome>,
    /// Provider lookups run.
    pub lookups: usize,
    /// Lookups that found a live provider.
    pub successes: usize,
    /// Failed lookups for which no live peer held a record any more (every holder left
    /// before the next republication): the record was lost, not missed.
    pub records_lost: usize,
    /// Hops of each successful lookup.
    pub hops: Vec<u32>,
    /// RPC rounds (round trips) of each lookup.
    pub rounds: Vec<u32>,
    /// Messages (requests and replies) of each lookup.
    pub messages: Vec<u32>,
    /// Requests that failed (peer gone), over all lookups.
    pub failures: u64,
    /// Requests sent, over all lookups.
    pub queries: u64,
    /// Requests that went to a direct overlay neighbour, over all lookups.
    pub to_neighbours: u64,
    /// Mean share of the true `k` closest live peers that held a record after a publication.
    pub publish_accuracy: f64,
    /// Publications (first ones, replacements and republications).
    pub publications: usize,
    /// Mean routing-table size of the live peers at the end.
    pub mean_table_size: f64,
    /// Table upkeep messages (bootstrap lookups, pings) per live peer per churn round.
    pub upkeep_per_peer_round: f64,
    /// Publication messages per live peer per churn round.
    pub publish_per_peer_round: f64,
    /// Lookups as the clients make them ([`routed`]): routed over the overlay's links.
    pub routed_lookups: usize,
    /// Routed lookups whose answer named the provider.
    pub routed_successes: usize,
    /// Links each successful routed lookup's request crossed.
    pub routed_hops: Vec<u32>,
    /// Frames of each routed lookup (request and answer).
    pub routed_messages: Vec<u32>,
    /// Route frames for publications and opened links per live peer per churn round.
    pub routed_publish_per_peer_round: f64,
}

struct Content {
    key: Key,
    id: ContentId,
    provider: Slot,
    /// The provider's signed record, and the provider id it names.
    record: Vec<u8>,
    provider_id: PeerId,
}

/// Runs one simulation.
pub fn run(config: &Config) -> Report {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut overlay = Overlay::new(OverlayConfig {
        round_ms: config.round_ms,
        ..config.overlay
    });
    for _ in 0..config.peers {
        overlay.join(&mut rng);
    }
    for _ in 0..config.warmup_rounds {
        overlay.maintain(&mut rng);
    }

    let mut dht = Dht::new(config.dht);
    let mut order = overlay.alive().to_vec();
    order.shuffle(&mut rng);
    for &slot in &order {
        dht.join(&overlay, slot);
    }
    overlay.take_new_links();
    for slot in order {
        dht.bootstrap(&overlay, slot, 0, &mut rng);
    }
    let setup_stats = dht.stats;

    let mut accuracy_sum = 0.0;
    let mut publications = 0;
    let mut publish = |dht: &mut Dht, overlay: &Overlay, provider: Slot, key: Key, now: u64| {
        let holders = dht.publish(overlay, provider, key, now);
        accuracy_sum += closest_share(overlay, key, &holders, config.dht.k);
        publications += 1;
    };
    let mut routed = Routed::new();
    let mut contents: Vec<Content> = Vec::with_capacity(config.contents);
    for _ in 0..config.contents {
        let content = new_content(&overlay, &routed, &mut rng);
        publish(&mut dht, &overlay, content.provider, content.key, 0);
        if config.routed {
            let record = content.record.clone();
            routed.publish(&overlay, content.provider, content.id, record, 0);
        }
        contents.push(content);
    }
    let routed_before_churn = routed.publish_messages;
    let publish_before_churn = dht.stats.publish_messages;

    let dials_before = overlay.stats;
    let fallbacks_before = overlay.stats.server_fallbacks;
    let mut report = Report {
        config: *config,
        elapsed: Duration::ZERO,
        departures: 0,
        arrivals: 0,
        degrees: (0, 0.0, 0),
        worst_after_departures: 1.0,
        most_components_after_departures: 0,
        worst_after_repair: 1.0,
        most_components_after_repair: 0,
        last: overlay.connectivity(),
        server_fallbacks_per_round: 0.0,
        dials_per_peer_round: 0.0,
        failed_dials: (0, 0, 0),
        floods: Vec::new(),
        lookups: 0,
        successes: 0,
        records_lost: 0,
        hops: Vec::new(),
        rounds: Vec::new(),
        messages: Vec::new(),
        failures: 0,
        queries: 0,
        to_neighbours: 0,
        publish_accuracy: 0.0,
        publications: 0,
        mean_table_size: 0.0,
        upkeep_per_peer_round: 0.0,
        publish_per_peer_round: 0.0,
        routed_lookups: 0,
        routed_successes: 0,
        routed_hops: Vec::new(),
        routed_messages: Vec::new(),
        routed_publish_per_peer_round: 0.0,
    };
    let mut gossip = Gossip::new(config.seen_capacity);
    if config.server_gone {
        overlay.set_server(false);
    }

    for round in 1..=config.churn_rounds {
        let now = u64::from(round) * config.round_ms;
        let exact = config.churn * overlay.alive().len() as f64;
        let mut leaving = exact.floor() as usize;
        if rng.random_bool((exact - exact.floor()).clamp(0.0, 1.0)) {
            leaving += 1;
        }
        for _ in 0..leaving {
            if let Some(slot) = overlay.random_alive(&mut rng) {
                overlay.leave(slot);
                dht.forget(slot);
                routed.forget(slot);
            }
        }
        report.departures += leaving;
        let c = overlay.connectivity();
        report.worst_after_departures = report.worst_after_departures.min(c.largest_fraction());
        report.most_components_after_departures =
            report.most_components_after_departures.max(c.components);

        let joining = if config.server_gone { 0 } else { leaving };
        let newcomers: Vec<Slot> = (0..joining).map(|_| overlay.join(&mut rng)).collect();
        report.arrivals += joining;
        overlay.maintain(&mut rng);
        for &slot in &newcomers {
            dht.join(&overlay, slot);
        }
        for (a, b) in overlay.take_new_links() {
            dht.linked(&overlay, a, b);
            if config.routed {
                routed.linked(&overlay, a, b, now);
            }
        }
        for slot in newcomers {
            dht.bootstrap(&overlay, slot, now, &mut rng);
        }
        let c = overlay.connectivity();
        report.worst_after_repair = report.worst_after_repair.min(c.largest_fraction());
        report.most_components_after_repair = report.most_components_after_repair.max(c.components);
        report.last = c;

        for content in &mut contents {
            if !overlay.is_alive(content.provider) {
                *content = new_content(&overlay, &routed, &mut rng);
                publish(&mut dht, &overlay, content.provider, content.key, now);
                if config.routed {
                    let record = content.record.clone();
                    routed.publish(&overlay, content.provider, content.id, record, now);
                }
            }
        }
        let period = config.republish_ms;
        if period > 0 && now / period > (now - config.round_ms) / period {
            for content in &contents {
                publish(&mut dht, &overlay, content.provider, content.key, now);
            }
        }
        dht.expire(now);
        if config.routed {
            routed.tick(&overlay, now);
        }

        if config.flood_every > 0
            && round.is_multiple_of(config.flood_every)
            && let Some(origin) = overlay.random_alive(&mut rng)
        {
            report
                .floods
                .push(gossip.flood(&overlay, origin, config.ttl));
        }

        for _ in 0..config.lookups_per_round {
            let (Some(from), Some(content)) =
                (overlay.random_alive(&mut rng), contents.choose(&mut rng))
            else {
                break;
            };
            if config.routed {
                let lookup = routed.find(&overlay, from, content.id, content.provider_id, now);
                report.routed_lookups += 1;
                report.routed_messages.push(lookup.messages);
                if lookup.found {
                    report.routed_successes += 1;
                    report.routed_hops.push(lookup.hops);
                }
            }
            let run = dht.find_providers(&overlay, from, content.key, now);
            report.lookups += 1;
            report.queries += u64::from(run.result.queries);
            report.failures += u64::from(run.result.failures);
            report.to_neighbours += u64::from(run.to_neighbours);
            report.rounds.push(run.rounds);
            report.messages.push(run.messages);
            let found = run
                .result
                .providers
                .iter()
                .any(|p| overlay.slot_of(*p).is_some_and(|s| overlay.is_alive(s)));
            if found {
                report.successes += 1;
                report.hops.push(run.result.hops);
            } else if dht.record_holders(&overlay, &content.key, now) == 0 {
                report.records_lost += 1;
            }
        }
    }

    let peer_rounds = (overlay.alive().len() as f64 * f64::from(config.churn_rounds)).max(1.0);
    let rounds = f64::from(config.churn_rounds.max(1));
    report.degrees = overlay.degrees();
    report.server_fallbacks_per_round =
        (overlay.stats.server_fallbacks - fallbacks_before) as f64 / rounds;
    let stats = overlay.stats;
    report.dials_per_peer_round = (stats.dials - dials_before.dials) as f64 / peer_rounds;
    report.failed_dials = (
        stats.refused - dials_before.refused,
        stats.dead_dials - dials_before.dead_dials,
        stats.out_of_relay_reach - dials_before.out_of_relay_reach,
    );
    report.publish_accuracy = accuracy_sum / publications.max(1) as f64;
    report.publications = publications;
    report.mean_table_size = dht.mean_table_size(&overlay);
    let upkeep = (dht.stats.bootstrap_messages - setup_stats.bootstrap_messages)
        + (dht.stats.ping_messages - setup_stats.ping_messages);
    report.upkeep_per_peer_round = upkeep as f64 / peer_rounds;
    report.publish_per_peer_round =
        (dht.stats.publish_messages - publish_before_churn) as f64 / peer_rounds;
    report.routed_publish_per_peer_round =
        (routed.publish_messages - routed_before_churn) as f64 / peer_rounds;
    report.elapsed = started.elapsed();
    report
}

fn new_content(overlay: &Overlay, routed: &Routed, rng: &mut StdRng) -> Content {
    let id = ContentId::from_bytes(rng.random());
    let (provider_id, record) = routed.record(rng.random(), id);
    Content {
        key: Key::for_content(&id),
        id,
        provider: overlay.random_alive(rng).unwrap_or(0),
        record,
        provider_id,
    }
}

/// Share of the true `k` closest live peers to `key` found in `holders`.
fn closest_share(overlay: &Overlay, key: Key, holders: &[PeerId], k: usize) -> f64 {
    let mut all: Vec<(swarm_core::kademlia::Distance, PeerId)> = overlay
        .alive()
        .iter()
        .map(|s| {
            let id = overlay.id(*s);
            (key.distance(&Key::from(id)), id)
        })
        .collect();
    let k = k.min(all.len());
    if k == 0 {
        return 1.0;
    }
    all.select_nth_unstable(k - 1);
    let found = all[..k]
        .iter()
        .filter(|(_, id)| holders.contains(id))
        .count();
    found as f64 / k as f64
}
