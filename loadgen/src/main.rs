//! `loadgen`: load a signalling server (ours, matchbox_server or PeerJS) with WebSocket peers
//! and print the measurements as a Markdown table. See `loadgen --help`.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use swarm_loadgen::connect::parse_source_addrs;
use swarm_loadgen::hold::{self, HoldOptions, WorkerOptions};
use swarm_loadgen::relay::{self, RelayOptions};
use swarm_loadgen::{LoadgenError, ServerKind, Target, report, run_id};
use tracing_subscriber::EnvFilter;

/// Load generator for WebRTC signalling servers.
///
/// Opens many WebSocket peers in rooms, has them signal each other, and measures joins per
/// second, relayed signals per second, relay latency (each payload carries its send time on
/// this process's monotonic clock) and the server's resident memory per connection (VmRSS
/// from /proc/PID/status). Each target is run in turn; the result is one Markdown table on
/// stdout, one column per target and the ratio of the first target to each other one.
/// Progress goes to stderr (RUST_LOG=debug for more).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Join N peers in rooms of K, relay signals between room mates, and report throughput,
    /// latency and server memory per connection.
    ///
    /// Phases: join (joins/s = peers / time to the last id), wait for the join notifications,
    /// relay (each peer sends --rounds signals to each room mate; relayed/s = signals received
    /// / time from the first send to the last receipt), close. Server memory is read before
    /// the join, with everyone joined, and after the relay.
    Relay(RelayArgs),
    /// Hold many idle peers (spread over worker processes and source addresses) and report
    /// the server's memory per idle peer, projected to 100,000 and 1,000,000 peers.
    ///
    /// Idle peers only read, and send what the server needs to keep them (PeerJS: a
    /// heartbeat every 20 s). Memory per peer = (server RSS after --hold-secs with everyone
    /// connected - RSS before the first connection) / peers still connected.
    Hold(HoldArgs),
    /// Internal: one worker process of `hold`, driven over stdin and stdout.
    #[command(hide = true)]
    HoldWorker(WorkerArgs),
}

/// Flags both scenarios share.
#[derive(Debug, Args)]
struct Common {
    /// A server under test, as kind=KIND,addr=HOST:PORT[,pid=PID][,peers=N][,label=NAME].
    /// KIND is swarm, matchbox or peerjs; pid is the server's process, whose memory is read
    /// (without it, memory is not reported); peers overrides --peers for this server; label
    /// names its column. Repeat for each server: they run one after the other, and the
    /// first is the one the ratio columns compare with the others.
    #[arg(long = "target", value_name = "SPEC", required = true, value_parser = parse_target)]
    targets: Vec<Target>,

    /// Peers per room (the last room holds what is left over).
    #[arg(long, default_value_t = 4)]
    room_size: usize,

    /// WebSocket handshakes in flight at once (per process for `hold`).
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,

    /// Pause between two targets, in seconds, so one server's closing connections do not
    /// overlap the next one's measurement.
    #[arg(long, default_value_t = 2)]
    pause_secs: u64,
}

#[derive(Debug, Args)]
struct RelayArgs {
    #[command(flatten)]
    common: Common,

    /// Peers to open against each target.
    #[arg(long, default_value_t = 1000)]
    peers: usize,

    /// Signals each peer sends to each room mate.
    #[arg(long, default_value_t = 10)]
    rounds: usize,

    /// Approximate size of each signal's payload in bytes (a trickled ICE candidate is about
    /// 200; an SDP offer 1,000 to 4,000).
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,

    /// Signals per second, all peers together, spread evenly; 0 sends as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,

    /// Limit for each phase (join, join notifications, relay), in seconds.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,

    /// Source addresses for the client sockets, round-robin: a comma-separated list of
    /// addresses and last-octet ranges, e.g. 127.0.0.2-127.0.0.9. Empty: the kernel chooses.
    #[arg(long, value_name = "LIST", default_value = "", value_parser = parse_sources)]
    source_addrs: Sources,
}

#[derive(Debug, Args)]
struct HoldArgs {
    #[command(flatten)]
    common: Common,

    /// Idle peers to hold against each target (a target's peers= overrides it).
    #[arg(long, default_value_t = 19_000)]
    peers: usize,

    /// Peers per worker process: each peer is one open file, and a process may open at most
    /// `ulimit -n` of them.
    #[arg(long, default_value_t = 5_000)]
    per_process: usize,

