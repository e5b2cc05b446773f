//! Opening one peer's WebSocket, from a chosen source address, and waiting for its id.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use crate::adapter::Event;
use crate::error::LoadgenError;
use crate::target::ServerKind;

/// One peer's connection.
pub type Socket = WebSocketStream<TcpStream>;

/// Size of each client WebSocket's read and write buffers: small, so that tens of thousands
/// of idle peers fit in one generator process (tungstenite's default is 128 KiB each).
const CLIENT_BUFFER: usize = 4 * 1024;

/// Largest frame a peer accepts from a server.
const MAX_FRAME: usize = 1024 * 1024;

/// Connects to `addr` (from `source`, port chosen by the kernel, when given) and completes the
/// WebSocket handshake for `path`.
pub async fn open(
    addr: SocketAddr,
    source: Option<IpAddr>,
    path: &str,
) -> Result<Socket, LoadgenError> {
    let failed = |source| LoadgenError::Connect { addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(failed)?;
    // Lets a source port that is still in TIME_WAIT from an earlier run be bound again.
    socket.set_reuseaddr(true).map_err(failed)?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0)).map_err(failed)?;
    }
    let stream = socket.connect(addr).await.map_err(failed)?;
    stream.set_nodelay(true).map_err(failed)?;
    let config = WebSocketConfig::default()
        .read_buffer_size(CLIENT_BUFFER)
        .write_buffer_size(CLIENT_BUFFER)
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME));
    let url = format!("ws://{addr}{path}");
    let (ws, _response) = client_async_with_config(url, stream, Some(config)).await?;
    Ok(ws)
}

/// What a peer learnt while waiting for its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The id the server assigned (`None`: the one the peer asked for).
    pub id: Option<String>,
    /// Room mates named with the id, plus join notifications that came before it.
    pub discovered: usize,
}

/// Reads frames until the server assigns an id, refuses the peer, or `limit` passes.
pub async fn wait_admission(
    ws: &mut Socket,
    kind: ServerKind,
    limit: Duration,
) -> Result<Admission, LoadgenError> {
    let mut discovered = 0;
    let waiting = async {
        while let Some(frame) = ws.next().await {
            let text = match frame? {
                Message::Text(text) => text,
                Message::Close(_) => break,
                _ => continue,
            };
            match kind.parse(text.as_str()) {
                Event::Assigned { id, known_peers } => {
                    return Ok(Admission {
                        id,
                        discovered: discovered + known_peers,
                    });
                }
                Event::Discovered => discovered += 1,
                Event::Refused(why) => return Err(LoadgenError::Refused(why)),
                _ => {}
            }
        }
        Err(LoadgenError::ClosedBeforeId)
    };
    tokio::time::timeout(limit, waiting)
        .await
        .map_err(|_| LoadgenError::Timeout("waiting for the server to assign an id"))?
}

/// Reads a list of source addresses: comma-separated addresses or ranges of the last IPv4
/// octet, e.g. `127.0.0.2-127.0.0.9,127.0.1.1`. An empty string is an empty list.
pub fn parse_source_addrs(list: &str) -> Result<Vec<IpAddr>, LoadgenError> {
    let bad = |why: String| LoadgenError::BadArgument(format!("source addresses '{list}': {why}"));
    let mut addrs = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            None => addrs.push(part.parse::<IpAddr>().map_err(|e| bad(e.to_string()))?),
            Some((first, last)) => {
                let first: std::net::Ipv4Addr = first.parse().map_err(|e| bad(format!("{e}")))?;
                let last: std::net::Ipv4Addr = last.parse().map_err(|e| bad(format!("{e}")))?;
                let (a, b) = (first.octets(), last.octets());
                if a[..3] != b[..3] || a[3] > b[3] {
                    return Err(bad(format!(
                        "range {first}-{last} must only vary the last octet, upwards"
                    )));
                }
                addrs.extend((a[3]..=b[3]).map(|o| IpAddr::from([a[0], a[1], a[2], o])));
            }
        }
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_address_lists() {
        let addrs = parse_source_addrs("127.0.0.2-127.0.0.4, 127.0.1.1").expect("valid");
        let expected: Vec<IpAddr> = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.1.1"]
            .iter()
            .map(|a| a.parse().expect("ip"))
            .collect();
        assert_eq!(addrs, expected);
        assert_eq!(parse_source_addrs("").expect("empty"), Vec::<IpAddr>::new());
        assert!(parse_source_addrs("127.0.0.4-127.0.0.2").is_err());
        assert!(parse_source_addrs("127.0.0.1-127.0.1.1").is_err());
        assert!(parse_source_addrs("nope").is_err());
    }
}
