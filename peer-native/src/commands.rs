//! The command line: `seed`, `get`, `peers` and `chat`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use swarm_core::share::ShareError;
use swarm_protocol::ContentId;
use tokio::io::AsyncBufReadExt;

use swarm_core::node::Event;

use crate::node::NodeEvent;
use crate::room::{JoinOptions, PeerError, Room, RoomAddress, load_or_create_key};

/// Seed and fetch files in a swarm room from the command line, alongside browser peers.
#[derive(Debug, Parser)]
#[command(name = "swarm-peer", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: CommandLine,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum CommandLine {
    /// Share files into the room and serve them until stopped (Ctrl-C). Prints each file's
    /// content id and a link that opens the page straight into its download.
    Seed {
        /// The files to share.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Where the room is.
        #[command(flatten)]
        room: RoomArgs,
    },
    /// Download one file from the room, verify every piece, and write it to `-o PATH`
    /// (through a temporary file, renamed at the end).
    Get {
        /// The content id (64 hex digits).
        id: String,
        /// Where to save the file.
        #[arg(short, long)]
        output: PathBuf,
        /// Seconds to wait for a peer that offers the file.
        #[arg(long, default_value_t = 30)]
        wait: u64,
        /// Give up after this many seconds without a verified piece.
        #[arg(long, default_value_t = 60)]
        stall: u64,
        /// Replace `PATH` if it exists.
        #[arg(long)]
        force: bool,
        /// Where the room is.
        #[command(flatten)]
        room: RoomArgs,
    },
    /// Print who is in the room and which files they offer, then leave.
    Peers {
        /// Seconds to wait for connections before printing.
        #[arg(long, default_value_t = 3)]
        wait: u64,
        /// Where the room is.
        #[command(flatten)]
        room: RoomArgs,
    },
    /// Send each line of standard input to every peer, and print what they send.
    Chat {
        /// Where the room is.
        #[command(flatten)]
        room: RoomArgs,
    },
}

/// Where the room is, and how to connect.
#[derive(Debug, Args)]
pub struct RoomArgs {
    /// The signalling server, e.g. ws://127.0.0.1:8080.
    #[arg(long, env = "SWARM_SERVER")]
    pub server: String,
    /// The room name.
    #[arg(long, env = "SWARM_ROOM")]
    pub room: String,
    /// The server's access token, if it requires one.
    #[arg(long, env = "SWARM_TOKEN")]
    pub token: Option<String>,
    /// Cap on direct connections (a partial mesh, as the browsers' `maxPeers`).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub max_peers: Option<u16>,
    /// Room size (members, counting us) above which the files we provide are published in
    /// the room's structured layer instead of announced to every peer (as the browsers'
    /// `dhtAbove`).
    #[arg(long, default_value_t = swarm_core::client::DHT_ABOVE)]
    pub dht_above: usize,
    /// Local UDP address for WebRTC (repeatable). The default binds every interface but
    /// loopback; give 127.0.0.1:0 to reach peers on this machine only.
    #[arg(long = "bind", default_value = "0.0.0.0:0")]
    pub bind: Vec<String>,
    /// A file holding this peer's key, created if missing: the same key gives the same peer
    /// id in every run and on every server. Without it each run has a fresh id.
    #[arg(long, env = "SWARM_KEY")]
    pub key: Option<PathBuf>,
    /// A secret room's secret (as the page's `k=`): the server sees only a name derived from
    /// it, and every signal is sealed with a key derived from it.
    #[arg(long, env = "SWARM_SECRET")]
    pub secret: Option<String>,
    /// Refuse peers whose offers and answers are not signed (protocol v1 clients), as the
    /// page does by default.
    #[arg(long)]
    pub require_signed: bool,
}

impl RoomArgs {
    async fn join(&self) -> Result<Room, PeerError> {
        let address = RoomAddress::with_secret(
            &self.server,
            &self.room,
            self.token.clone(),
            self.secret.clone(),
        )?;
        let key_seed = match &self.key {
            Some(path) => Some(load_or_create_key(path)?),
            None => None,
        };
        let options = JoinOptions {
            max_peers: self.max_peers.map(usize::from),
            dht_above: self.dht_above,
            udp_addrs: self.bind.clone(),
            key_seed,
            require_signed: self.require_signed,
        };
        Room::join(address, options).await
    }
}

/// Runs one command to its end.
pub async fn run(cli: Cli) -> Result<(), PeerError> {
    match cli.command {
        CommandLine::Seed { files, room } => seed(files, room).await,
        CommandLine::Get {
            id,
            output,
            wait,
            stall,
            force,
            room,
        } => {
            let id: ContentId = id.parse().map_err(|_| PeerError::BadContentId(id))?;
            if output.exists() && !force {
                return Err(PeerError::TargetExists(output));
            }
            get(id, output, wait, stall, room).await
        }
        CommandLine::Peers { wait, room } => peers(wait, room).await,
        CommandLine::Chat { room } => chat(room).await,
    }
}

async fn seed(files: Vec<PathBuf>, args: RoomArgs) -> Result<(), PeerError> {
    let mut room = args.join().await?;
    for path in &files {
        let (id, size, name) = room.share_file(path).await?;
        println!("{id}\t{size}\t{name}\t{}", room.address().page_link(id));
    }
    eprintln!(
        "seeding {} file(s) in room {} as {}; Ctrl-C to stop",
        files.len(),
        room.address().room.as_str(),
        room.me()
    );
    report_until(&mut room, shutdown_signal()).await?;
    room.leave().await;
    Ok(())
}