    /// How long to hold every peer before reading the server's memory, in seconds.
    #[arg(long, default_value_t = 10)]
    hold_secs: u64,

    /// Limit for each peer to connect and get its id, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,

    /// Source addresses for the client sockets, round-robin over all peers: a comma-separated
    /// list of addresses and last-octet ranges. Each address has about 28,000 ephemeral ports,
    /// so many peers need several. Empty: the kernel chooses.
    #[arg(long, value_name = "LIST", default_value = "127.0.0.2-127.0.0.9", value_parser = parse_sources)]
    source_addrs: Sources,
}

/// Flags of a `hold` worker process, which `hold` passes on.
#[derive(Debug, Args)]
struct WorkerArgs {
    /// The server's protocol: swarm, matchbox or peerjs.
    #[arg(long, value_parser = parse_kind)]
    kind: ServerKind,
    /// Where the server listens.
    #[arg(long)]
    addr: SocketAddr,
    /// Global index of this worker's first peer.
    #[arg(long)]
    first: usize,
    /// Peers this worker holds.
    #[arg(long)]
    count: usize,
    /// Peers per room.
    #[arg(long)]
    room_size: usize,
    /// The coordinator's run id, part of every room and peer name.
    #[arg(long)]
    run_id: String,
    /// Source addresses, round-robin by global peer index.
    #[arg(long, value_name = "LIST", default_value = "", value_parser = parse_sources)]
    source_addrs: Sources,
    /// WebSocket handshakes in flight at once.
    #[arg(long)]
    connect_concurrency: usize,
    /// Limit for each peer to connect and get its id, in seconds.
    #[arg(long)]
    timeout_secs: u64,
}

/// A parsed `--source-addrs` (a newtype, so clap does not take the `Vec` for a repeated flag).
#[derive(Debug, Clone)]
struct Sources(Vec<IpAddr>);

fn parse_target(spec: &str) -> Result<Target, LoadgenError> {
    spec.parse()
}

fn parse_kind(kind: &str) -> Result<ServerKind, LoadgenError> {
    kind.parse()
}

fn parse_sources(list: &str) -> Result<Sources, LoadgenError> {
    parse_source_addrs(list).map(Sources)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Relay(args) => relay_all(args).await,
        Command::Hold(args) => hold_all(args).await,
        Command::HoldWorker(args) => hold::worker(WorkerOptions {
            kind: args.kind,
            addr: args.addr,
            first: args.first,
            count: args.count,
            room_size: args.room_size,
            run_id: args.run_id,
            source_addrs: args.source_addrs.0,
            connect_concurrency: args.connect_concurrency,
            timeout: Duration::from_secs(args.timeout_secs),
        })
        .await
        .map(|()| String::new()),
    };
    match result {
        Ok(table) => {
            print!("{table}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("loadgen: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn relay_all(args: RelayArgs) -> Result<String, LoadgenError> {
    let options = RelayOptions {
        peers: args.peers,
        room_size: args.common.room_size,
        rounds: args.rounds,
        payload_bytes: args.payload_bytes,
        rate: args.rate,
        connect_concurrency: args.common.connect_concurrency,
        source_addrs: args.source_addrs.0,
        phase_timeout: Duration::from_secs(args.timeout_secs),
        run_id: run_id(),
    };
    let mut reports = Vec::new();
    for (i, target) in args.common.targets.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_secs(args.common.pause_secs)).await;
        }
        tracing::info!(target = %target.label, "relay scenario");
        reports.push(relay::run(target, &options).await?);
    }
    Ok(report::relay_table(&reports))
}

async fn hold_all(args: HoldArgs) -> Result<String, LoadgenError> {
    let options = HoldOptions {
        peers: args.peers,
        room_size: args.common.room_size,
        per_process: args.per_process,
        source_addrs: args.source_addrs.0,
        connect_concurrency: args.common.connect_concurrency,
        hold: Duration::from_secs(args.hold_secs),
        timeout: Duration::from_secs(args.timeout_secs),
        run_id: run_id(),
        worker_exe: std::env::current_exe()?,
    };
    let mut reports = Vec::new();
    for (i, target) in args.common.targets.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_secs(args.common.pause_secs)).await;
        }
        tracing::info!(target = %target.label, "idle hold");
        reports.push(hold::run(target, &options).await?);
    }
    Ok(report::hold_table(&reports))
}
