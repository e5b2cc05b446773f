//! Where settings come from: command-line flags, environment variables (`SIGNAL_*`) and an
//! optional TOML file (`--config`), in that order of precedence, over the defaults of
//! [`Config`]. The file uses the flags' names as keys:
//!
//! ```toml
//! listen = "0.0.0.0:8080"
//! allow-origin = ["https://example.org"]
//! turn-url = ["turn:turn.example.org:3478"]
//! turn-secret = "…"
//! max-peers-per-room = 200
//! ```

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;
use swarm_protocol::IceServer;
use swarm_protocol::signal::IceUrls;

use crate::config::{
    Config, Limits, SelfSignedConfig, TlsConfig, TurnConfig, default_tcp_connections_per_ip,
};
use crate::self_signed::SanName;

/// Where the server listens unless told otherwise.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));

/// Default lifetime of issued TURN credentials, in seconds.
pub const DEFAULT_TURN_TTL_SECS: u64 = 24 * 60 * 60;

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Every setting, each optional so that the sources can be layered. Field docs are the
/// `--help` texts.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// TOML file with settings (keys are the flag names); flags and environment win over it.
    #[arg(long, env = "SIGNAL_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address and port to listen on; port 0 picks a free port. [default: 127.0.0.1:8080]
    #[arg(long, env = "SIGNAL_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Directory served at `/`: the page (index.html) and the WASM client (pkg/).
    /// [default: www]
    #[arg(long, env = "SIGNAL_WWW", value_name = "DIR")]
    pub www: Option<PathBuf>,

    /// Largest JSON frame a client may send, in bytes; larger ones get a `too-large` error,
    /// and frames over 16 times this close the connection (1009). [default: 65536]
    #[arg(long, env = "SIGNAL_MAX_FRAME", value_name = "BYTES")]
    pub max_frame: Option<usize>,

    /// Frames queued for a client that is not reading before it is disconnected (1008).
    /// [default: 256]
    #[arg(long, env = "SIGNAL_OUTGOING_QUEUE", value_name = "FRAMES")]
    pub outgoing_queue: Option<usize>,

    /// Bytes of frames waiting for a client that is not reading before it is disconnected
    /// (1008), whatever their number; one frame is always accepted. [default: 1048576]
    #[arg(long, env = "SIGNAL_OUTGOING_QUEUE_BYTES", value_name = "BYTES")]
    pub outgoing_queue_bytes: Option<usize>,

    /// Seconds a write to a WebSocket client may take before the client counts as not
    /// reading and is disconnected (1008). [default: 30]
    #[arg(long, env = "SIGNAL_WRITE_TIMEOUT", value_name = "SECS")]
    pub write_timeout: Option<u64>,

    /// A STUN server handed to clients, e.g. stun:stun.example.org:3478 (repeat the flag,
    /// or separate with commas, for several).
    #[arg(long, env = "SIGNAL_STUN", value_name = "URL", value_delimiter = ',')]
    pub stun: Option<Vec<String>>,

    /// A TURN server URL, e.g. turn:turn.example.org:3478; needs --turn-secret. Clients get
    /// fresh time-limited credentials for it in every `welcome`.
    #[arg(
        long,
        env = "SIGNAL_TURN_URL",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub turn_url: Option<Vec<String>>,

    /// Secret shared with the TURN server (coturn: use-auth-secret, static-auth-secret).
    #[arg(
        long,
        env = "SIGNAL_TURN_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub turn_secret: Option<String>,

    /// Lifetime of issued TURN credentials, in seconds. [default: 86400]
    #[arg(long, env = "SIGNAL_TURN_TTL", value_name = "SECS")]
    pub turn_ttl: Option<u64>,

    /// Frames per second one connection may send on average; 0 for no limit. [default: 50]
    #[arg(long, env = "SIGNAL_RATE", value_name = "PER_SEC")]
    pub rate: Option<u32>,

    /// Frames one connection may send in a burst above the rate. [default: 500]
    #[arg(long, env = "SIGNAL_BURST", value_name = "FRAMES")]
    pub burst: Option<u32>,

    /// WebSocket connections open at once from one IP address; 0 for no limit. [default: 64]
    #[arg(long, env = "SIGNAL_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    pub max_connections_per_ip: Option<usize>,

    /// TCP connections (HTTP and WebSocket) open at once from one IP address; further ones
    /// are closed at once. 0 for no limit; not applied with --trust-forwarded-for.
    /// [default: twice --max-connections-per-ip]
    #[arg(long, env = "SIGNAL_MAX_TCP_CONNECTIONS_PER_IP", value_name = "N")]
    pub max_tcp_connections_per_ip: Option<usize>,

    /// TURN credentials handed to one IP address (IPv6: one /64) per hour; past it, welcome
    /// carries no TURN server. 0 for no limit. [default: 100]
    #[arg(long, env = "SIGNAL_MAX_TURN_CREDENTIALS_PER_IP", value_name = "N")]
    pub max_turn_credentials_per_ip: Option<u32>,

    /// Peers in one room; 0 for no limit. [default: 500]
    #[arg(long, env = "SIGNAL_MAX_PEERS_PER_ROOM", value_name = "N")]
    pub max_peers_per_room: Option<usize>,

    /// Rooms on this server; 0 for no limit. [default: 100000]
    #[arg(long, env = "SIGNAL_MAX_ROOMS", value_name = "N")]
    pub max_rooms: Option<usize>,

    /// Seconds a connection may stay silent (no frame, no pong) before it is closed.
    /// [default: 60]
    #[arg(long, env = "SIGNAL_IDLE_TIMEOUT", value_name = "SECS")]
    pub idle_timeout: Option<u64>,

    /// Seconds between the server's pings; must be below --idle-timeout. [default: 20]
    #[arg(long, env = "SIGNAL_PING_INTERVAL", value_name = "SECS")]
    pub ping_interval: Option<u64>,

    /// Seconds from accepting a connection to the end of its TLS handshake and first request
    /// headers; a connection that sends nothing is closed after it. [default: 10]
    #[arg(long, env = "SIGNAL_HANDSHAKE_TIMEOUT", value_name = "SECS")]
    pub handshake_timeout: Option<u64>,

    /// Seconds an HTTP connection (keep-alive or h2c; not a WebSocket) may carry no bytes
    /// either way before it is closed. [default: 30]
    #[arg(long, env = "SIGNAL_HTTP_IDLE_TIMEOUT", value_name = "SECS")]
    pub http_idle_timeout: Option<u64>,

    /// A page origin allowed to connect, e.g. https://example.org (repeat, or separate with
    /// commas). Without any, every origin may connect.
    #[arg(
        long,
        env = "SIGNAL_ALLOW_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub allow_origin: Option<Vec<String>>,

    /// With a secret, joining needs `?token=` signed with it (see `signal-server token`).
    #[arg(
        long,
        env = "SIGNAL_TOKEN_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub token_secret: Option<String>,

    /// Behind a reverse proxy: take the client's address from the last X-Forwarded-For
    /// entry for per-address limits. Only set this when a proxy always writes that header.
    #[arg(long, env = "SIGNAL_TRUST_FORWARDED_FOR", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub trust_forwarded_for: Option<bool>,

    /// PEM certificate chain: serve https:// and wss:// directly (needs --tls-key).
    #[arg(long, env = "SIGNAL_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "SIGNAL_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Serve https:// and wss:// with a self-signed certificate made for the listen address
    /// (every address of the machine for 0.0.0.0 or ::), localhost, the hostname and
    /// --tls-name; it is kept in --tls-dir and reused on restart, and its SHA-256 fingerprint
    /// printed. Not with --tls-cert/--tls-key.
    #[arg(long, env = "SIGNAL_TLS_SELF_SIGNED", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub tls_self_signed: Option<bool>,

    /// With --tls-self-signed: another DNS name or IP address the certificate is for, e.g. a
    /// name your LAN's DNS gives this machine (repeat, or separate with commas).
    #[arg(
        long,
        env = "SIGNAL_TLS_NAME",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub tls_name: Option<Vec<String>>,

    /// With --tls-self-signed: directory where the certificate and its key are kept (made,
    /// mode 0700, if missing). [default: .signal-server-tls]
    #[arg(long, env = "SIGNAL_TLS_DIR", value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,

    /// Log format on stderr (RUST_LOG sets the level). [default: text]
    #[arg(long, env = "SIGNAL_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Share rooms with other instances through Redis, e.g. redis://127.0.0.1:6379.
    #[arg(long, env = "SIGNAL_REDIS", value_name = "URL")]
    pub redis: Option<String>,

    /// With --redis: seconds after which an instance that stopped refreshing its presence
    /// counts as dead and its peers as gone (at least 3). [default: 10]
    #[arg(long, env = "SIGNAL_REDIS_PRESENCE_TTL", value_name = "SECS")]
    pub redis_presence_ttl: Option<u64>,

    /// Seconds a peer whose connection was lost (without a close frame) stays in its room,
    /// so that it can come back with its `resume` token before the others hear `left`; 0
    /// announces `left` at once. [default: 20]
    #[arg(long, env = "SIGNAL_RESUME_GRACE", value_name = "SECS")]
    pub resume_grace: Option<u64>,

    /// Secret that `resume` tokens are signed with; give every instance sharing Redis the
    /// same one, and keep it across restarts. [default: random per process]
    #[arg(
        long,
        env = "SIGNAL_RESUME_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub resume_secret: Option<String>,

    /// Send a Content-Security-Policy (and frame-ancestors 'none') with the files of --www;
    /// turn it off for a page of your own that needs more than the bundled one.
    /// [default: true]
    #[arg(long, env = "SIGNAL_CONTENT_SECURITY_POLICY", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub content_security_policy: Option<bool>,
}

