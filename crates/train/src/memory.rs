//! Resident memory of this process, read from `/proc/self/status`, and the memory the system
//! can still hand out, read from `/proc/meminfo` (Linux only).

/// Peak resident set size of this process in bytes (`VmHWM`); `None` off Linux or if unreadable.
pub fn peak_rss_bytes() -> Option<u64> {
    status_kib("VmHWM:").map(|kib| kib * 1024)
}

/// Current resident set size of this process in bytes (`VmRSS`); `None` off Linux or if unreadable.
pub fn current_rss_bytes() -> Option<u64> {
    status_kib("VmRSS:").map(|kib| kib * 1024)
}

/// Memory the system can still give this process without running out, in bytes: available
/// RAM plus free swap (`MemAvailable + SwapFree`); `None` off Linux or if unreadable.
pub fn available_bytes() -> Option<u64> {
    let meminfo = read_meminfo()?;
    let ram = parse_kib(&meminfo, "MemAvailable:")?;
    let swap = parse_kib(&meminfo, "SwapFree:").unwrap_or(0);
    Some((ram + swap) * 1024)
}

/// The text of `/proc/meminfo`.
#[cfg(target_os = "linux")]
fn read_meminfo() -> Option<String> {
    std::fs::read_to_string("/proc/meminfo").ok()
}

/// Without `/proc`, available memory is unknown.
#[cfg(not(target_os = "linux"))]
fn read_meminfo() -> Option<String> {
    None
}

/// Bytes as MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The value in kB of the `/proc/self/status` line starting with `key`.
#[cfg(target_os = "linux")]
fn status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_kib(&status, key)
}

/// Without `/proc`, memory usage is unknown.
#[cfg(not(target_os = "linux"))]
fn status_kib(_key: &str) -> Option<u64> {
    None
}

/// Parses a `Key:   1234 kB` line of a `/proc/<pid>/status` text.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_kib(status: &str, key: &str) -> Option<u64> {
    let rest = status.lines().find_map(|line| line.strip_prefix(key))?;
    let mut parts = rest.split_whitespace();
    let value = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t    12 kB\n";
        assert_eq!(parse_kib(status, "VmHWM:"), Some(2048));
        assert_eq!(parse_kib(status, "VmRSS:"), Some(12));
        assert_eq!(parse_kib(status, "VmSwap:"), None);
        assert_eq!(parse_kib("VmRSS: lots kB\n", "VmRSS:"), None);
        let meminfo = "MemTotal:  100 kB\nMemAvailable:    60 kB\nSwapFree:   5 kB\n";
        assert_eq!(parse_kib(meminfo, "MemAvailable:"), Some(60));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn available_memory_is_positive_and_below_total_plus_swap() {
        let meminfo = std::fs::read_to_string("/proc/meminfo").expect("readable on Linux");
        let total = parse_kib(&meminfo, "MemTotal:").expect("MemTotal") * 1024;
        let swap = parse_kib(&meminfo, "SwapTotal:").unwrap_or(0) * 1024;
        let available = available_bytes().expect("MemAvailable on Linux");
        assert!(
            available > 0 && available <= total + swap,
            "{available} of {total} + {swap}"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn touching_200_mb_raises_peak() {
        const MB: u64 = 1024 * 1024;
        const SIZE: usize = 200 * 1024 * 1024;
        let mut buffer = vec![0u8; SIZE];
        for i in (0..SIZE).step_by(4096) {
            buffer[i] = 1;
        }
        let buffer = std::hint::black_box(buffer);
        // Current first: the high-water mark read afterwards is at least every earlier RSS.
        let current = current_rss_bytes().expect("VmRSS readable on Linux");
        let peak = peak_rss_bytes().expect("VmHWM readable on Linux");
        assert!(peak >= current, "peak {peak} below current {current}");
        // The touched buffer is resident, whatever other tests in this process allocate or
        // free meanwhile (a "before" reading would race with them).
        assert!(
            current >= 190 * MB,
            "current RSS {} MiB does not hold the 200 MiB buffer",
            current / MB
        );
        assert_eq!(
            buffer
                .iter()
                .step_by(4096)
                .map(|&b| b as usize)
                .sum::<usize>(),
            SIZE / 4096
        );
    }
}
