//! Resident memory of a server process, from `/proc/PID/status`.

use crate::error::LoadgenError;

/// The `VmRSS` of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64, LoadgenError> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|err| LoadgenError::Rss {
        pid,
        reason: err.to_string(),
    })?;
    parse_vm_rss(&status).ok_or_else(|| LoadgenError::Rss {
        pid,
        reason: "no VmRSS line in its status".into(),
    })
}

/// [`rss_kib`] for an optional process: `Ok(None)` when there is none.
pub fn maybe_rss_kib(pid: Option<u32>) -> Result<Option<u64>, LoadgenError> {
    pid.map(rss_kib).transpose()
}

/// The value of the `VmRSS:` line (`VmRSS:     1234 kB`), in KiB.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let value = words.next()?.parse::<u64>().ok()?;
    match words.next() {
        Some("kB") | None => Some(value),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss() {
        let status = "Name:\tx\nVmPeak:\t  9 kB\nVmRSS:\t    1234 kB\nThreads:\t2\n";
        assert_eq!(parse_vm_rss(status), Some(1234));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\tlots kB\n"), None);
    }

    #[test]
    fn reads_this_process() {
        let kib = rss_kib(std::process::id()).expect("own status");
        assert!(kib > 0);
    }
}
