//! `--tls-self-signed`: HTTPS on a LAN without a certificate authority. The server makes a
//! self-signed certificate for the names it can be reached by (the listen address, or every
//! address of the machine's interfaces when it listens on all of them; `localhost`; the
//! hostname; and the `--tls-name`s), keeps it with its key in a directory (`--tls-dir`), and
//! reuses it on the next start, so a browser that accepted it once does not ask again. It is
//! made anew when the names change, when the files are unreadable, corrupt or do not belong
//! together, or when it expires within [`RENEW_BEFORE`]. The files it leaves are ordinary PEM
//! files, served through the same path as `--tls-cert`/`--tls-key` ([`crate::tls`]).

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;

use crate::config::{SelfSignedConfig, TlsConfig};

/// Default for [`SelfSignedConfig::dir`]: a directory in the working directory.
pub const DEFAULT_DIR: &str = ".signal-server-tls";

/// The certificate's file in [`SelfSignedConfig::dir`].
pub const CERT_FILE: &str = "cert.pem";

/// The private key's file in [`SelfSignedConfig::dir`] (mode 0600 on Unix).
pub const KEY_FILE: &str = "key.pem";

/// How long a certificate made here is valid: 825 days, the longest Apple's systems accept for
/// a TLS server certificate.
pub const VALIDITY: Duration = Duration::from_secs(825 * 24 * 60 * 60);

/// A kept certificate that expires within this time is made anew at start.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// A certificate made here is valid from this long before it was made, for devices whose
/// clock is a little behind.
const BACKDATE: Duration = Duration::from_secs(24 * 60 * 60);

/// A name in the certificate's subject alternative names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SanName {
    /// A DNS name, in lowercase, without a trailing dot.
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
}

impl SanName {
    /// `name` as a DNS name or an IP address, or `None` if it is neither (or empty).
    pub fn parse(name: &str) -> Option<Self> {
        let name = name.strip_suffix('.').unwrap_or(name);
        match ServerName::try_from(name).ok()? {
            ServerName::DnsName(dns) => Some(Self::Dns(dns.as_ref().to_ascii_lowercase())),
            ServerName::IpAddress(ip) => Some(Self::Ip(IpAddr::from(ip))),
            _ => None,
        }
    }

    /// `localhost`.
    pub fn localhost() -> Self {
        Self::Dns("localhost".to_owned())
    }

    /// The name as the host part of a URL (IPv6 addresses in brackets).
    pub fn url_host(&self) -> String {
        match self {
            Self::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
            other => other.to_string(),
        }
    }

    fn to_san(&self) -> Result<SanType, rcgen::Error> {
        Ok(match self {
            Self::Dns(name) => SanType::DnsName(name.as_str().try_into()?),
            Self::Ip(ip) => SanType::IpAddress(*ip),
        })
    }
}

impl fmt::Display for SanName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns(name) => f.write_str(name),
            Self::Ip(ip) => ip.fmt(f),
        }
    }
}

/// The names a server listening on one address is reached by, in three groups: its addresses,
/// the machine's names, and the names it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The listen address itself, or, for `0.0.0.0` (`::`), every address of the machine's
    /// interfaces of that family (both families for `::`), loopback included.
    pub addresses: Vec<IpAddr>,
    /// The hostname and, for a hostname without a dot, `HOSTNAME.local` (the name mDNS
    /// answers on a LAN).
    pub host: Vec<SanName>,
    /// The `--tls-name`s.
    pub given: Vec<SanName>,
    /// The address the server listens on.
    listen: IpAddr,
}

