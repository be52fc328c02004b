//! Resource use of server processes on this machine, from /proc: CPU time, resident memory and
//! bytes written to storage over a run.
//!
//! CPU time is the process's own user + system time, which covers all of its threads. For servers
//! children are not added: both Chronicle and `temporal server start-dev` are single processes.
//! The Python SDK workers of the end-to-end mode are sampled with their children
//! ([`ProcessSampler::start_with_children`]), so nothing they spawn escapes the count.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::BenchError;

/// /proc reports times in USER_HZ ticks, which the kernel ABI fixes at 100 per second.
const TICKS_PER_SECOND: f64 = 100.0;
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// One process's use over a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessReport {
    pub pid: u32,
    /// The process's command name (`comm`).
    pub name: String,
    pub cpu_seconds: f64,
    /// CPU per verified workflow; set by the report.
    pub cpu_ms_per_workflow: Option<f64>,
    /// Largest resident set seen while sampling during the run.
    pub peak_rss_mb: f64,
    /// The kernel's high-water mark of the resident set since the process started.
    pub vm_hwm_mb: f64,
    /// RSS at the end of the run.
    pub final_rss_mb: f64,
    /// Bytes the process caused to be written to storage during the run (`write_bytes`);
    /// `None` when /proc/PID/io is not readable.
    pub bytes_written: Option<u64>,
}

/// CPU ticks and written bytes at one moment.
#[derive(Clone, Copy, Debug)]
struct Counters {
    cpu_ticks: u64,
    write_bytes: Option<u64>,
}

fn proc_path(pid: u32, file: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{file}"))
}

fn read_counters(pid: u32, with_children: bool) -> std::io::Result<Counters> {
    let cpu_ticks = if with_children {
        tree_cpu_ticks(pid)?
    } else {
        parse_cpu_ticks(&read_stat(pid)?).ok_or_else(bad_stat)?
    };
    let write_bytes = std::fs::read_to_string(proc_path(pid, "io"))
        .ok()
        .and_then(|io| status_field(&io, "write_bytes:"));
    Ok(Counters {
        cpu_ticks,
        write_bytes,
    })
}

fn read_stat(pid: u32) -> std::io::Result<String> {
    std::fs::read_to_string(proc_path(pid, "stat"))
}

fn bad_stat() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "unexpected /proc/PID/stat layout",
    )
}

/// CPU ticks of `pid` and all its descendants: its own utime + stime, the cutime + cstime of the
/// children it has reaped, and, recursively, the same for the children still alive. A child that
/// exits between two readings moves from the live sum into its parent's cutime/cstime, so the
/// difference of two readings stays right.
fn tree_cpu_ticks(pid: u32) -> std::io::Result<u64> {
    let stat = read_stat(pid)?;
    let mut ticks = parse_cpu_ticks(&stat).ok_or_else(bad_stat)?
        + parse_reaped_children_ticks(&stat).ok_or_else(bad_stat)?;
    for child in live_children(pid) {
        // A child may exit while it is being read; it is then counted in our cutime next time.
        ticks += tree_cpu_ticks(child).unwrap_or(0);
    }
    Ok(ticks)
}

