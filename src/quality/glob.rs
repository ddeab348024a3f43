//! The few globs a command step's `metric.file` needs: `*` and `?` within one name, `**` for
//! any folders, matched against paths relative to `{out}`.

use std::path::{Path, PathBuf};

/// Whether `path` (`/`-separated) matches `pattern`.
pub fn matches(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').collect();
    let s: Vec<&str> = path.split('/').collect();
    segments(&p, &s)
}

fn segments(p: &[&str], s: &[&str]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((&"**", rest)) => (0..=s.len()).any(|i| segments(rest, &s[i..])),
        Some((first, rest)) => {
            !s.is_empty() && name(first.as_bytes(), s[0].as_bytes()) && segments(rest, &s[1..])
        }
    }
}

fn name(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| name(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && name(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && name(rest, &s[1..]),
    }
}

/// Every file under `root` whose relative path matches, sorted (so the newest of
/// timestamped names comes last).
pub fn find(root: &Path, pattern: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(root) {
                let rel = rel.to_string_lossy().replace('\\', "/");
                if matches(pattern, &rel) {
                    out.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn stars_and_double_stars() {
        assert!(matches("**/results_*.json", "m__x/results_2026.json"));
        assert!(matches("**/results_*.json", "results_1.json"));
        assert!(matches("a/*.json", "a/b.json"));
        assert!(!matches("a/*.json", "a/c/b.json"));
        assert!(matches("r?.json", "r1.json"));
        assert!(!matches("*.json", "x.txt"));
    }
}
