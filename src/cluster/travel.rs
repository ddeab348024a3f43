//! Bundles that travel: a path or command line written relative to the plan's directory
//! (`{plan_dir}/...`), so the same plan run from two checkouts records the same command.
//! Pure functions of their inputs; nothing here touches the file system.

use std::path::{Component, Path, PathBuf};

/// The placeholder a plan-relative form starts with.
pub const PLAN_DIR: &str = "{plan_dir}";

/// `path` with `.` and `..` components resolved by their names alone (no symlinks followed):
/// `/a/./b/../c` is `/a/c`.
pub fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// An absolute path under `plan_dir` as `{plan_dir}/rest` (`{plan_dir}` for the directory
/// itself); any other string is returned as it is. Whole components only: with plan dir
/// `/w/plans`, `/w/plans2/x` is not under it.
pub fn relative_path(path: &str, plan_dir: &Path) -> String {
    if !path.starts_with('/') {
        return path.to_string();
    }
    let dir = lexical(plan_dir);
    match lexical(Path::new(path)).strip_prefix(&dir) {
        Ok(rest) if rest.as_os_str().is_empty() => PLAN_DIR.to_string(),
        Ok(rest) => match rest.to_str() {
            Some(rest) => format!("{PLAN_DIR}/{rest}"),
            None => path.to_string(),
        },
        Err(_) => path.to_string(),
    }
}

/// One argument in its plan-relative form: a whole absolute path, or the value of
/// `--flag=/abs/path` (or `key=/abs/path`).
pub fn relative_arg(arg: &str, plan_dir: &Path) -> String {
    if arg.starts_with('/') {
        return relative_path(arg, plan_dir);
    }
    if let Some((key, value)) = arg.split_once('=') {
        if value.starts_with('/') {
            return format!("{key}={}", relative_path(value, plan_dir));
        }
    }
    arg.to_string()
}

/// A command line in its plan-relative form, argument by argument.
pub fn relative_argv<S: AsRef<str>>(argv: &[S], plan_dir: &Path) -> Vec<String> {
    argv.iter()
        .map(|a| relative_arg(a.as_ref(), plan_dir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> &'static Path {
        Path::new("/home/a/checkout/plans")
    }

    #[test]
    fn a_path_under_the_plan_dir_becomes_relative() {
        assert_eq!(
            relative_path("/home/a/checkout/plans/models/tiny", dir()),
            "{plan_dir}/models/tiny"
        );
        assert_eq!(relative_path("/home/a/checkout/plans", dir()), "{plan_dir}");
        assert_eq!(
            relative_path("/home/a/checkout/plans/", dir()),
            "{plan_dir}"
        );
    }

    #[test]
    fn dot_components_are_resolved_before_comparing() {
        assert_eq!(
            relative_path("/home/a/checkout/plans/../plans/./m", dir()),
            "{plan_dir}/m"
        );
        assert_eq!(
            relative_path(
                "/home/a/checkout/plans/m",
                Path::new("/home/a/checkout/./x/../plans")
            ),
            "{plan_dir}/m"
        );
        // `..` that leaves the plan dir leaves the path absolute.
        assert_eq!(
            relative_path("/home/a/checkout/plans/../target/runner", dir()),
            "/home/a/checkout/plans/../target/runner"
        );
    }

    #[test]
    fn paths_outside_the_plan_dir_stay_absolute() {
        assert_eq!(relative_path("/usr/bin/python3", dir()), "/usr/bin/python3");
        // A sibling whose name starts with the plan dir's is not inside it.
        assert_eq!(
            relative_path("/home/a/checkout/plans2/m", dir()),
            "/home/a/checkout/plans2/m"
        );
        assert_eq!(relative_path("/home/a/checkout", dir()), "/home/a/checkout");
    }

    #[test]
    fn relative_and_non_path_args_are_left_alone() {
        assert_eq!(relative_arg("models/tiny", dir()), "models/tiny");
        assert_eq!(relative_arg("--port", dir()), "--port");
        assert_eq!(relative_arg("8000", dir()), "8000");
        assert_eq!(relative_arg("--dtype=bfloat16", dir()), "--dtype=bfloat16");
        assert_eq!(relative_arg("", dir()), "");
    }

    #[test]
    fn flag_equals_path_forms_are_rewritten_in_the_value() {
        assert_eq!(
            relative_arg("--model=/home/a/checkout/plans/m", dir()),
            "--model={plan_dir}/m"
        );
        assert_eq!(
            relative_arg("HF_HOME=/home/a/checkout/plans/.hf", dir()),
            "HF_HOME={plan_dir}/.hf"
        );
        assert_eq!(
            relative_arg("--download-dir=/scratch/hf", dir()),
            "--download-dir=/scratch/hf"
        );
    }

    #[test]
    fn a_command_line_from_two_checkouts_reads_the_same() {
        let one = [
            "/usr/bin/python3",
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            "/home/a/checkout/plans/models/tiny",
            "--chat-template=/home/a/checkout/plans/tpl.jinja",
            "--port",
            "8000",
        ];
        let two: Vec<String> = one
            .iter()
            .map(|a| a.replace("/home/a/checkout", "/scratch/b/other"))
            .collect();
        let a = relative_argv(&one, dir());
        let b = relative_argv(&two, Path::new("/scratch/b/other/plans"));
        assert_eq!(a, b);
        assert_eq!(a[4], "{plan_dir}/models/tiny");
        assert_eq!(a[5], "--chat-template={plan_dir}/tpl.jinja");
    }
}