impl Names {
    /// The names for a server listening on `listen`, on a machine whose interfaces have
    /// `interfaces` and whose hostname is `hostname`, given `given` as well.
    pub fn new(
        listen: IpAddr,
        interfaces: &[IpAddr],
        hostname: Option<&str>,
        given: &[SanName],
    ) -> Self {
        let mut addresses: Vec<IpAddr> = match listen {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                interfaces.iter().copied().filter(IpAddr::is_ipv4).collect()
            }
            // A `::` listener takes IPv4 too (dual stack).
            IpAddr::V6(ip) if ip.is_unspecified() => interfaces.to_vec(),
            specific => vec![specific],
        };
        addresses.sort_unstable();
        addresses.dedup();
        let mut host = Vec::new();
        if let Some(SanName::Dns(name)) = hostname.and_then(SanName::parse) {
            let local = (!name.contains('.') && name != "localhost")
                .then(|| SanName::Dns(format!("{name}.local")));
            host.push(SanName::Dns(name));
            host.extend(local);
        }
        Self {
            addresses,
            host,
            given: given.to_vec(),
            listen,
        }
    }

    /// The names of this machine: [`Names::new`] with its interfaces' addresses (only looked
    /// up when `listen` is `0.0.0.0` or `::`) and its hostname.
    pub fn of_this_machine(listen: IpAddr, given: &[SanName]) -> Self {
        let interfaces = if listen.is_unspecified() {
            interface_addresses()
        } else {
            Vec::new()
        };
        let hostname = gethostname::gethostname();
        Self::new(listen, &interfaces, hostname.to_str(), given)
    }

    /// Every name the certificate is for, sorted (DNS names first), each once.
    pub fn all(&self) -> Vec<SanName> {
        let mut all: BTreeSet<SanName> = self.addresses.iter().map(|ip| SanName::Ip(*ip)).collect();
        all.insert(SanName::localhost());
        all.extend(self.host.iter().cloned());
        all.extend(self.given.iter().cloned());
        all.into_iter().collect()
    }

    /// The URLs to open the page at, most useful first: the listen address (or the machine's
    /// addresses other than loopback), the given names, then, when listening on every
    /// address, the hostname; `localhost` last when it reaches the server.
    pub fn urls(&self, port: u16) -> Vec<String> {
        let mut hosts: Vec<SanName> = Vec::new();
        let everywhere = self.listen.is_unspecified();
        hosts.extend(
            self.addresses
                .iter()
                .filter(|ip| !everywhere || !ip.is_loopback())
                .map(|ip| SanName::Ip(*ip)),
        );
        hosts.extend(self.given.iter().cloned());
        if everywhere {
            hosts.extend(self.host.iter().cloned());
        }
        if everywhere || self.listen.is_loopback() {
            hosts.push(SanName::localhost());
        }
        let mut seen = BTreeSet::new();
        hosts
            .into_iter()
            .filter(|host| seen.insert(host.clone()))
            .map(|host| format!("https://{}:{port}/", host.url_host()))
            .collect()
    }
}

/// The addresses of this machine's interfaces (IPv6 link-local ones left out: a URL cannot
/// name their interface). A machine whose interfaces cannot be listed gets its loopback
/// addresses, with a warning.
pub fn interface_addresses() -> Vec<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces.iter().map(if_addrs::Interface::ip).collect(),
        Err(err) => {
            tracing::warn!(%err, "cannot list the network interfaces: the certificate is for loopback only");
            vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ]
        }
    }
}

/// Why the certificate could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SelfSignedError {
    /// The directory could not be created, or a file in it could not be written.
    #[error(
        "cannot write the self-signed certificate to {path}: {source} (--tls-dir must name a directory this user can write)"
    )]
    Write {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// rcgen refused the names or the key.
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Whether the certificate was made now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// There was none in the directory.
    Made,
    /// The one in the directory was kept.
    Reused,
    /// The one in the directory could not be kept, for the reason given.
    Replaced(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Made => f.write_str("made now"),
            Self::Reused => f.write_str("reused"),
            Self::Replaced(why) => write!(f, "made anew: {why}"),
        }
    }
}

/// A self-signed certificate on disk, ready to serve.
#[derive(Debug, Clone)]
pub struct SelfSigned {
    /// Its certificate and key files, for [`crate::tls::acceptor`].
    pub tls: TlsConfig,
    /// The certificate, DER-encoded.
    pub der: Vec<u8>,
    /// [`fingerprint`] of [`SelfSigned::der`].
    pub fingerprint: String,
    /// The names it is for.
    pub names: Vec<SanName>,
    /// Whether it was made now.
    pub outcome: Outcome,
}

/// A self-signed certificate for a server that listens on `local`, and where to open it.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The certificate.
    pub certificate: SelfSigned,
    /// The `https://` URLs it is reached at ([`Names::urls`]).
    pub urls: Vec<String>,
}

