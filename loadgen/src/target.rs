//! Which server to load, where it listens, and which process to weigh.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use crate::error::LoadgenError;

/// The signalling servers the generator can speak to, one adapter each (see [`crate::adapter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerKind {
    /// Our `signal-server` (signalling protocol v1, `protocol/PROTOCOL.md`).
    Swarm,
    /// `matchbox_server` from crates.io.
    Matchbox,
    /// The PeerJS server (`peer` on npm).
    Peerjs,
}

impl ServerKind {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Swarm => "swarm",
            Self::Matchbox => "matchbox",
            Self::Peerjs => "peerjs",
        }
    }
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ServerKind {
    type Err = LoadgenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "swarm" => Ok(Self::Swarm),
            "matchbox" => Ok(Self::Matchbox),
            "peerjs" => Ok(Self::Peerjs),
            other => Err(LoadgenError::BadArgument(format!(
                "unknown server kind '{other}' (swarm, matchbox, peerjs)"
            ))),
        }
    }
}

/// One server under test, written on the command line as
/// `kind=KIND,addr=HOST:PORT[,pid=PID][,peers=N][,label=NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Which protocol it speaks.
    pub kind: ServerKind,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process id, to read its resident memory; without it memory is not reported.
    pub pid: Option<u32>,
    /// How many peers to use against this server instead of the scenario's `--peers`
    /// (to cap a server that cannot hold as many).
    pub peers: Option<usize>,
    /// The column heading in reports; the kind's name by default.
    pub label: String,
}

impl FromStr for Target {
    type Err = LoadgenError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| LoadgenError::BadArgument(format!("target '{spec}': {why}"));
        let (mut kind, mut addr, mut pid, mut peers, mut label) = (None, None, None, None, None);
        for part in spec.split(',') {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("'{part}' is not key=value")))?;
            match key {
                "kind" => kind = Some(value.parse::<ServerKind>()?),
                "addr" => {
                    addr = Some(
                        value
                            .parse::<SocketAddr>()
                            .map_err(|err| bad(format!("addr: {err}")))?,
                    )
                }
                "pid" => {
                    pid = Some(
                        value
                            .parse::<u32>()
                            .map_err(|err| bad(format!("pid: {err}")))?,
                    )
                }
                "peers" => {
                    peers = Some(
                        value
                            .parse::<usize>()
                            .map_err(|err| bad(format!("peers: {err}")))?,
                    )
                }
                "label" => label = Some(value.to_owned()),
                other => return Err(bad(format!("unknown key '{other}'"))),
            }
        }
        let kind = kind.ok_or_else(|| bad("kind= is missing".into()))?;
        let addr = addr.ok_or_else(|| bad("addr= is missing".into()))?;
        Ok(Self {
            kind,
            addr,
            pid,
            peers,
            label: label.unwrap_or_else(|| kind.name().to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_spec() {
        let target: Target = "kind=peerjs,addr=127.0.0.1:9000,pid=42,peers=100,label=PeerJS"
            .parse()
            .expect("valid");
        assert_eq!(target.kind, ServerKind::Peerjs);
        assert_eq!(target.addr, "127.0.0.1:9000".parse().expect("addr"));
        assert_eq!(target.pid, Some(42));
        assert_eq!(target.peers, Some(100));
        assert_eq!(target.label, "PeerJS");
    }

    #[test]
    fn refuses_incomplete_or_unknown() {
        assert!("kind=swarm".parse::<Target>().is_err());
        assert!("addr=127.0.0.1:1".parse::<Target>().is_err());
        assert!("kind=nope,addr=127.0.0.1:1".parse::<Target>().is_err());
        assert!("kind=swarm,addr=127.0.0.1:1,x=1".parse::<Target>().is_err());
    }
}
