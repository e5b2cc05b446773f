//! `swarm-sim`: runs the overlay and lookup simulation for each room size and churn rate and
//! prints Markdown tables (see the crate documentation for what a run does).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::Parser;
use swarm_sim::overlay::{OverlayConfig, Policy};
use swarm_sim::{Config, Report, dht::DhtConfig, report, run};

/// Overlay, gossip and Kademlia lookup simulation of a large room.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Room sizes to simulate.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    peers: Vec<usize>,
    /// Shares of the live peers that leave (and join) each round.
    #[arg(long, value_delimiter = ',', default_value = "0,0.01,0.05")]
    churn: Vec<f64>,
    /// Neighbour policy: `mesh` (the real swarm_core::mesh::Mesh, partial mode) or `random`
    /// (the simulation's own).
    #[arg(long, value_enum, default_value_t = PolicyArg::Mesh)]
    policy: PolicyArg,
    /// A peer with fewer neighbours dials more (the cap of the real mesh).
    #[arg(long, default_value_t = 8)]
    target: usize,
    /// A peer with this many neighbours refuses more (random policy; the real mesh answers up
    /// to twice its cap).
    #[arg(long, default_value_t = 16)]
    max: usize,
    /// Members in the server's welcome; 0 for the whole room. Default: with the real mesh,
    /// the whole room (as the server sends it) up to 2,000 peers and a sample of 64 above;
    /// 64 with the random policy. With the real mesh, a sample also means `joined` goes to
    /// that many random members.
    #[arg(long)]
    welcome: Option<usize>,
    /// Repair rounds before measuring.
    #[arg(long, default_value_t = 10)]
    warmup: u32,
    /// Churn rounds (measured).
    #[arg(long, default_value_t = 90)]
    rounds: u32,
    /// Simulated milliseconds per round.
    #[arg(long, default_value_t = 10_000)]
    round_ms: u64,
    /// Republication period of provider records, in ms (0: never).
    #[arg(long, default_value_t = swarm_core::kademlia::DEFAULT_REPUBLISH_MS)]
    republish_ms: u64,
    /// Lifetime of a provider record, in ms.
    #[arg(long, default_value_t = swarm_core::kademlia::DEFAULT_PROVIDER_TTL_MS)]
    record_ttl_ms: u64,
    /// Kademlia bucket size and replication.
    #[arg(long, default_value_t = 20)]
    k: usize,
    /// Parallel queries per lookup.
    #[arg(long, default_value_t = 3)]
    alpha: usize,
    /// Newcomers do not refresh their buckets after their own-id lookup.
    #[arg(long)]
    no_refresh: bool,
    /// Hops a flooded announcement lives.
    #[arg(long, default_value_t = swarm_core::gossip::DEFAULT_TTL)]
    ttl: u8,
    /// Flood one announcement every this many rounds.
    #[arg(long, default_value_t = 3)]
    flood_every: u32,
    /// Contents with a live provider at any time.
    #[arg(long, default_value_t = 200)]
    contents: usize,
    /// Provider lookups per round.
    #[arg(long, default_value_t = 10)]
    lookups_per_round: usize,
    /// The signalling server goes away after the warm-up: nobody joins, peers only leave.
    #[arg(long)]
    server_gone: bool,
    /// Runs at once (one thread each).
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PolicyArg {
    Mesh,
    Random,
}

/// Rooms up to this size get the whole room in their welcome by default with the real mesh;
/// larger ones a sample (whole-room welcomes and `joined` to everyone cost O(N) per join and
/// O(N²) memory, minutes at 10,000 peers under churn).
const WHOLE_ROOM_UP_TO: usize = 2_000;

/// Welcome sample of larger rooms with the real mesh, and of every room with the random policy.
const SAMPLE: usize = 64;

fn main() {
    let args = Args::parse();
    let policy = match args.policy {
        PolicyArg::Mesh => Policy::Mesh,
        PolicyArg::Random => Policy::Random,
    };
    let mut configs = Vec::new();
    for &peers in &args.peers {
        let welcome = args.welcome.unwrap_or(match policy {
            Policy::Mesh if peers <= WHOLE_ROOM_UP_TO => 0,
            _ => SAMPLE,
        });
        for &churn in &args.churn {
            configs.push(Config {
                peers,
                churn,
                warmup_rounds: args.warmup,
                churn_rounds: args.rounds,
                round_ms: args.round_ms,
                republish_ms: args.republish_ms,
                overlay: OverlayConfig {
                    policy,
                    target: args.target,
                    max: args.max,
                    welcome,
                    ..OverlayConfig::default()
                },
                dht: DhtConfig {
                    k: args.k,
                    alpha: args.alpha,
                    record_ttl_ms: args.record_ttl_ms,
                    refresh: !args.no_refresh,
                },
                ttl: args.ttl,
                flood_every: args.flood_every,
                contents: args.contents,
                lookups_per_round: args.lookups_per_round,
                server_gone: args.server_gone,
                seed: args.seed,
                ..Config::default()
            });
        }
    }
    let reports = run_all(&configs, args.jobs.max(1));
    println!(
        "Parameters: {} policy, target {} / max {} neighbours, {} warm-up rounds, {} churn rounds of {} ms{}, records live {} ms and are republished every {} ms, {} contents, {} lookups per round, seed {}.\n",
        match policy {
            Policy::Mesh => "real `Mesh` (partial mode)",
            Policy::Random => "random (simulation's own)",
        },
        args.target,
        match policy {
            Policy::Mesh => 2 * args.target,
            Policy::Random => args.max,
        },
        args.warmup,
        args.rounds,
        args.round_ms,
        if args.server_gone {
            " (server gone after the warm-up: no joins)"
        } else {
            ""
        },
        args.record_ttl_ms,
        args.republish_ms,
        args.contents,
        args.lookups_per_round,
        args.seed
    );
    print!("{}", report::markdown(&reports));
}

/// Runs every configuration on `jobs` threads; reports in the order of `configs`.
fn run_all(configs: &[Config], jobs: usize) -> Vec<Report> {
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<Report>>> = Mutex::new(vec![None; configs.len()]);
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(configs.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(config) = configs.get(i) else {
                        break;
                    };
                    eprintln!("running {} peers, churn {}...", config.peers, config.churn);
                    let report = run(config);
                    eprintln!(
                        "  {} peers, churn {}: done in {:.1} s",
                        config.peers,
                        config.churn,
                        report.elapsed.as_secs_f64()
                    );
                    if let Ok(mut done) = done.lock() {
                        done[i] = Some(report);
                    }
                }
            });
        }
    });
    done.into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .into_iter()
        .flatten()
        .collect()
}