impl Prepared {
    /// What the server prints at start, one line each: where the certificate is and what it
    /// is for, its SHA-256 fingerprint, and the URLs to open.
    pub fn report(&self) -> Vec<String> {
        let cert = &self.certificate;
        let names: Vec<String> = cert.names.iter().map(ToString::to_string).collect();
        let mut lines = vec![
            format!(
                "certificate {} (self-signed, {}) for {}",
                cert.tls.cert.display(),
                cert.outcome,
                names.join(", ")
            ),
            format!("certificate SHA-256 {}", cert.fingerprint),
        ];
        lines.extend(self.urls.iter().map(|url| format!("open {url}")));
        lines
    }
}

/// The certificate for `config` and a server listening on `local`: the names of this machine
/// ([`Names::of_this_machine`]), and the certificate for them from [`load_or_make`].
pub fn prepare(config: &SelfSignedConfig, local: SocketAddr) -> Result<Prepared, SelfSignedError> {
    let names = Names::of_this_machine(local.ip(), &config.names);
    let certificate = load_or_make(&config.dir, &names.all(), SystemTime::now())?;
    Ok(Prepared {
        certificate,
        urls: names.urls(local.port()),
    })
}

/// The certificate in `dir` if it is for exactly `names`, its key matches it, and it is valid
/// at `now` for at least [`RENEW_BEFORE`] more; otherwise a new one (with a new key), written
/// there (the directory is created, mode 0700 on Unix, if missing).
pub fn load_or_make(
    dir: &Path,
    names: &[SanName],
    now: SystemTime,
) -> Result<SelfSigned, SelfSignedError> {
    let tls = TlsConfig {
        cert: dir.join(CERT_FILE),
        key: dir.join(KEY_FILE),
    };
    let mut wanted: Vec<SanName> = names.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    let outcome = match kept(&tls, &wanted, now) {
        Ok(der) => {
            return Ok(SelfSigned {
                fingerprint: fingerprint(&der),
                der,
                names: wanted,
                outcome: Outcome::Reused,
                tls,
            });
        }
        Err(Unusable::Missing) => Outcome::Made,
        Err(Unusable::Because(why)) => Outcome::Replaced(why),
    };
    let (cert_pem, key_pem, der) = make(&wanted, now)?;
    create_dir(dir)?;
    // The key first: a crash in between leaves a pair that does not match, made anew next time.
    write_file(&tls.key, key_pem.as_bytes(), true)?;
    write_file(&tls.cert, cert_pem.as_bytes(), false)?;
    Ok(SelfSigned {
        fingerprint: fingerprint(&der),
        der,
        names: wanted,
        outcome,
        tls,
    })
}

/// The SHA-256 of `der` in the usual form: uppercase hex byte pairs separated by colons, as
/// browsers' certificate viewers and `openssl x509 -fingerprint -sha256` show it.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let pairs: Vec<String> = digest.iter().map(|byte| format!("{byte:02X}")).collect();
    pairs.join(":")
}

/// Why the kept certificate is not used.
enum Unusable {
    /// There is no certificate file.
    Missing,
    /// There is one, but it cannot be kept.
    Because(String),
}

