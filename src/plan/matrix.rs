//! `[engine.matrix]` and `[workload.matrix]`: one table written, one engine or workload per
//! combination of the listed values. Expansion works on the raw plan (spans kept, so every
//! later error still points into the file); resolution then sees ordinary tables.

use std::fmt;
use std::ops::Range;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::placeholder;
use super::raw::{RawCommand, RawEngine, RawWorkload};

/// One `exclude` entry: key and value pairs, as written.
pub type RawExclude = Vec<(Spanned<String>, Spanned<toml::Value>)>;

/// One matrix key and its values, as written.
pub type RawKey = (Spanned<String>, Spanned<Vec<Spanned<toml::Value>>>);

/// A matrix table as written: its keys in file order, each with its values in list order,
/// and the `exclude` entries.
#[derive(Debug, Clone, Default)]
pub struct RawMatrix {
    pub keys: Vec<RawKey>,
    pub exclude: Vec<Spanned<RawExclude>>,
}

impl<'de> Deserialize<'de> for RawMatrix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawMatrix;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table of keys, each a list of values, and an optional `exclude`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawMatrix, A::Error> {
                let mut m = RawMatrix::default();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    if key.get_ref() == "exclude" {
                        m.exclude = map
                            .next_value::<Vec<Spanned<Ordered>>>()?
                            .into_iter()
                            .map(|o| {
                                let span = o.span();
                                Spanned::new(span, o.into_inner().0)
                            })
                            .collect();
                    } else {
                        m.keys.push((key, map.next_value()?));
                    }
                }
                Ok(m)
            }
        }
        d.deserialize_map(V)
    }
}

/// A table whose keys keep their file order and spans.
struct Ordered(RawExclude);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table of matrix keys and values, e.g. { quant = \"awq\" }")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    out.push((key, map.next_value()?));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The matrix values of one expanded engine or workload, in the order of the matrix keys.
/// Recorded in the manifest and the resolved plan as a JSON object (`{"batch": 8}`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MatrixValues(pub Vec<(String, serde_json::Value)>);