/// Settings that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The `--config` file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The `--config` file is not valid TOML, or has an unknown key or a wrong type.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and why.
        source: Box<toml::de::Error>,
    },
    /// Settings that contradict each other or are out of range.
    #[error("{0}")]
    Invalid(String),
}

/// What the process needs besides the [`Config`].
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Where to listen.
    pub listen: SocketAddr,
    /// How to log.
    pub log_format: LogFormat,
    /// `--tls-self-signed`: the process makes (or reuses) the certificate once it has bound
    /// the listener, and serves it as [`Config::tls`], which is `None` until then.
    pub self_signed: Option<SelfSignedConfig>,
    /// Everything else.
    pub config: Config,
}

impl Settings {
    /// Adds the settings of the `--config` file, if one was given, below these.
    pub fn with_file(self) -> Result<Self, SettingsError> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let file = Self::from_file(&path)?;
        Ok(self.over(file))
    }

    /// Reads a TOML settings file.
    pub fn from_file(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| SettingsError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// These settings, with `lower`'s filling what these leave unset.
    pub fn over(self, lower: Self) -> Self {
        Self {
            config: self.config.or(lower.config),
            listen: self.listen.or(lower.listen),
            www: self.www.or(lower.www),
            max_frame: self.max_frame.or(lower.max_frame),
            outgoing_queue: self.outgoing_queue.or(lower.outgoing_queue),
            outgoing_queue_bytes: self.outgoing_queue_bytes.or(lower.outgoing_queue_bytes),
            write_timeout: self.write_timeout.or(lower.write_timeout),
            stun: self.stun.or(lower.stun),
            turn_url: self.turn_url.or(lower.turn_url),
            turn_secret: self.turn_secret.or(lower.turn_secret),
            turn_ttl: self.turn_ttl.or(lower.turn_ttl),
            rate: self.rate.or(lower.rate),
            burst: self.burst.or(lower.burst),
            max_connections_per_ip: self.max_connections_per_ip.or(lower.max_connections_per_ip),
            max_tcp_connections_per_ip: self
                .max_tcp_connections_per_ip
                .or(lower.max_tcp_connections_per_ip),
            max_turn_credentials_per_ip: self
                .max_turn_credentials_per_ip
                .or(lower.max_turn_credentials_per_ip),
            max_peers_per_room: self.max_peers_per_room.or(lower.max_peers_per_room),
            max_rooms: self.max_rooms.or(lower.max_rooms),
            idle_timeout: self.idle_timeout.or(lower.idle_timeout),
            ping_interval: self.ping_interval.or(lower.ping_interval),
            handshake_timeout: self.handshake_timeout.or(lower.handshake_timeout),
            http_idle_timeout: self.http_idle_timeout.or(lower.http_idle_timeout),
            allow_origin: self.allow_origin.or(lower.allow_origin),
            token_secret: self.token_secret.or(lower.token_secret),
            trust_forwarded_for: self.trust_forwarded_for.or(lower.trust_forwarded_for),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            tls_self_signed: self.tls_self_signed.or(lower.tls_self_signed),
            tls_name: self.tls_name.or(lower.tls_name),
            tls_dir: self.tls_dir.or(lower.tls_dir),
            log_format: self.log_format.or(lower.log_format),
            redis: self.redis.or(lower.redis),
            redis_presence_ttl: self.redis_presence_ttl.or(lower.redis_presence_ttl),
            resume_grace: self.resume_grace.or(lower.resume_grace),
            resume_secret: self.resume_secret.or(lower.resume_secret),
            content_security_policy: self
                .content_security_policy
                .or(lower.content_security_policy),
        }
    }

    /// Applies the defaults and checks that the settings fit together.
    pub fn resolve(self) -> Result<Resolved, SettingsError> {
        let invalid = |message: &str| Err(SettingsError::Invalid(message.to_owned()));
        let defaults = Limits::default();
        let secs =
            |value: Option<u64>, default: Duration| value.map_or(default, Duration::from_secs);
        let connections_per_ip = self
            .max_connections_per_ip
            .unwrap_or(defaults.connections_per_ip);
        let limits = Limits {
            rate: self.rate.unwrap_or(defaults.rate),
            burst: self.burst.unwrap_or(defaults.burst),
            connections_per_ip,
            tcp_connections_per_ip: self
                .max_tcp_connections_per_ip
                .unwrap_or_else(|| default_tcp_connections_per_ip(connections_per_ip)),
            turn_credentials_per_ip: self
                .max_turn_credentials_per_ip
                .unwrap_or(defaults.turn_credentials_per_ip),
            peers_per_room: self.max_peers_per_room.unwrap_or(defaults.peers_per_room),
            rooms: self.max_rooms.unwrap_or(defaults.rooms),
            idle_timeout: secs(self.idle_timeout, defaults.idle_timeout),
            ping_interval: secs(self.ping_interval, defaults.ping_interval),
            handshake_timeout: secs(self.handshake_timeout, defaults.handshake_timeout),
            http_idle_timeout: secs(self.http_idle_timeout, defaults.http_idle_timeout),
            write_timeout: secs(self.write_timeout, defaults.write_timeout),
        };
        if limits.ping_interval.is_zero() || limits.ping_interval >= limits.idle_timeout {
            return invalid("--ping-interval must be at least 1 and below --idle-timeout");
        }
        if limits.handshake_timeout.is_zero() {
            return invalid("--handshake-timeout must be at least 1 second");
        }
        if limits.http_idle_timeout.is_zero() {
            return invalid("--http-idle-timeout must be at least 1 second");
        }
        if limits.write_timeout.is_zero() {
            return invalid("--write-timeout must be at least 1 second");
        }
        if self.outgoing_queue_bytes == Some(0) {
            return invalid("--outgoing-queue-bytes must be at least 1");
        }
        if limits.rate > 0 && limits.burst == 0 {
            return invalid("--burst must be at least 1 when --rate limits frames");
        }
        let turn = match (self.turn_url, self.turn_secret) {
            (Some(urls), Some(secret)) if !urls.is_empty() && !secret.is_empty() => {
                Some(TurnConfig {
                    urls,
                    secret,
                    ttl: Duration::from_secs(self.turn_ttl.unwrap_or(DEFAULT_TURN_TTL_SECS)),
                })
            }
            (None, None) => None,
            _ => return invalid("--turn-url and --turn-secret go together"),
        };
        let self_signed = if self.tls_self_signed.unwrap_or(false) {
            if self.tls_cert.is_some() || self.tls_key.is_some() {
                return invalid(
                    "--tls-self-signed makes its own certificate: give either it or --tls-cert and --tls-key, not both",
                );
            }
            let mut names = Vec::new();
            for name in self.tls_name.unwrap_or_default() {
                let Some(parsed) = SanName::parse(name.trim()) else {
                    return Err(SettingsError::Invalid(format!(
                        "--tls-name {name:?} is not a DNS name or an IP address"
                    )));
                };
                names.push(parsed);
            }
            let dir = self
                .tls_dir
                .unwrap_or_else(|| PathBuf::from(crate::self_signed::DEFAULT_DIR));
            if dir.as_os_str().is_empty() {
                return invalid("--tls-dir must not be empty");
            }
            Some(SelfSignedConfig { dir, names })
        } else {
            if self.tls_name.is_some() || self.tls_dir.is_some() {
                return invalid("--tls-name and --tls-dir go with --tls-self-signed");
            }
            None
        };
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsConfig { cert, key }),
            (None, None) => None,
            _ => return invalid("--tls-cert and --tls-key go together"),
        };
        let redis_presence_ttl = self
            .redis_presence_ttl
            .unwrap_or(crate::config::DEFAULT_REDIS_PRESENCE_TTL_SECS);
        if redis_presence_ttl < 3 {
            return invalid("--redis-presence-ttl must be at least 3 seconds");
        }
        if self.token_secret.as_deref() == Some("") {
            return invalid("--token-secret must not be empty");
        }
        if self.resume_secret.as_deref() == Some("") {
            return invalid("--resume-secret must not be empty");
        }
        let ice_servers = self
            .stun
            .unwrap_or_default()
            .into_iter()
            .map(|url| IceServer {
                urls: IceUrls::One(url),
                username: None,
                credential: None,
            })
            .collect();
        let defaults = Config::default();
        let listen = self.listen.unwrap_or(DEFAULT_LISTEN);
        Ok(Resolved {
            listen,
            log_format: self.log_format.unwrap_or_default(),
            self_signed,
            config: Config {
                www: self.www.unwrap_or(defaults.www),
                max_frame_len: self.max_frame.unwrap_or(defaults.max_frame_len),
                outgoing_queue: self.outgoing_queue.unwrap_or(defaults.outgoing_queue),
                outgoing_queue_bytes: self
                    .outgoing_queue_bytes
                    .unwrap_or(defaults.outgoing_queue_bytes),
                ice_servers,
                turn,
                limits,
                allowed_origins: self.allow_origin.unwrap_or_default(),
                token_secret: self.token_secret,
                trust_forwarded_for: self.trust_forwarded_for.unwrap_or(false),
                tls,
                redis: self.redis,
                redis_presence_ttl: Duration::from_secs(redis_presence_ttl),
                resume_grace: secs(self.resume_grace, defaults.resume_grace),
                resume_secret: self.resume_secret,
                content_security_policy: self.content_security_policy.unwrap_or(true),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Settings {
        toml::from_str(text).expect("valid settings")
    }

    #[test]
    fn nothing_set_gives_the_defaults() {
        let resolved = Settings::default().resolve().expect("defaults resolve");
        assert_eq!(resolved.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(resolved.config.limits, Limits::default());
        assert!(resolved.config.token_secret.is_none());
        assert!(resolved.config.allowed_origins.is_empty());
    }

    #[test]
    fn the_tcp_limit_follows_the_websocket_limit_unless_set() {
        let resolved = parse("max-connections-per-ip = 10\n")
            .resolve()
            .expect("resolves");
        assert_eq!(resolved.config.limits.tcp_connections_per_ip, 20);
        let unlimited = parse("max-connections-per-ip = 0\n")
            .resolve()
            .expect("resolves");
        assert_eq!(unlimited.config.limits.tcp_connections_per_ip, 0);
        let set = parse("max-connections-per-ip = 0\nmax-tcp-connections-per-ip = 5\n")
            .resolve()
            .expect("resolves");
        assert_eq!(set.config.limits.tcp_connections_per_ip, 5);
        let csp = parse("content-security-policy = false\n")
            .resolve()
            .expect("resolves");
        assert!(!csp.config.content_security_policy);
        assert!(parse("outgoing-queue-bytes = 0\n").resolve().is_err());
    }

    #[test]
    fn flags_win_over_the_file() {
        let file = parse(
            "listen = \"0.0.0.0:9000\"\nrate = 5\nmax-rooms = 7\nallow-origin = [\"https://a.example\"]\n",
        );
        let flags = Settings {
            rate: Some(9),
            ..Settings::default()
        };
        let resolved = flags.over(file).resolve().expect("resolves");
        assert_eq!(resolved.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(resolved.config.limits.rate, 9);
        assert_eq!(resolved.config.limits.rooms, 7);
        assert_eq!(resolved.config.allowed_origins, ["https://a.example"]);
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_errors() {
        assert!(toml::from_str::<Settings>("listn = \"x\"").is_err());
        assert!(toml::from_str::<Settings>("rate = \"fast\"").is_err());
        assert!(toml::from_str::<Settings>("listen = \"not an address\"").is_err());
    }

    #[test]
    fn settings_that_go_together_are_checked() {
        let only_secret = Settings {
            turn_secret: Some("s".into()),
            ..Settings::default()
        };
        assert!(matches!(
            only_secret.resolve(),
            Err(SettingsError::Invalid(_))
        ));
        let only_cert = Settings {
            tls_cert: Some("c.pem".into()),
            ..Settings::default()
        };
        assert!(matches!(
            only_cert.resolve(),
            Err(SettingsError::Invalid(_))
        ));
        let slow_ping = Settings {
            ping_interval: Some(60),
            idle_timeout: Some(30),
            ..Settings::default()
        };
        assert!(matches!(
            slow_ping.resolve(),
            Err(SettingsError::Invalid(_))
        ));
    }

    #[test]
    fn a_self_signed_certificate_comes_from_flags_or_the_file() {
        let resolved = parse("tls-self-signed = true\ntls-name = [\"Swarm.LAN\", \"192.0.2.7\"]\n")
            .resolve()
            .expect("resolves");
        let self_signed = resolved.self_signed.expect("self-signed");
        assert_eq!(self_signed.dir, PathBuf::from(".signal-server-tls"));
        assert_eq!(
            self_signed.names,
            [
                SanName::Dns("swarm.lan".to_owned()),
                SanName::Ip("192.0.2.7".parse().expect("ip"))
            ]
        );
        // Served once the process has made it, not before.
        assert!(resolved.config.tls.is_none());

        let flags = Settings {
            tls_dir: Some("/srv/tls".into()),
            ..Settings::default()
        };
        let file = parse("tls-self-signed = true\ntls-dir = \"here\"\n");
        let resolved = flags.over(file).resolve().expect("resolves");
        assert_eq!(
            resolved.self_signed.expect("self-signed").dir,
            PathBuf::from("/srv/tls")
        );

        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            settings: Settings,
        }
        let cli = <Cli as clap::Parser>::try_parse_from([
            "signal-server",
            "--tls-self-signed",
            "--tls-name",
            "a.lan",
            "--tls-name",
            "b.lan,10.0.0.9",
        ])
        .expect("flags parse");
        let names = cli
            .settings
            .resolve()
            .expect("resolves")
            .self_signed
            .expect("on")
            .names;
        assert_eq!(names.len(), 3);
        let off =
            <Cli as clap::Parser>::try_parse_from(["signal-server", "--tls-self-signed", "false"])
                .expect("flags parse");
        assert!(
            off.settings
                .resolve()
                .expect("resolves")
                .self_signed
                .is_none()
        );
        assert!(
            Settings::default()
                .resolve()
                .expect("defaults")
                .self_signed
                .is_none()
        );
    }

    #[test]
    fn self_signed_settings_that_do_not_fit_are_refused() {
        let refused = |text: &str| match parse(text).resolve() {
            Err(SettingsError::Invalid(message)) => message,
            other => panic!("{text}: {other:?}"),
        };
        for with_own in [
            "tls-self-signed = true\ntls-cert = \"c.pem\"\ntls-key = \"k.pem\"\n",
            "tls-self-signed = true\ntls-key = \"k.pem\"\n",
        ] {
            let message = refused(with_own);
            assert!(
                message.contains("--tls-self-signed") && message.contains("--tls-cert"),
                "{message}"
            );
        }
        for without in [
            "tls-name = [\"a.lan\"]\n",
            "tls-self-signed = false\ntls-dir = \"d\"\n",
        ] {
            let message = refused(without);
            assert!(message.contains("go with --tls-self-signed"), "{message}");
        }
        let message = refused("tls-self-signed = true\ntls-name = [\"not a name\"]\n");
        assert!(
            message.contains("\"not a name\" is not a DNS name"),
            "{message}"
        );
        let message = refused("tls-self-signed = true\ntls-dir = \"\"\n");
        assert!(message.contains("--tls-dir must not be empty"), "{message}");
    }

    #[test]
    fn turn_and_stun_become_ice_settings() {
        let resolved = parse("stun = [\"stun:s.example:3478\"]\nturn-url = [\"turn:t.example:3478\"]\nturn-secret = \"k\"\nturn-ttl = 600\n")
            .resolve()
            .expect("resolves");
        assert_eq!(resolved.config.ice_servers.len(), 1);
        let turn = resolved.config.turn.expect("turn configured");
        assert_eq!(turn.ttl, Duration::from_secs(600));
        assert_eq!(turn.urls, ["turn:t.example:3478"]);
    }
}