/// The DER of the certificate in `tls.cert` if it can be kept for `wanted` at `now`.
fn kept(tls: &TlsConfig, wanted: &[SanName], now: SystemTime) -> Result<Vec<u8>, Unusable> {
    let because = |why: String| Unusable::Because(why);
    let cert_pem = match std::fs::read(&tls.cert) {
        Ok(pem) => pem,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Err(Unusable::Missing),
        Err(err) => {
            return Err(because(format!(
                "cannot read {}: {err}",
                tls.cert.display()
            )));
        }
    };
    let der = CertificateDer::from_pem_slice(&cert_pem).map_err(|err| {
        because(format!(
            "{} holds no certificate: {err}",
            tls.cert.display()
        ))
    })?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|err| {
        because(format!(
            "{} is not a certificate: {err}",
            tls.cert.display()
        ))
    })?;
    cert.verify_signature(None)
        .map_err(|err| because(format!("{} is not self-signed: {err}", tls.cert.display())))?;
    let key_pem = std::fs::read_to_string(&tls.key)
        .map_err(|err| because(format!("cannot read {}: {err}", tls.key.display())))?;
    let key = KeyPair::from_pem(&key_pem)
        .map_err(|err| because(format!("{} holds no usable key: {err}", tls.key.display())))?;
    if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
        return Err(because(format!(
            "{} is not the key of {}",
            tls.key.display(),
            tls.cert.display()
        )));
    }
    let have = names_in(&cert).ok_or_else(|| {
        because(format!(
            "{} has names of a kind this server does not make",
            tls.cert.display()
        ))
    })?;
    if have != wanted {
        let missing = |these: &[SanName], from: &[SanName]| -> Vec<SanName> {
            these
                .iter()
                .filter(|n| !from.contains(n))
                .cloned()
                .collect()
        };
        let (new, gone) = (missing(wanted, &have), missing(&have, wanted));
        let mut changes = Vec::new();
        if !new.is_empty() {
            changes.push(format!("new: {}", joined(&new)));
        }
        if !gone.is_empty() {
            changes.push(format!("gone: {}", joined(&gone)));
        }
        return Err(because(format!(
            "the names changed ({})",
            changes.join("; ")
        )));
    }
    let now = unix_seconds(now);
    let validity = cert.validity();
    if validity.not_before.timestamp() > now {
        return Err(because("it is not valid yet".to_owned()));
    }
    let renew = i64::try_from(RENEW_BEFORE.as_secs()).unwrap_or(i64::MAX);
    if validity.not_after.timestamp() < now.saturating_add(renew) {
        return Err(because(format!(
            "it expires within {} days",
            RENEW_BEFORE.as_secs() / 86_400
        )));
    }
    Ok(der.to_vec())
}

/// The subject alternative names of `cert`, sorted; `None` if any is unreadable or of a kind
/// this module does not make.
fn names_in(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<Vec<SanName>> {
    let Some(san) = cert.subject_alternative_name().ok()? else {
        return Some(Vec::new());
    };
    let mut names = san
        .value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::DNSName(dns) => SanName::parse(dns),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes)
                    .ok()
                    .map(|b| SanName::Ip(IpAddr::from(b))),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(|b| SanName::Ip(IpAddr::from(b))),
                _ => None,
            },
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    names.sort_unstable();
    names.dedup();
    Some(names)
}

/// A new key and a certificate for `names`, valid from a day before `now` for [`VALIDITY`]:
/// the certificate's PEM, the key's PEM, and the certificate's DER.
fn make(names: &[SanName], now: SystemTime) -> Result<(String, String, Vec<u8>), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.subject_alt_names = names
        .iter()
        .map(SanName::to_san)
        .collect::<Result<_, _>>()?;
    let mut subject = DistinguishedName::new();
    let host = names
        .iter()
        .find_map(|name| match name {
            SanName::Dns(dns) if dns != "localhost" && !dns.ends_with(".local") => {
                Some(dns.as_str())
            }
            _ => None,
        })
        .unwrap_or("localhost");
    subject.push(DnType::CommonName, format!("signal-server on {host}"));
    subject.push(DnType::OrganizationName, "signal-server (self-signed)");
    params.distinguished_name = subject;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    params.not_before = epoch + since_epoch.saturating_sub(BACKDATE);
    params.not_after = epoch + since_epoch + VALIDITY;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem(), cert.der().to_vec()))
}

fn joined(names: &[SanName]) -> String {
    let names: Vec<String> = names.iter().map(ToString::to_string).collect();
    names.join(", ")
}

