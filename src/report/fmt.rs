//! Formatting shared by every report view (console tables, byte counts, an engine's memory
//! figure): the bottom of `report/`, importing none of its siblings.

use crate::metrics::sampler::Resources;

/// Left-aligns the first column and right-aligns the rest.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let w = widths[i];
            if i == 0 {
                s.push_str(&format!("{c:<w$}"));
            } else {
                s.push_str(&format!("  {c:>w$}"));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// Formats a byte count as GiB or MiB.
pub fn bytes(b: u64) -> String {
    let gib = b as f64 / (1u64 << 30) as f64;
    if gib >= 1.0 {
        format!("{gib:.2} GiB")
    } else {
        format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

/// The memory figure reports give an engine (peak over a window). With NVML: the GPU memory of
/// the engine's own processes where NVML's process list attributes any to its process group,
/// else the whole GPU's "used" (containers often hide other PIDs). Without NVML: the engine
/// process group's RSS.
pub fn engine_memory(r: &Resources, gpu: bool) -> Option<u64> {
    if gpu {
        r.engine_gpu_mem_peak_bytes
            .filter(|&b| b > 0)
            .or(r.gpu_mem_used_peak_bytes)
    } else {
        r.rss_peak_bytes
    }
}

/// An `until_failure` outcome in one line: `passed up to 4, failed at 8 (cuda_out_of_memory:
/// engine `e` exited ...)`.
pub fn knee_text(r: &crate::bundle::format::UntilFailureRecord) -> String {
    let pass = match r.last_passing {
        Some(c) => format!("passed up to concurrency {c}"),
        None => "no level passed".to_string(),
    };
    match r.first_failing {
        Some(c) => {
            let why = match (r.failure_class, &r.reason) {
                (Some(k), Some(why)) => format!(" ({}: {why})", k.label()),
                (Some(k), None) => format!(" ({})", k.label()),
                (None, Some(why)) => format!(" ({why})"),
                (None, None) => String::new(),
            };
            format!("{pass}, failed at {c}{why}")
        }
        None if r.complete => format!(
            "{pass}: never failed up to max_concurrency {}",
            r.max_concurrency
        ),
        None => format!("{pass}; cut short before it failed"),
    }
}
