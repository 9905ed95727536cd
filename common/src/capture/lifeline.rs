//! The watchers' life is the supervisor's (docs/design.md#the-supervisor): a watcher the
//! supervisor starts must not outlive it, even when it is killed with SIGKILL.
//!
//! Owns: the variable the supervisor passes its pid in ([`SUPERVISOR_PID_VAR`]) and the
//! child's side ([`tie_to_supervisor`]): `PR_SET_PDEATHSIG` asks the kernel for a SIGTERM
//! when the parent goes, and the watcher's SIGTERM handling then ends it cleanly.
//!
//! Invariants: a watcher run by hand (the variable unset) is never affected; the race where
//! the supervisor dies between `fork` and the `prctl` is closed by comparing the parent pid
//! after the `prctl`.

use crate::error::{Error, Result};

/// Set by the supervisor, to its pid, in the environment of the watchers it starts.
pub const SUPERVISOR_PID_VAR: &str = "REVERBERATOR_SUPERVISOR_PID";

/// In a watcher: when started by a supervisor, have the kernel send SIGTERM when it dies.
/// Returns false when the supervisor is already gone (the caller exits at once).
pub fn tie_to_supervisor() -> Result<bool> {
    let Some(pid) = std::env::var(SUPERVISOR_PID_VAR)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return Ok(true);
    };
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM).map_err(|e| {
        Error::Invalid(format!(
            "cannot tie to the supervisor (PR_SET_PDEATHSIG): {e}"
        ))
    })?;
    Ok(nix::unistd::getppid().as_raw() == pid)
}
