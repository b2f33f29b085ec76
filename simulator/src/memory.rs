//! The process's memory: transparent huge pages for large runs, and what Linux reports.
//!
//! A large run is bound by memory latency, and much of it is address translation: with 4 KiB
//! pages every node's state sits on pages of its own, and the TLB misses come on top of the cache
//! misses. glibc puts its heap on 2 MiB transparent huge pages only if `GLIBC_TUNABLES` says so
//! when the process starts, so a program that wants them runs itself again: [`rerun`].

use std::process::ExitCode;

/// Runs this program again in a child process with glibc's transparent huge pages asked for
/// (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`), same arguments, and returns the child's exit
/// status; `None` where that does not apply (not Linux with glibc, or `GLIBC_TUNABLES` already
/// set, even to nothing, which is left as it is) or the child could not be started.
///
/// With them, the `connect` scenario at 100,000 nodes ran about 12% more events per second.
///
/// The child's `argv[0]` is the binary's file name, not its path. glibc 2.36 (Debian 12's)
/// tells the kernel's `madvise` mode from the others by comparing the 23 bytes it read from
/// `/sys/kernel/mm/transparent_hugepage/enabled` with `strcmp`, without ending them with a zero:
/// the answer hangs on the stack byte after its buffer, left there by the dynamic loader. Started
/// under its absolute path, the child got no huge pages in about half of all runs (the byte moves
/// with address-space randomisation); under its bare name, it got them every time we tried. The
/// report's `anon_huge_bytes` ([`anon_huge_bytes`]) says whether a run had them.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn rerun() -> Option<ExitCode> {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    let name = exe.file_name()?.to_owned();
    let status = std::process::Command::new(&exe)
        .arg0(name)
        .args(std::env::args_os().skip(1))
        .env("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
        .status()
        .ok()?;
    // A child killed by a signal has no code; report a failure.
    Some(ExitCode::from(
        status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(1),
    ))
}

/// Runs this program again with huge pages asked for; not on this platform.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn rerun() -> Option<ExitCode> {
    None
}

/// How much of the process's anonymous memory sits on transparent huge pages now (Linux
/// `AnonHugePages`), 0 where unknown.
pub fn anon_huge_bytes() -> u64 {
    proc_kib("/proc/self/smaps_rollup", "AnonHugePages:")
}

/// The process's peak resident set (Linux `VmHWM`), 0 where unknown.
pub fn peak_rss_bytes() -> u64 {
    proc_kib("/proc/self/status", "VmHWM:")
}

/// The value of a `NAME:   123 kB` line of a `/proc` file, in bytes; 0 where unknown.
fn proc_kib(path: &str, name: &str) -> u64 {
    let Ok(text) = std::fs::read_to_string(path) else {
        return 0;
    };
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
