//! What a run was measured on: CPUs, memory, kernel, the scratch directory's filesystem and
//! the peer tools' versions, for the JSON output and `docs/benchmarks.md`. Best effort:
//! anything unreadable is reported as `unknown`, never an error.

use std::path::Path;
use std::process::Command;

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_else(|| "unknown".into())
}

fn proc_field(file: &str, key: &str) -> String {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

pub fn describe(scratch: &Path) -> serde_json::Value {
    let fs = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(scratch)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    serde_json::json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": proc_field("/proc/cpuinfo", "model name"),
        "mem_total": proc_field("/proc/meminfo", "MemTotal"),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into()),
        "scratch_fs": fs,
        "cp": first_line("cp", &["--version"]),
        "rsync": first_line("rsync", &["--version"]),
        "inotifywait": first_line("inotifywait", &["--help"]),
    })
}