fn unix_seconds(time: SystemTime) -> i64 {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// Creates `dir` (and its parents) if missing; the directory itself private to this user.
fn create_dir(dir: &Path) -> Result<(), SelfSignedError> {
    let failed = |source| SelfSignedError::Write {
        path: dir.to_owned(),
        source,
    };
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    match builder.create(dir) {
        Err(err) if err.kind() != io::ErrorKind::AlreadyExists || !dir.is_dir() => Err(failed(err)),
        _ => Ok(()),
    }
}

/// Writes `contents` to `path` through a temporary file beside it and a rename, so that a
/// reader never sees half a file; `private` files are readable by this user only.
fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), SelfSignedError> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".tmp-{}", std::process::id()));
    let temp = PathBuf::from(temp);
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, if private { 0o600 } else { 0o644 });
        #[cfg(not(unix))]
        let _ = private;
        let mut file = options.open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    written.map_err(|source| {
        let _ = std::fs::remove_file(&temp);
        SelfSignedError::Write {
            path: path.to_owned(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn dns(name: &str) -> SanName {
        SanName::Dns(name.to_owned())
    }

    fn names(list: &[&str]) -> Vec<SanName> {
        list.iter()
            .map(|name| SanName::parse(name).expect("a name"))
            .collect()
    }

    const DAY: Duration = Duration::from_secs(86_400);

    fn pem(der: &[u8]) -> String {
        use base64::Engine as _;
        let text = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = text
            .as_bytes()
            .chunks(64)
            .map(|line| std::str::from_utf8(line).expect("base64 is ASCII"))
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn names_are_dns_names_or_addresses() {
        assert_eq!(SanName::parse("LAN.Example."), Some(dns("lan.example")));
        assert_eq!(
            SanName::parse("10.0.0.7"),
            Some(SanName::Ip(ip("10.0.0.7")))
        );
        assert_eq!(SanName::parse("::1"), Some(SanName::Ip(ip("::1"))));
        for bad in ["", "a b", "-x.example", "x..example", "http://x"] {
            assert_eq!(SanName::parse(bad), None, "{bad:?}");
        }
        assert_eq!(SanName::Ip(ip("fd00::5")).url_host(), "[fd00::5]");
        assert_eq!(dns("x.example").url_host(), "x.example");
    }

    #[test]
    fn a_specific_listen_address_is_the_only_address() {
        let names = Names::new(ip("192.168.1.20"), &[], Some("studio"), &[dns("swarm.lan")]);
        assert_eq!(
            names.all(),
            vec![
                dns("localhost"),
                dns("studio"),
                dns("studio.local"),
                dns("swarm.lan"),
                SanName::Ip(ip("192.168.1.20")),
            ]
        );
        assert_eq!(
            names.urls(8443),
            ["https://192.168.1.20:8443/", "https://swarm.lan:8443/"]
        );
        let loopback = Names::new(ip("127.0.0.1"), &[], None, &[]);
        assert_eq!(
            loopback.all(),
            vec![dns("localhost"), SanName::Ip(ip("127.0.0.1"))]
        );
        assert_eq!(
            loopback.urls(1),
            ["https://127.0.0.1:1/", "https://localhost:1/"]
        );
    }

    #[test]
    fn listening_everywhere_takes_every_interface_address_of_the_family() {
        let interfaces = [
            ip("127.0.0.1"),
            ip("10.77.0.1"),
            ip("::1"),
            ip("fd00::5"),
            ip("10.77.0.1"),
        ];
        let v4 = Names::new(ip("0.0.0.0"), &interfaces, Some("box.example.org"), &[]);
        assert_eq!(v4.addresses, [ip("10.77.0.1"), ip("127.0.0.1")]);
        // A hostname with a dot gets no `.local` twin.
        assert_eq!(v4.host, [dns("box.example.org")]);
        assert_eq!(
            v4.urls(80),
            [
                "https://10.77.0.1:80/",
                "https://box.example.org:80/",
                "https://localhost:80/"
            ]
        );
        let both = Names::new(
            ip("::"),
            &interfaces,
            None,
            &[SanName::Ip(ip("203.0.113.9"))],
        );
        assert_eq!(
            both.all(),
            vec![
                dns("localhost"),
                SanName::Ip(ip("10.77.0.1")),
                SanName::Ip(ip("127.0.0.1")),
                SanName::Ip(ip("203.0.113.9")),
                SanName::Ip(ip("::1")),
                SanName::Ip(ip("fd00::5")),
            ]
        );
        assert_eq!(
            both.urls(8080),
            [
                "https://10.77.0.1:8080/",
                "https://[fd00::5]:8080/",
                "https://203.0.113.9:8080/",
                "https://localhost:8080/"
            ]
        );
        // A hostname that is not a DNS name is left out.
        assert!(
            Names::new(ip("0.0.0.0"), &[], Some("not a name"), &[])
                .host
                .is_empty()
        );
    }

    #[test]
    fn this_machine_has_loopback_among_its_addresses() {
        let names = Names::of_this_machine(ip("0.0.0.0"), &[]);
        assert!(names.addresses.contains(&ip("127.0.0.1")), "{names:?}");
        assert!(names.addresses.iter().all(IpAddr::is_ipv4), "{names:?}");
    }

    #[test]
    fn the_fingerprint_is_colon_separated_uppercase_hex() {
        // SHA-256 of the empty string.
        assert_eq!(
            fingerprint(b""),
            "E3:B0:C4:42:98:FC:1C:14:9A:FB:F4:C8:99:6F:B9:24:27:AE:41:E4:64:9B:93:4C:A4:95:99:1B:78:52:B8:55"
        );
    }

    #[test]
    fn a_certificate_is_made_once_and_then_reused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tls_dir = dir.path().join("nested/tls");
        let wanted = names(&["localhost", "127.0.0.1", "swarm.lan"]);
        let now = SystemTime::now();
        let made = load_or_make(&tls_dir, &wanted, now).expect("made");
        assert_eq!(made.outcome, Outcome::Made);
        assert_eq!(made.fingerprint, fingerprint(&made.der));
        let (_, cert) = x509_parser::parse_x509_certificate(&made.der).expect("a certificate");
        let mut sorted = wanted.clone();
        sorted.sort();
        assert_eq!(names_in(&cert), Some(sorted));
        let validity = cert.validity();
        let days = (validity.not_after.timestamp() - validity.not_before.timestamp()) / 86_400;
        assert_eq!(days, 826);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |path: &Path| {
                std::fs::metadata(path)
                    .expect("metadata")
                    .permissions()
                    .mode()
                    & 0o777
            };
            assert_eq!(mode(&made.tls.key), 0o600);
            assert_eq!(mode(&tls_dir), 0o700);
        }
        // In another order, a year later: the same certificate.
        let mut reordered = wanted.clone();
        reordered.reverse();
        let again = load_or_make(&tls_dir, &reordered, now + 365 * DAY).expect("reused");
        assert_eq!(again.outcome, Outcome::Reused);
        assert_eq!(again.der, made.der);
        assert_eq!(
            std::fs::read(&made.tls.cert).expect("cert"),
            std::fs::read(&again.tls.cert).expect("cert")
        );
        // The files serve.
        crate::tls::acceptor(&again.tls).expect("an acceptor");
    }

    #[test]
    fn other_names_make_a_new_certificate() {
        let dir = tempfile::tempdir().expect("temp dir");
        let now = SystemTime::now();
        let first = load_or_make(dir.path(), &names(&["localhost", "a.lan"]), now).expect("made");
        let changed = |other: &[&str]| {
            let next = load_or_make(dir.path(), &names(other), now).expect("made");
            match next.outcome {
                Outcome::Replaced(why) => why,
                kept => panic!("{kept:?} for {other:?}"),
            }
        };
        assert_eq!(changed(&["localhost"]), "the names changed (gone: a.lan)");
        assert_eq!(
            changed(&["localhost", "10.0.0.1", "b.lan"]),
            "the names changed (new: b.lan, 10.0.0.1)"
        );
        assert_eq!(
            changed(&["localhost", "a.lan"]),
            "the names changed (new: a.lan; gone: b.lan, 10.0.0.1)"
        );
        // Back to the first names: a certificate of its own, kept from now on.
        let last = load_or_make(dir.path(), &names(&["a.lan", "localhost"]), now).expect("kept");
        assert_eq!(last.outcome, Outcome::Reused);
        assert_ne!(last.der, first.der);
    }

    #[test]
    fn a_certificate_near_its_end_is_made_anew() {
        let dir = tempfile::tempdir().expect("temp dir");
        let wanted = names(&["localhost"]);
        let now = SystemTime::now();
        let first = load_or_make(dir.path(), &wanted, now).expect("made");
        let late = now + VALIDITY - RENEW_BEFORE + DAY;
        let renewed = load_or_make(dir.path(), &wanted, late).expect("renewed");
        assert_eq!(
            renewed.outcome,
            Outcome::Replaced("it expires within 30 days".to_owned())
        );
        assert_ne!(renewed.der, first.der);
        // A clock set back before it was made.
        let early = load_or_make(dir.path(), &wanted, now - 30 * DAY).expect("made");
        assert_eq!(
            early.outcome,
            Outcome::Replaced("it is not valid yet".to_owned())
        );
    }

    #[test]
    fn corrupt_or_mismatched_files_are_replaced() {
        let dir = tempfile::tempdir().expect("temp dir");
        let wanted = names(&["localhost"]);
        let now = SystemTime::now();
        let first = load_or_make(dir.path(), &wanted, now).expect("made");
        let (cert, key) = (first.tls.cert.clone(), first.tls.key.clone());
        let replaced = |expect: &str| {
            let next = load_or_make(dir.path(), &wanted, now).expect("made");
            match &next.outcome {
                Outcome::Replaced(why) => assert!(why.contains(expect), "{why} lacks {expect}"),
                other => panic!("{other:?}, expected a replacement for {expect}"),
            }
            assert_eq!(
                load_or_make(dir.path(), &wanted, now)
                    .expect("kept")
                    .outcome,
                Outcome::Reused
            );
            next
        };

        std::fs::write(&cert, "not a certificate").expect("write");
        replaced("holds no certificate");

        // A PEM block whose bytes are not a certificate.
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nAAECAw==\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        replaced("is not a certificate");

        // A byte of the signature changed.
        let good = load_or_make(dir.path(), &wanted, now).expect("kept");
        let mut der = good.der.clone();
        let last = der.len() - 1;
        der[last] ^= 1;
        std::fs::write(&cert, pem(&der)).expect("write");
        replaced("not self-signed");

        std::fs::write(&key, "not a key").expect("write");
        replaced("holds no usable key");

        std::fs::remove_file(&key).expect("remove");
        replaced("cannot read");

        // The key of another certificate.
        let other = tempfile::tempdir().expect("temp dir");
        let stranger = load_or_make(other.path(), &wanted, now).expect("made");
        std::fs::copy(&stranger.tls.key, &key).expect("copy");
        replaced("is not the key of");

        // A certificate with a kind of name this server does not make.
        let key_pair = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params
            .subject_alt_names
            .push(SanType::URI("https://x.example/".try_into().expect("ia5")));
        let odd = params.self_signed(&key_pair).expect("cert");
        std::fs::write(&cert, odd.pem()).expect("write");
        std::fs::write(&key, key_pair.serialize_pem()).expect("write");
        replaced("names of a kind");

        // A directory where the certificate should be: unreadable, and then not writable.
        std::fs::remove_file(&cert).expect("remove");
        std::fs::create_dir(&cert).expect("mkdir");
        let err = load_or_make(dir.path(), &wanted, now).expect_err("cannot replace a directory");
        assert!(
            matches!(&err, SelfSignedError::Write { path, .. } if *path == cert),
            "{err}"
        );
    }

    #[test]
    fn a_directory_that_cannot_be_made_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("a-file");
        std::fs::write(&file, "x").expect("write");
        for target in [file.join("tls"), file.clone()] {
            let err = load_or_make(&target, &names(&["localhost"]), SystemTime::now())
                .expect_err("not a directory");
            let message = err.to_string();
            assert!(
                message.starts_with("cannot write the self-signed certificate to ")
                    && message.contains("--tls-dir"),
                "{message}"
            );
        }
    }

    #[test]
    fn a_name_rcgen_refuses_is_an_error() {
        // Names come through `SanName::parse`, which only lets ASCII through; one made by hand
        // that is not ASCII is refused by rcgen, and the error says so.
        let dir = tempfile::tempdir().expect("temp dir");
        let err = load_or_make(dir.path(), &[dns("bücher.example")], SystemTime::now())
            .expect_err("not IA5");
        assert!(matches!(err, SelfSignedError::Generate(_)), "{err}");
        assert!(
            err.to_string()
                .starts_with("cannot make a self-signed certificate")
        );
    }

    #[test]
    fn the_report_names_the_fingerprint_and_the_urls() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = SelfSignedConfig {
            dir: dir.path().to_owned(),
            names: vec![dns("swarm.lan")],
        };
        let prepared = prepare(&config, "127.0.0.1:8443".parse().expect("addr")).expect("prepared");
        let report = prepared.report();
        assert!(
            report[0].contains("(self-signed, made now) for localhost, "),
            "{report:?}"
        );
        // The hostname's names come between, whatever this machine is called.
        assert!(report[0].contains(", swarm.lan, "), "{report:?}");
        assert!(report[0].ends_with(", 127.0.0.1"), "{report:?}");
        assert_eq!(
            report[1],
            format!("certificate SHA-256 {}", prepared.certificate.fingerprint)
        );
        assert_eq!(
            report[2..],
            [
                "open https://127.0.0.1:8443/",
                "open https://swarm.lan:8443/",
                "open https://localhost:8443/"
            ]
        );
    }
}
