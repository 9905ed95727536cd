//! systemd's notify protocol, the few lines of it the supervisor needs (docs/install.md,
//! `Type=notify`): `READY=1`, `STATUS=…`, `WATCHDOG=1` and `STOPPING=1` as datagrams on
//! `$NOTIFY_SOCKET` (a path, or an abstract name written `@name`).
//!
//! Invariants: without `$NOTIFY_SOCKET` every call is a no-op; a send that fails is ignored
//! (systemd going away must never stop a backup); the watchdog interval is half of
//! `$WATCHDOG_USEC`, honoured only when `$WATCHDOG_PID` is unset or names this process.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A connection to the service manager, when there is one.
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; None when unset or unusable.
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let text = path.to_str()?;
        let addr = match text.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes()).ok()?
            }
            None => SocketAddr::from_pathname(text).ok()?,
        };
        let socket = UnixDatagram::unbound().ok()?;
        Some(Notifier { socket, addr })
    }

    /// Sends one state line (`READY=1`, `STATUS=…`); failures are ignored.
    pub fn send(&self, state: &str) {
        let _ = self.socket.send_to_addr(state.as_bytes(), &self.addr);
    }
}

/// How often to send `WATCHDOG=1`: half the unit's `WatchdogSec`, when it set one for us.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