async fn get(
    id: ContentId,
    output: PathBuf,
    wait: u64,
    stall: u64,
    args: RoomArgs,
) -> Result<(), PeerError> {
    let mut room = args.join().await?;
    let result = fetch(&mut room, id, output, wait, stall).await;
    room.leave().await;
    result
}

async fn fetch(
    room: &mut Room,
    id: ContentId,
    output: PathBuf,
    wait: u64,
    stall: u64,
) -> Result<(), PeerError> {
    // A peer's offer arrives shortly after its channel opens: keep asking until one has. In
    // a large room nobody near us may have heard of it: ask the structured layer too.
    room.lookup(id)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    loop {
        match room.download(id, output.clone()).await {
            Ok(()) => break,
            Err(ShareError::UnknownContent(_)) if tokio::time::Instant::now() < deadline => {
                idle(room, Duration::from_millis(200)).await?;
            }
            Err(_) => {
                return Err(PeerError::UnknownContent {
                    room: room.address().room.as_str().to_owned(),
                    id,
                    waited_secs: wait,
                });
            }
        }
    }
    let bar = progress_bar();
    let (mut received, mut total) = (0, 0);
    let stall_after = Duration::from_secs(stall);
    loop {
        let event = match tokio::time::timeout(stall_after, room.next_event()).await {
            Ok(Some(event)) => event,
            Ok(None) => return Err(PeerError::Stopped),
            Err(_) => {
                bar.abandon();
                return Err(PeerError::Stalled {
                    id,
                    secs: stall,
                    received,
                    total,
                });
            }
        };
        match event {
            NodeEvent::Node(Event::ManifestReady { id: of, manifest }) if of == id => {
                total = manifest.size;
                bar.set_length(total);
                bar.set_message(manifest.name.clone());
            }
            NodeEvent::Node(Event::Progress { id: of, progress }) if of == id => {
                received = progress.received;
                bar.set_length(progress.total);
                bar.set_position(progress.received);
                bar.set_prefix(format!("{} peer(s)", progress.peers));
            }
            NodeEvent::Saved { id: of, path } if of == id => {
                bar.finish();
                println!("saved {} ({total} bytes, {id})", path.display());
                return Ok(());
            }
            NodeEvent::SaveFailed { id: of, error } if of == id => {
                bar.abandon();
                return Err(PeerError::SaveFailed { id, error });
            }
            other => {
                if !matches!(other, NodeEvent::Node(Event::Progress { .. })) {
                    bar.suspend(|| report(&other));
                }
            }
        }
    }
}

/// Lets `duration` pass, discarding the room's events meanwhile.
async fn idle(room: &mut Room, duration: Duration) -> Result<(), PeerError> {
    report_until(room, tokio::time::sleep(duration)).await
}

/// Reports the room's events until `until` completes.
async fn report_until(room: &mut Room, until: impl Future<Output = ()>) -> Result<(), PeerError> {
    tokio::pin!(until);
    loop {
        tokio::select! {
            () = &mut until => return Ok(()),
            event = room.next_event() => match event {
                Some(event) => report(&event),
                None => return Err(PeerError::Stopped),
            },
        }
    }
}

fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} ({prefix})",
    ) {
        bar.set_style(style);
    }
    bar
}

async fn peers(wait: u64, args: RoomArgs) -> Result<(), PeerError> {
    let mut room = args.join().await?;
    idle(&mut room, Duration::from_secs(wait)).await?;
    let status = room.status().await?;
    println!("me\t{}", room.me());
    for member in &status.members {
        let state = if status.open.contains(member) {
            "connected"
        } else {
            "member"
        };
        println!("peer\t{member}\t{state}");
    }
    for file in &status.files {
        println!(
            "file\t{}\t{}\t{} source(s)\t{}",
            file.id, file.size, file.sources, file.name
        );
    }
    room.leave().await;
    Ok(())
}

async fn chat(args: RoomArgs) -> Result<(), PeerError> {
    let mut room = args.join().await?;
    eprintln!(
        "in room {} as {}; type a line to send it, Ctrl-D to leave",
        room.address().room.as_str(),
        room.me()
    );
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            line = lines.next_line() => match line {
                Ok(Some(line)) => {
                    let sent = room.broadcast(line).await?;
                    if sent == 0 {
                        eprintln!("(nobody is connected yet)");
                    }
                }
                _ => break,
            },
            event = room.next_event() => match event {
                Some(NodeEvent::Message { from, text }) => println!("{from}: {text}"),
                Some(event) => report(&event),
                None => return Err(PeerError::Stopped),
            },
        }
    }
    room.leave().await;
    Ok(())
}

/// Tells the user what happened in the room (on standard error).
fn report(event: &NodeEvent) {
    match event {
        NodeEvent::Node(Event::PeerJoined(peer)) => eprintln!("peer joined: {peer}"),
        NodeEvent::Node(Event::PeerLeft(peer)) => eprintln!("peer left: {peer}"),
        NodeEvent::Node(Event::Server(state)) => eprintln!("signalling server: {}", state.as_str()),
        NodeEvent::Message { from, text } => eprintln!("{from}: {text}"),
        NodeEvent::Node(Event::FileFound(info)) => {
            eprintln!("offered: {} {} ({} bytes)", info.id, info.name, info.size)
        }
        NodeEvent::Node(Event::BadPeer { id, peer, reason }) => {
            eprintln!("peer {peer} sent bad data for {id}: {reason}")
        }
        NodeEvent::Node(Event::PeerRejected { peer, reason }) => {
            eprintln!("peer rejected: {peer} ({}: {reason})", reason.code())
        }
        _ => {}
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