/// Children of every thread of `pid` (/proc/PID/task/TID/children).
fn live_children(pid: u32) -> Vec<u32> {
    let Ok(threads) = std::fs::read_dir(proc_path(pid, "task")) else {
        return Vec::new();
    };
    threads
        .flatten()
        .filter_map(|thread| std::fs::read_to_string(thread.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// utime + stime from a /proc/PID/stat line. The command name (field 2) may contain spaces and
/// parentheses, so fields are counted after its closing parenthesis.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state is field 3; utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// cutime + cstime (fields 16 and 17: children waited for) from a /proc/PID/stat line.
fn parse_reaped_children_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // cutime and cstime are signed in the kernel ABI; they are never negative in practice.
    let cutime: i64 = fields.get(13)?.parse().ok()?;
    let cstime: i64 = fields.get(14)?.parse().ok()?;
    Some((cutime + cstime).max(0) as u64)
}

/// A numeric field of /proc/PID/status or /proc/PID/io (`VmRSS:   1234 kB` -> 1234).
fn status_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
}

fn memory_kb(pid: u32) -> (Option<u64>, Option<u64>) {
    match std::fs::read_to_string(proc_path(pid, "status")) {
        Ok(status) => (
            status_field(&status, "VmRSS:"),
            status_field(&status, "VmHWM:"),
        ),
        Err(_) => (None, None),
    }
}

/// Samples one process from [`ProcessSampler::start`] until [`ProcessSampler::finish`].
pub struct ProcessSampler {
    pid: u32,
    /// CPU of the whole process tree (see [`tree_cpu_ticks`]).
    with_children: bool,
    name: String,
    at_start: Counters,
    peak_rss_kb: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ProcessSampler {
    /// Samples one process (CPU of all its threads).
    pub fn start(pid: u32) -> Result<Self, BenchError> {
        Self::start_sampling(pid, false)
    }

    /// Samples a process whose CPU counts with that of its children (reaped or alive).
    pub fn start_with_children(pid: u32) -> Result<Self, BenchError> {
        Self::start_sampling(pid, true)
    }

    fn start_sampling(pid: u32, with_children: bool) -> Result<Self, BenchError> {
        let at_start = read_counters(pid, with_children)
            .map_err(|source| BenchError::Process { pid, source })?;
        let name = std::fs::read_to_string(proc_path(pid, "comm"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let peak_rss_kb = Arc::new(AtomicU64::new(memory_kb(pid).0.unwrap_or(0)));
        let (stop, mut stopped) = watch::channel(false);
        let peak = peak_rss_kb.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tokio::select! {
                    _ = stopped.changed() => return,
                    _ = ticker.tick() => {
                        if let (Some(rss), _) = memory_kb(pid) {
                            peak.fetch_max(rss, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
        Ok(Self {
            pid,
            with_children,
            name,
            at_start,
            peak_rss_kb,
            stop,
            task,
        })
    }

    pub async fn finish(self) -> ProcessReport {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let (rss, hwm) = memory_kb(self.pid);
        if let Some(rss) = rss {
            self.peak_rss_kb.fetch_max(rss, Ordering::Relaxed);
        }
        let mb = |kb: u64| kb as f64 / 1024.0;
        // A process that exited during the run reports what was seen until then.
        let at_end = read_counters(self.pid, self.with_children).unwrap_or(self.at_start);
        ProcessReport {
            pid: self.pid,
            name: self.name,
            cpu_seconds: at_end.cpu_ticks.saturating_sub(self.at_start.cpu_ticks) as f64
                / TICKS_PER_SECOND,
            cpu_ms_per_workflow: None,
            peak_rss_mb: mb(self.peak_rss_kb.load(Ordering::Relaxed)),
            vm_hwm_mb: mb(hwm.unwrap_or(0)),
            final_rss_mb: mb(rss.unwrap_or(0)),
            bytes_written: match (self.at_start.write_bytes, at_end.write_bytes) {
                (Some(before), Some(after)) => Some(after.saturating_sub(before)),
                _ => None,
            },
        }
    }
}

/// CPU seconds used so far by `pid` and its descendants (for one-off readings such as "has the
/// worker gone idle").
pub fn tree_cpu_seconds(pid: u32) -> Option<f64> {
    tree_cpu_ticks(pid)
        .ok()
        .map(|ticks| ticks as f64 / TICKS_PER_SECOND)
}

/// Current resident set of `pid` in MiB (for one-off readings such as RSS vs open workflows).
pub fn current_rss_mb(pid: u32) -> Option<f64> {
    memory_kb(pid).0.map(|kb| kb as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 3 4 20 0 9 0 \
                    100 1000 200 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
    }

    #[test]
    fn reaped_children_ticks_are_fields_16_and_17() {
        let stat = "4242 (py) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 30 4 20 0 9 0 \
                    100 1000 200 18446744073709551615";
        assert_eq!(parse_reaped_children_ticks(stat), Some(34));
    }

    #[test]
    fn a_process_tree_counts_live_and_reaped_children() {
        let pid = std::process::id();
        let own = |stat: &str| parse_cpu_ticks(stat).unwrap();
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("sh runs");
        // The spinning child shows up in the tree's ticks while it lives...
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let stat = read_stat(pid).unwrap();
            let tree = tree_cpu_ticks(pid).unwrap();
            if tree >= own(&stat) + parse_reaped_children_ticks(&stat).unwrap() + 10 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the child's CPU never showed"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // ...and in our cutime + cstime once it is reaped.
        assert!(parse_reaped_children_ticks(&read_stat(pid).unwrap()).unwrap() >= 10);
        assert!(tree_cpu_seconds(pid).unwrap() >= 0.1);
    }

    #[test]
    fn status_fields_parse_numbers() {
        let status = "Name:\tchronicle\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n";
        assert_eq!(status_field(status, "VmRSS:"), Some(102_400));
        assert_eq!(status_field(status, "VmHWM:"), Some(204_800));
        assert_eq!(status_field(status, "VmSwap:"), None);
    }

    #[tokio::test]
    async fn sampling_this_process_sees_cpu_and_memory() {
        let pid = std::process::id();
        let sampler = ProcessSampler::start(pid).expect("own /proc entry");
        // Burn CPU until the kernel has charged 20 ticks (0.2 s) to this process; on a busy
        // machine that takes longer than 0.2 s of wall time, so count ticks, not time.
        let before = read_counters(pid, false).unwrap().cpu_ticks;
        let mut x = 0u64;
        while read_counters(pid, false).unwrap().cpu_ticks < before + 20 {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
        }
        std::hint::black_box(x);
        let report = sampler.finish().await;
        assert!(report.cpu_seconds >= 0.2, "{report:?}");
        assert!(report.peak_rss_mb > 0.0 && report.vm_hwm_mb >= report.final_rss_mb);
        assert!(ProcessSampler::start(u32::MAX).is_err());
    }
}
