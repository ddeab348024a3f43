//! `{name}` placeholders in launch commands and environment values. `{{` and `}}` stand for
//! literal braces. Unknown names are errors, so a typo never reaches the engine's argv.

use std::collections::BTreeMap;

/// The hint shown with an unknown-placeholder error.
pub const HINT: &str =
    "known placeholders: {port}, {model}, {name}, {host}, {runner}, {plan_dir}, {gpus}, {gpu_count}; write {{ for a literal {";

/// The placeholders every engine has; a matrix key may not take one of these names.
pub const BUILTINS: &[&str] = &[
    "port",
    "model",
    "name",
    "host",
    "runner",
    "plan_dir",
    "gpus",
    "gpu_count",
];

/// The placeholders filled in at launch, once the port is picked and the devices placed; the
/// resolved plan keeps them as written.
pub const AT_LAUNCH: &[&str] = &["port", "gpus", "gpu_count"];

/// Replaces every `{key}` with its value. Returns the unknown key on failure.
pub fn expand(template: &str, vars: &BTreeMap<&str, String>) -> Result<String, String> {
    scan(template, false, |key| {
        vars.get(key)
            .cloned()
            .map(Some)
            .ok_or_else(|| key.to_string())
    })
}

/// Walks the `{name}` placeholders of `template`: `lookup` gives a name's text, `Ok(None)`
/// keeps `{name}` as written, `Err` stops the walk. Doubled braces become one brace, or stay
/// doubled with `keep_doubled` (for a pass that leaves them to a later one).
pub fn scan<E>(
    template: &str,
    keep_doubled: bool,
    mut lookup: impl FnMut(&str) -> Result<Option<String>, E>,
) -> Result<String, E> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..if keep_doubled { 2 } else { 1 }]);
            rest = &tail[2..];
        } else if let Some(stripped) = tail.strip_prefix('{') {
            match stripped.find('}') {
                Some(end) => {
                    match lookup(&stripped[..end])? {
                        Some(v) => out.push_str(&v),
                        None => out.push_str(&tail[..end + 2]),
                    }
                    rest = &stripped[end + 1..];
                }
                None => {
                    out.push_str(tail);
                    rest = "";
                }
            }
        } else {
            out.push('}');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<&'static str, String> {
        BTreeMap::from([("port", "8000".to_string()), ("model", "m".to_string())])
    }

    #[test]
    fn expands_known_and_refuses_unknown() {
        assert_eq!(
            expand("--port={port} {model}", &vars()).as_deref(),
            Ok("--port=8000 m")
        );
        assert_eq!(expand("{nope}", &vars()), Err("nope".to_string()));
    }

    #[test]
    fn doubled_braces_are_literal() {
        assert_eq!(
            expand("{{\"a\": {port}}}", &vars()).as_deref(),
            Ok("{\"a\": 8000}")
        );
    }
}