impl MatrixValues {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of `key` as it appears in names and commands.
    pub fn get(&self, key: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| render_json(v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }
}

impl Serialize for MatrixValues {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for MatrixValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MatrixValues;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of matrix keys and values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MatrixValues, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
                    out.push((k, v));
                }
                Ok(MatrixValues(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A value as TOML would print it, strings without quotes: `fp8`, `64`, `0.5`, `true`.
pub fn render(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn render_json(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        // Keep a float a float (`1.0`), as TOML prints it.
        serde_json::Value::Number(n) if n.is_f64() => {
            toml::Value::Float(n.as_f64().unwrap_or(f64::NAN)).to_string()
        }
        other => other.to_string(),
    }
}

/// A plan error found while expanding a matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixError {
    pub span: Range<usize>,
    pub message: String,
    pub hint: String,
}

fn err(span: Range<usize>, message: String, hint: impl Into<String>) -> MatrixError {
    MatrixError {
        span,
        message,
        hint: hint.into(),
    }
}

/// One combination: each key with its value, in key order.
type Combination = Vec<(String, Spanned<toml::Value>)>;

/// Every combination of the matrix, keys as written, the last key varying fastest, less the
/// excluded ones. `reserved` names keys the matrix may not use (built-in placeholders).
fn combinations(
    m: &RawMatrix,
    what: &str,
    reserved: &[&str],
    errors: &mut Vec<MatrixError>,
) -> Vec<Combination> {
    let before = errors.len();
    let mut seen: Vec<&str> = Vec::new();
    for (k, values) in &m.keys {
        let key = k.get_ref().as_str();
        if reserved.contains(&key) {
            errors.push(err(
                k.span(),
                format!("matrix key `{key}` shadows the built-in placeholder `{{{key}}}`"),
                format!(
                    "rename the key; the built-in placeholders are {}",
                    reserved
                        .iter()
                        .map(|r| format!("{{{r}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if seen.contains(&key) {
            errors.push(err(
                k.span(),
                format!("matrix key `{key}` is given twice"),
                "list all its values in one array",
            ));
        }
        seen.push(key);
        if values.get_ref().is_empty() {
            errors.push(err(
                values.span(),
                format!("matrix key `{key}` has no values"),
                format!("list at least one value, or remove the key from the {what} matrix"),
            ));
        }
        for v in values.get_ref() {
            if !matches!(
                v.get_ref(),
                toml::Value::String(_)
                    | toml::Value::Integer(_)
                    | toml::Value::Float(_)
                    | toml::Value::Boolean(_)
            ) {
                errors.push(err(
                    v.span(),
                    format!(
                        "matrix key `{key}` has a value of type {}",
                        v.get_ref().type_str()
                    ),
                    "matrix values are strings, integers, floats or booleans",
                ));
            }
        }
    }
    for ex in &m.exclude {
        if ex.get_ref().is_empty() {
            errors.push(err(
                ex.span(),
                "an `exclude` entry is empty, so it would exclude every combination".into(),
                "name a matrix key and value in it, e.g. { quant = \"awq\" }",
            ));
        }
        for (k, v) in ex.get_ref() {
            match m.keys.iter().find(|(mk, _)| mk.get_ref() == k.get_ref()) {
                None => errors.push(err(
                    k.span(),
                    format!(
                        "`exclude` names `{}`, which is not a matrix key",
                        k.get_ref()
                    ),
                    format!("the matrix keys are {}", key_list(m)),
                )),
                Some((_, values)) => {
                    if !values.get_ref().iter().any(|x| x.get_ref() == v.get_ref()) {
                        errors.push(err(
                            v.span(),
                            format!(
                                "`exclude` gives `{}` the value {}, which its list does not have",
                                k.get_ref(),
                                v.get_ref()
                            ),
                            format!(
                                "`{}` takes {}",
                                k.get_ref(),
                                values
                                    .get_ref()
                                    .iter()
                                    .map(|x| x.get_ref().to_string())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ))
                    }
                }
            }
        }
    }
    if errors.len() > before {
        return Vec::new();
    }
    let mut combos: Vec<Combination> = vec![Vec::new()];
    for (k, values) in &m.keys {
        let mut next = Vec::with_capacity(combos.len() * values.get_ref().len());
        for c in &combos {
            for v in values.get_ref() {
                let mut c = c.clone();
                c.push((k.get_ref().clone(), v.clone()));
                next.push(c);
            }
        }
        combos = next;
    }
    combos.retain(|c| {
        !m.exclude.iter().any(|ex| {
            ex.get_ref().iter().all(|(k, v)| {
                c.iter()
                    .any(|(ck, cv)| ck == k.get_ref() && cv.get_ref() == v.get_ref())
            })
        })
    });
    combos
}

fn key_list(m: &RawMatrix) -> String {
    m.keys
        .iter()
        .map(|(k, _)| format!("`{}`", k.get_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn values_of(c: &Combination) -> MatrixValues {
    MatrixValues(
        c.iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    serde_json::to_value(v.get_ref()).unwrap_or(serde_json::Value::Null),
                )
            })
            .collect(),
    )
}

/// The placeholder names a template uses (`{{` and `}}` are literal braces, not placeholders).
pub fn placeholders(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            rest = &tail[2..];
        } else if let Some(stripped) = tail.strip_prefix('{') {
            match stripped.find('}') {
                Some(end) => {
                    out.push(&stripped[..end]);
                    rest = &stripped[end + 1..];
                }
                None => rest = "",
            }
        } else {
            rest = &tail[1..];
        }
    }
    out
}

/// Replaces the matrix keys in `template` and leaves everything else as written (built-in
/// placeholders, unknown ones, doubled braces) for resolution. With `quote`, each value is
/// quoted for a shell-like split, so a value with a space stays one argument.
fn substitute(template: &str, vars: &[(String, String)], quote: bool) -> String {
    let found = super::placeholder::scan(template, true, |key| {
        Ok::<_, std::convert::Infallible>(vars.iter().find(|(k, _)| k == key).map(|(_, v)| {
            if quote {
                shlex::try_quote(v).map_or_else(|_| v.clone(), |q| q.into_owned())
            } else {
                v.clone()
            }
        }))
    });
    match found {
        Ok(s) => s,
        Err(never) => match never {},
    }
}

fn sub_spanned(s: &Spanned<String>, vars: &[(String, String)]) -> Spanned<String> {
    Spanned::new(s.span(), substitute(s.get_ref(), vars, false))
}

fn sub_command(c: &Spanned<RawCommand>, vars: &[(String, String)]) -> Spanned<RawCommand> {
    let cmd = match c.get_ref() {
        RawCommand::Line(l) => RawCommand::Line(substitute(l, vars, true)),
        RawCommand::Argv(a) => {
            RawCommand::Argv(a.iter().map(|w| substitute(w, vars, false)).collect())
        }
    };
    Spanned::new(c.span(), cmd)
}

fn command_text(c: &RawCommand) -> Vec<&str> {
    match c {
        RawCommand::Line(l) => vec![l.as_str()],
        RawCommand::Argv(a) => a.iter().map(String::as_str).collect(),
    }
}

fn sub_toml(v: &toml::Value, vars: &[(String, String)]) -> toml::Value {
    match v {
        toml::Value::String(s) => toml::Value::String(substitute(s, vars, false)),
        toml::Value::Array(a) => toml::Value::Array(a.iter().map(|x| sub_toml(x, vars)).collect()),
        toml::Value::Table(t) => toml::Value::Table(
            t.iter()
                .map(|(k, x)| (k.clone(), sub_toml(x, vars)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn toml_strings<'a>(v: &'a toml::Value, out: &mut Vec<&'a str>) {
    match v {
        toml::Value::String(s) => out.push(s),
        toml::Value::Array(a) => a.iter().for_each(|x| toml_strings(x, out)),
        toml::Value::Table(t) => t.values().for_each(|x| toml_strings(x, out)),
        _ => {}
    }
}

/// Checks that every matrix key appears as a placeholder in the name, and that the expanded
/// names are distinct.
fn check_names(
    m: &RawMatrix,
    name: &Spanned<String>,
    what: &str,
    combos: &[Combination],
    errors: &mut Vec<MatrixError>,
) -> bool {
    let in_name = placeholders(name.get_ref());
    let mut ok = true;
    for (k, _) in &m.keys {
        if !in_name.contains(&k.get_ref().as_str()) {
            ok = false;
            errors.push(err(
                k.span(),
                format!(
                    "matrix key `{}` is not in the {what}'s `name`",
                    k.get_ref()
                ),
                format!(
                    "add `{{{}}}` to the name (e.g. \"{}-{{{}}}\"), so each expanded {what} has its own name saying what varied",
                    k.get_ref(),
                    name.get_ref(),
                    k.get_ref()
                ),
            ));
        }
    }
    if !ok {
        return false;
    }
    let mut names: Vec<String> = Vec::new();
    for c in combos {
        let n = substitute(name.get_ref(), &rendered(c), false);
        if names.contains(&n) {
            errors.push(err(
                name.span(),
                format!("two combinations of the {what} matrix are both named `{n}`"),
                "list each value once, and keep values distinct once printed (1 and \"1\" print alike)",
            ));
            return false;
        }
        names.push(n);
    }
    true
}

fn rendered(c: &Combination) -> Vec<(String, String)> {
    c.iter()
        .map(|(k, v)| (k.clone(), render(v.get_ref())))
        .collect()
}

/// One engine table per combination of its `[engine.matrix]` (the table itself when it has
/// none), with the matrix values each was made from.
pub fn expand_engine(e: &RawEngine) -> (Vec<(RawEngine, MatrixValues)>, Vec<MatrixError>) {
    let Some(m) = &e.matrix else {
        return (vec![(e.clone(), MatrixValues::default())], Vec::new());
    };
    let m = m.get_ref();
    let mut errors = Vec::new();
    let combos = combinations(m, "engine", placeholder::BUILTINS, &mut errors);
    if !errors.is_empty() {
        return (Vec::new(), errors);
    }
    // Where a key can vary the engine; a key only in the name would vary nothing.
    let mut used: Vec<&str> = vec![e.model.get_ref().as_str()];
    for c in [&e.launch, &e.version_command].into_iter().flatten() {
        used.extend(command_text(c.get_ref()));
    }
    used.extend(e.env.values().map(String::as_str));
    if let Some(b) = &e.extra_body {
        b.get_ref()
            .values()
            .for_each(|v| toml_strings(v, &mut used));
    }
    for (k, _) in &m.keys {
        let key = k.get_ref().as_str();
        if !used.iter().any(|t| placeholders(t).contains(&key)) {
            errors.push(err(
                k.span(),
                format!("matrix key `{key}` is used only in the engine's `name`, so it varies nothing"),
                format!("pass `{{{key}}}` to the engine: in `launch`, an `env` value, `extra_body`, `model` or `version_command`; or remove the key"),
            ));
        }
    }
    if !check_names(m, &e.name, "engine", &combos, &mut errors) || !errors.is_empty() {
        return (Vec::new(), errors);
    }
    let out = combos
        .iter()
        .map(|c| {
            let vars = rendered(c);
            let mut x = e.clone();
            x.matrix = None;
            x.name = sub_spanned(&e.name, &vars);
            x.model = sub_spanned(&e.model, &vars);
            x.launch = e.launch.as_ref().map(|l| sub_command(l, &vars));
            x.version_command = e.version_command.as_ref().map(|l| sub_command(l, &vars));
            x.env = e
                .env
                .iter()
                .map(|(k, v)| (k.clone(), substitute(v, &vars, false)))
                .collect();
            x.extra_body = e.extra_body.as_ref().map(|b| {
                Spanned::new(
                    b.span(),
                    b.get_ref()
                        .iter()
                        .map(|(k, v)| (k.clone(), sub_toml(v, &vars)))
                        .collect(),
                )
            });
            (x, values_of(c))
        })
        .collect();
    (out, errors)
}

/// The workload keys a `[workload.matrix]` may vary: the workload's own, its synthetic
/// lengths (`[workload.synthetic]`) and its dataset's `sample` (`[workload.dataset]`).
pub const WORKLOAD_KEYS: &[&str] = &[
    "max_tokens",
    "min_tokens",
    "temperature",
    "input_tokens",
    "output_tokens",
    "prefix_tokens",
    "prefix_groups",
    "count",
    "sample",
];

/// Where a workload matrix key lives, and whether the table already sets it (`None`: the
/// table it belongs to is missing).
fn workload_key_state(w: &RawWorkload, key: &str) -> Option<bool> {
    let syn = w.synthetic.as_ref().map(|s| s.get_ref());
    match key {
        "max_tokens" => Some(w.max_tokens.is_some()),
        "min_tokens" => Some(w.min_tokens.is_some()),
        "temperature" => Some(w.temperature.is_some()),
        "input_tokens" => syn.map(|s| s.input_tokens.is_some()),
        "output_tokens" => syn.map(|s| s.output_tokens.is_some()),
        "prefix_tokens" => syn.map(|s| s.prefix_tokens.is_some()),
        "prefix_groups" => syn.map(|s| s.prefix_groups.is_some()),
        "count" => syn.map(|s| s.count.is_some()),
        "sample" => w.dataset.as_ref().map(|d| d.get_ref().sample.is_some()),
        _ => None,
    }
}

/// Sets one matrix value on a copy of the workload (types checked before).
fn set_workload_key(x: &mut RawWorkload, key: &str, v: &Spanned<toml::Value>) {
    let span = v.span();
    let int = match v.get_ref() {
        toml::Value::Integer(n) => Some(Spanned::new(span.clone(), *n)),
        _ => None,
    };
    let syn = x.synthetic.as_mut().map(|s| s.get_mut());
    match (key, syn) {
        ("max_tokens", _) => x.max_tokens = int,
        ("min_tokens", _) => x.min_tokens = int,
        ("temperature", _) => {
            x.temperature = match v.get_ref() {
                toml::Value::Float(f) => Some(Spanned::new(span, *f)),
                toml::Value::Integer(n) => Some(Spanned::new(span, *n as f64)),
                _ => None,
            }
        }
        ("input_tokens", Some(s)) => s.input_tokens = int,
        ("output_tokens", Some(s)) => s.output_tokens = int,
        ("prefix_tokens", Some(s)) => s.prefix_tokens = int,
        ("prefix_groups", Some(s)) => s.prefix_groups = int,
        ("count", Some(s)) => s.count = int,
        ("sample", _) => {
            if let Some(d) = x.dataset.as_mut() {
                d.get_mut().sample = int;
            }
        }
        // Checked before: no other key reaches here.
        _ => {}
    }
}

/// One workload table per combination of its `[workload.matrix]` (the table itself when it
/// has none), with the matrix values each was made from. Each value keeps its span, so a value
/// out of range is reported where it is listed.
pub fn expand_workload(w: &RawWorkload) -> (Vec<(RawWorkload, MatrixValues)>, Vec<MatrixError>) {
    let Some(m) = &w.matrix else {
        return (vec![(w.clone(), MatrixValues::default())], Vec::new());
    };
    let m = m.get_ref();
    let mut errors = Vec::new();
    let combos = combinations(m, "workload", &[], &mut errors);
    for (k, values) in &m.keys {
        let key = k.get_ref().as_str();
        if !WORKLOAD_KEYS.contains(&key) {
            errors.push(err(
                k.span(),
                format!("`{key}` is not a workload key a matrix can vary"),
                format!("a [workload.matrix] varies {}", WORKLOAD_KEYS.join(", ")),
            ));
            continue;
        }
        let table = if key == "sample" {
            "[workload.dataset]"
        } else {
            "[workload.synthetic]"
        };
        match workload_key_state(w, key) {
            None => {
                errors.push(err(
                    k.span(),
                    format!("matrix key `{key}` belongs to {table}, which this workload has not"),
                    format!(
                        "add a {table} table to the workload, or remove `{key}` from its matrix"
                    ),
                ));
                continue;
            }
            Some(true) => {
                let place = if matches!(key, "max_tokens" | "min_tokens" | "temperature") {
                    "the workload".to_string()
                } else {
                    table.to_string()
                };
                errors.push(err(
                    k.span(),
                    format!("`{key}` is set both in {place} and in its matrix"),
                    format!("remove `{key} = ...` from {place}, or the key from its matrix"),
                ));
            }
            Some(false) => {}
        }
        for v in values.get_ref() {
            let fits = matches!(
                (key, v.get_ref()),
                ("temperature", toml::Value::Float(_)) | (_, toml::Value::Integer(_))
            );
            if !fits {
                errors.push(err(
                    v.span(),
                    format!(
                        "`{key}` takes {}, not {}",
                        if key == "temperature" {
                            "a number"
                        } else {
                            "an integer"
                        },
                        v.get_ref()
                    ),
                    "see docs/plan.md for the type each key takes",
                ));
            }
        }
    }
    if !errors.is_empty() || !check_names(m, &w.name, "workload", &combos, &mut errors) {
        return (Vec::new(), errors);
    }
    let out = combos
        .iter()
        .map(|c| {
            let mut x = w.clone();
            x.matrix = None;
            x.name = sub_spanned(&w.name, &rendered(c));
            for (k, v) in c {
                set_workload_key(&mut x, k, v);
            }
            (x, values_of(c))
        })
        .collect();
    (out, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(src: &str) -> RawEngine {
        match toml::from_str(src) {
            Ok(e) => e,
            Err(e) => panic!("bad test engine: {e}"),
        }
    }

    const SWEEP: &str = r#"
name = "vllm-{quant}-seqs{max_num_seqs}"
launch = "vllm serve {model} --port {port} --quantization {quant} --max-num-seqs {max_num_seqs}"
model = "org/llama-{quant}"
env = { TAG = "{quant}-{{x}}" }
extra_body = { note = "{quant}", n = 1 }
[matrix]
quant = ["fp8", "awq"]
max_num_seqs = [64, 256]
exclude = [{ quant = "awq", max_num_seqs = 256 }]
"#;

    #[test]
    fn expands_in_key_order_values_as_listed_less_excluded() {
        let (out, errors) = expand_engine(&engine(SWEEP));
        assert_eq!(errors, Vec::new());
        let names: Vec<&str> = out.iter().map(|(e, _)| e.name.get_ref().as_str()).collect();
        assert_eq!(
            names,
            ["vllm-fp8-seqs64", "vllm-fp8-seqs256", "vllm-awq-seqs64"]
        );
        let (e, values) = &out[2];
        assert_eq!(
            serde_json::to_string(values).ok().as_deref(),
            Some(r#"{"quant":"awq","max_num_seqs":64}"#)
        );
        assert_eq!(e.model.get_ref(), "org/llama-awq");
        // Built-in placeholders and doubled braces are left for resolution.
        assert_eq!(
            e.launch.as_ref().map(|l| l.get_ref().clone()),
            Some(RawCommand::Line(
                "vllm serve {model} --port {port} --quantization awq --max-num-seqs 64".into()
            ))
        );
        assert_eq!(e.env.get("TAG").map(String::as_str), Some("awq-{{x}}"));
        let body = e.extra_body.as_ref().map(|b| b.get_ref().clone());
        assert_eq!(
            body.and_then(|b| b.get("note").cloned()),
            Some(toml::Value::String("awq".into()))
        );
        assert!(e.matrix.is_none());
    }

    #[test]
    fn values_print_as_toml_does_and_a_spaced_value_stays_one_argument() {
        let src = r#"
name = "e-{f}-{b}"
launch = "serve --f {f} --b {b} --s {s}"
model = "m"
[matrix]
f = [0.5, 1.0]
b = [true]
s = ["two words"]
"#;
        let src = src.replace("name = \"e-{f}-{b}\"", "name = \"e-{f}-{b}-{s}\"");
        let (out, errors) = expand_engine(&engine(&src));
        assert_eq!(errors, Vec::new());
        let launches: Vec<RawCommand> = out
            .iter()
            .filter_map(|(e, _)| e.launch.as_ref().map(|l| l.get_ref().clone()))
            .collect();
        assert_eq!(
            launches,
            [
                RawCommand::Line("serve --f 0.5 --b true --s 'two words'".into()),
                RawCommand::Line("serve --f 1.0 --b true --s 'two words'".into()),
            ]
        );
        assert_eq!(out[1].1.get("f").as_deref(), Some("1.0"));
    }

    #[test]
    fn a_workload_matrix_sets_the_workload_keys() {
        let src = r#"
name = "chat-out{max_tokens}-t{temperature}"
prompts = ["hi"]
[matrix]
max_tokens = [128, 256]
temperature = [0, 1]
"#;
        let w: RawWorkload = match toml::from_str(src) {
            Ok(w) => w,
            Err(e) => panic!("bad test workload: {e}"),
        };
        let (out, errors) = expand_workload(&w);
        assert_eq!(errors, Vec::new());
        let got: Vec<(String, Option<i64>, Option<f64>)> = out
            .iter()
            .map(|(w, _)| {
                (
                    w.name.get_ref().clone(),
                    w.max_tokens.as_ref().map(|m| *m.get_ref()),
                    w.temperature.as_ref().map(|t| *t.get_ref()),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("chat-out128-t0".to_string(), Some(128), Some(0.0)),
                ("chat-out128-t1".to_string(), Some(128), Some(1.0)),
                ("chat-out256-t0".to_string(), Some(256), Some(0.0)),
                ("chat-out256-t1".to_string(), Some(256), Some(1.0)),
            ]
        );
    }

    #[test]
    fn a_workload_matrix_sets_synthetic_lengths_and_a_dataset_sample() {
        let src = r#"
name = "syn-in{input_tokens}-p{prefix_tokens}"
[synthetic]
output_tokens = 16
count = 4
[matrix]
input_tokens = [64, 256]
prefix_tokens = [0, 32]
"#;
        let w: RawWorkload = match toml::from_str(src) {
            Ok(w) => w,
            Err(e) => panic!("bad test workload: {e}"),
        };
        let (out, errors) = expand_workload(&w);
        assert_eq!(errors, Vec::new());
        type Lengths = (String, Option<i64>, Option<i64>, Option<i64>);
        let got: Vec<Lengths> = out
            .iter()
            .map(|(w, _)| {
                let s = w.synthetic.as_ref().map(|s| s.get_ref());
                (
                    w.name.get_ref().clone(),
                    s.and_then(|s| s.input_tokens.as_ref().map(|v| *v.get_ref())),
                    s.and_then(|s| s.prefix_tokens.as_ref().map(|v| *v.get_ref())),
                    s.and_then(|s| s.output_tokens.as_ref().map(|v| *v.get_ref())),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("syn-in64-p0".to_string(), Some(64), Some(0), Some(16)),
                ("syn-in64-p32".to_string(), Some(64), Some(32), Some(16)),
                ("syn-in256-p0".to_string(), Some(256), Some(0), Some(16)),
                ("syn-in256-p32".to_string(), Some(256), Some(32), Some(16)),
            ]
        );

        let src = r#"
name = "sg{sample}"
[dataset]
format = "sharegpt"
path = "d.json"
[matrix]
sample = [10, 100]
"#;
        let w: RawWorkload = match toml::from_str(src) {
            Ok(w) => w,
            Err(e) => panic!("bad test workload: {e}"),
        };
        let (out, errors) = expand_workload(&w);
        assert_eq!(errors, Vec::new());
        let samples: Vec<Option<i64>> = out
            .iter()
            .map(|(w, _)| {
                w.dataset
                    .as_ref()
                    .and_then(|d| d.get_ref().sample.as_ref().map(|s| *s.get_ref()))
            })
            .collect();
        assert_eq!(samples, [Some(10), Some(100)]);
    }

    #[test]
    fn a_synthetic_key_without_a_synthetic_table_is_an_error() {
        let src = r#"
name = "w-{input_tokens}"
prompts = ["hi"]
[matrix]
input_tokens = [64]
"#;
        let w: RawWorkload = match toml::from_str(src) {
            Ok(w) => w,
            Err(e) => panic!("bad test workload: {e}"),
        };
        let (out, errors) = expand_workload(&w);
        assert!(out.is_empty());
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0]
                .message
                .contains("belongs to [workload.synthetic]"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn placeholders_skip_doubled_braces() {
        assert_eq!(placeholders("{a}-{{b}}-{c}"), ["a", "c"]);
    }
}
