//! What a workload sends, end to end against the built-in engine: exact-length synthetic prompts
//! counted by a tokenizer, and the example plans of plans/ that use them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use runner::workload::tokenizer::Tokenizer;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tiny() -> Tokenizer {
    Tokenizer::load(&root().join("tests/fixtures/tiny-tokenizer")).expect("the tiny tokenizer")
}

/// `runner exec` of an example plan of plans/, into a scratch results dir; returns the bundle.
/// The example plans keep the real client guard (`max_dispatch_lag`); on a machine shared with
/// other tests it is relaxed here, from outside the plan (docs/plan.md).
fn exec_example(s: &Scratch, plan: &str) -> PathBuf {
    let results = s.path().join("results");
    let out = Command::new(RUNNER)
        .env("RUNNER_MAX_DISPATCH_LAG", "10s")
        .arg("exec")
        .arg(root().join("plans").join(plan))
        .arg("--results")
        .arg(&results)
        .current_dir(root())
        .output()
        .expect("run runner exec");
    assert!(out.status.success(), "{plan}: {}", text(&out));
    find_bundle(&results)
}

fn resolved_workload(bundle: &Path, name: &str) -> serde_json::Value {
    let plan = read_json(&bundle.join("plan.resolved.json"));
    plan["workloads"]
        .as_array()
        .expect("workloads")
        .iter()
        .find(|w| w["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("workload {name} in plan.resolved.json"))
}

/// The prompts a workload sent, from `workloads/<name>.prompts.jsonl` (the one copy in the
/// bundle), as the resolved plan writes a prompt: `{"text": ...}` or `{"messages": [...]}`.
fn stored_prompts(bundle: &Path, name: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(bundle.join(format!("workloads/{name}.prompts.jsonl")))
        .expect("prompts.jsonl")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            match v.get("prompt") {
                Some(p) => serde_json::json!({ "text": p }),
                None => serde_json::json!({ "messages": v["messages"] }),
            }
        })
        .collect()
}

#[test]
fn exact_length_plan_sends_prompts_of_exactly_the_drawn_tokens_and_pins_outputs() {
    let s = Scratch::new();
    let bundle = exec_example(&s, "exact_length.toml");
    let t = tiny();

    let w = resolved_workload(&bundle, "prefill_heavy");
    assert_eq!(w["unit"], "tokens");
    // The prompts are stored once, in the workload's prompts file, not in the resolved plan.
    assert!(w.get("prompts").is_none(), "{w}");
    let prompts = &stored_prompts(&bundle, "prefill_heavy");
    assert_eq!(prompts.len(), 16);
    for p in prompts {
        let text = p["text"].as_str().expect("a text prompt");
        assert_eq!(t.count(text).expect("count"), 256, "{text}");
    }
    for r in records(&bundle, "sim.prefill_heavy.c4") {
        assert!(r.ok, "{r:?}");
        // The sim generates exactly max_tokens: the pinned output length reached the engine.
        assert_eq!(r.output_tokens, 16);
        // The sim counts with the same tokenizer: the server's count is the client's.
        assert_eq!(r.input_tokens, Some(256));
    }

    // Drawn lengths: every prompt has its own length, every request its own max_tokens.
    let w = resolved_workload(&bundle, "decode_heavy");
    let prompts = &stored_prompts(&bundle, "decode_heavy");
    let shapes = w["shapes"].as_array().expect("shapes");
    for (p, shape) in prompts.iter().zip(shapes) {
        let text = p["text"].as_str().expect("a text prompt");
        assert_eq!(
            t.count(text).expect("count") as u64,
            shape["prompt_len"].as_u64().expect("prompt_len")
        );
        let m = shape["max_tokens"].as_u64().expect("max_tokens");
        assert!((96..=128).contains(&m), "{m}");
        assert_eq!(shape["min_tokens"].as_u64(), Some(m));
    }
    let lens: std::collections::BTreeSet<_> =
        shapes.iter().map(|s| s["prompt_len"].as_u64()).collect();
    assert!(lens.len() > 1, "a stddev of 4 draws different lengths");
    let recs = records(&bundle, "sim.decode_heavy.c1");
    assert_eq!(recs.len(), 16);
    for r in recs {
        let shape = &shapes[(r.index % 16) as usize];
        assert_eq!(Some(r.output_tokens), shape["max_tokens"].as_u64(), "{r:?}");
        assert_eq!(r.input_tokens, shape["prompt_len"].as_u64());
    }
}

const SIM_PLAN: &str = r#"schema = 1
name = "w"

[load]
concurrency = [2]
requests = 8
warmup = 0
max_dispatch_lag = "10s"

[[engine]]
name = "sim"
launch = "{runner} engine sim --port {port} --model m --step-ms 1 ACCEPTS_ARGS"
model = "m"
api = "chat"
ACCEPTS
[engine.health]
timeout = "30s"
interval = "50ms"

[[workload]]
name = "w"
SOURCE
"#;

fn sim_plan(source: &str, accepts: &str, refuse: &str) -> String {
    SIM_PLAN
        .replace("SOURCE", source)
        .replace("ACCEPTS_ARGS", refuse)
        .replace("ACCEPTS", accepts)
}

#[test]
fn without_a_tokenizer_synthetic_lengths_are_words_and_say_so() {
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &sim_plan(
            "[workload.synthetic]\ninput_tokens_range = [5, 9]\noutput_tokens = 4\ncount = 6\nseed = 3\n",
            "",
            "",
        ),
    );
    let v = s.runner(&["validate", "plan.toml"]);
    assert!(v.status.success(), "{}", text(&v));
    assert!(
        text(&v).contains("synthetic 5-9 words x 6, output 4 tokens, seed 3"),
        "{}",
        text(&v)
    );
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let w = resolved_workload(&bundle, "w");
    // Words are the default unit, left out of the resolved plan.
    assert!(w.get("unit").is_none(), "{}", w["unit"]);
    for p in &stored_prompts(&bundle, "w") {
        let n = p["text"].as_str().expect("text").split_whitespace().count();
        assert!((5..=9).contains(&n), "{n}");
    }
    for r in records(&bundle, "sim.w.c2") {
        assert_eq!(r.output_tokens, 4, "{r:?}");
    }
}

#[test]
fn a_plan_with_only_today_s_synthetic_keys_keeps_today_s_prompts() {
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &sim_plan(
            "max_tokens = 4\n[workload.synthetic]\ninput_tokens = 12\ncount = 5\nseed = 9\n",
            "",
            "",
        ),
    );
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let today: Vec<_> = runner::plan::prompts::synthetic(12, 5, 9)
        .into_iter()
        .map(|p| serde_json::to_value(p).expect("json"))
        .collect();
    assert_eq!(stored_prompts(&bundle, "w"), today);
}

#[test]
fn a_pinned_output_is_sent_as_min_tokens_and_ignore_eos_only_where_the_engine_accepts_them() {
    // The sim refuses (HTTP 422) any request carrying `min_tokens` or `ignore_eos`: with them
    // left out of `accepts`, the requests succeed, so neither was sent.
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &sim_plan(
            "[workload.synthetic]\ninput_tokens = 8\noutput_tokens = 5\ncount = 4\n",
            "accepts = []",
            "--refuse-fields min_tokens,ignore_eos",
        ),
    );
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    for r in records(&bundle, "sim.w.c2") {
        assert!(r.ok, "{r:?}");
        assert_eq!(r.output_tokens, 5);
    }
    // Accepted (the default), they are sent: the same engine now refuses every request.
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &sim_plan(
            "[workload.synthetic]\ninput_tokens = 8\noutput_tokens = 5\ncount = 4\n",
            "",
            "--refuse-fields min_tokens",
        ),
    );
    let (out, bundle) = s.exec("plan.toml");
    for r in records(&bundle, "sim.w.c2") {
        assert_eq!(r.status, Some(422), "{}", text(&out));
        assert!(
            r.error_message
                .as_deref()
                .is_some_and(|m| m.contains("min_tokens")),
            "{r:?}"
        );
    }
}

#[test]
fn the_bundle_holds_what_was_sent_byte_identical_across_runs() {
    let a = Scratch::new();
    let b = Scratch::new();
    let ba = exec_example(&a, "exact_length.toml");
    let bb = exec_example(&b, "exact_length.toml");
    for name in ["prefill_heavy", "decode_heavy"] {
        let rel = format!("workloads/{name}.prompts.jsonl");
        let fa = std::fs::read(ba.join(&rel)).expect("prompts.jsonl of the first run");
        let fb = std::fs::read(bb.join(&rel)).expect("prompts.jsonl of the second run");
        assert_eq!(fa, fb, "{rel} differs between two runs of the same plan");
        let entry = read_json(&ba.join("manifest.json"))["workloads"]
            .as_array()
            .expect("manifest workloads")
            .iter()
            .find(|w| w["name"] == name)
            .cloned()
            .expect("the workload's entry");
        assert_eq!(entry["path"], rel.as_str());
        assert_eq!(entry["unit"], "tokens");
        assert_eq!(entry["requests"], 16);
        assert_eq!(
            entry["sha256"],
            runner::workload::materialize::sha256_hex(&fa).as_str()
        );
        // Every line is a request: its prompt and the length the client counted.
        let t = tiny();
        let text = String::from_utf8(fa).expect("utf8");
        assert_eq!(text.lines().count(), 16);
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            let prompt = v["prompt"].as_str().expect("prompt");
            assert_eq!(
                t.count(prompt).expect("count") as u64,
                v["prompt_tokens"].as_u64().expect("prompt_tokens")
            );
            assert!(v["max_tokens"].is_u64(), "{line}");
        }
    }
}

#[test]
fn resume_refuses_a_bundle_whose_prompts_changed() {
    let s = Scratch::new();
    s.write("prompts.txt", "first prompt\nsecond prompt\n");
    s.write(
        "plan.toml",
        &sim_plan("max_tokens = 4\nprompts_file = \"prompts.txt\"\n", "", ""),
    );
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let stored = std::fs::read_to_string(bundle.join("workloads/w.prompts.jsonl")).expect("file");
    assert_eq!(
        stored,
        "{\"index\":0,\"prompt\":\"first prompt\",\"prompt_words\":2}\n{\"index\":1,\"prompt\":\"second prompt\",\"prompt_words\":2}\n"
    );
    // The plan file is unchanged; the file it names is not.
    s.write("prompts.txt", "first prompt\nanother prompt\n");
    let b = bundle.to_str().expect("utf8 path");
    let out = s.runner(&["exec", "plan.toml", "--resume", b]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = text(&out);
    assert!(
        err.contains(
            "workload `w` would send other requests than this bundle's workloads/w.prompts.jsonl"
        ),
        "{err}"
    );
}

#[test]
fn client_and_server_prompt_counts_agree_for_completions_and_differ_by_the_sim_s_template_for_chat()
{
    // Completions: the sim counts the prompt as the client does (its BOS included).
    let s = Scratch::new();
    let bundle = exec_example(&s, "exact_length.toml");
    let m = summary(&bundle, "sim.prefill_heavy.c1")
        .metrics
        .expect("the cell's metrics");
    assert_eq!(m.client_prompt_tokens_mean, Some(256.0));
    assert_eq!(m.server_prompt_tokens_mean, Some(256.0));
    assert_eq!(m.prompt_tokens_diff_mean, Some(0.0));
    for r in records(&bundle, "sim.decode_heavy.c4") {
        assert_eq!(r.client_prompt_tokens, r.input_tokens, "{r:?}");
    }

    // Chat: the client counts a text prompt as a prompt (its BOS included); the sim's template
    // adds the BOS once and CHAT_TOKENS_PER_MESSAGE markers around the one message, so usage is
    // exactly that many tokens more.
    let extra = runner::builtin::sim::CHAT_TOKENS_PER_MESSAGE as u64;
    let tok = root().join("tests/fixtures/tiny-tokenizer");
    let tok = tok.to_str().expect("utf8 path");
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &sim_plan(
            &format!("tokenizer = \"{tok}\"\n[workload.synthetic]\ninput_tokens_range = [20, 60]\noutput_tokens = 3\ncount = 8\n"),
            "",
            &format!("--tokenizer {tok}"),
        ),
    );
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let recs = records(&bundle, "sim.w.c2");
    assert_eq!(recs.len(), 8);
    for r in &recs {
        let client = r.client_prompt_tokens.expect("a client count");
        assert!((20..=60).contains(&client), "{r:?}");
        assert_eq!(r.input_tokens, Some(client + extra), "{r:?}");
    }
    let m = summary(&bundle, "sim.w.c2")
        .metrics
        .expect("the cell's metrics");
    assert_eq!(m.prompt_tokens_diff_mean, Some(extra as f64));
    assert!(
        m.cached_tokens.is_none(),
        "the sim reports no cached tokens"
    );
}

#[test]
fn sharegpt_plan_sends_first_turns_with_reference_length_outputs() {
    let s = Scratch::new();
    let bundle = exec_example(&s, "sharegpt.toml");
    let data: serde_json::Value = read_json(&root().join("plans/data/sharegpt.json"));
    let t = tiny();
    // Each conversation's first human turn (after a system message, if any) and the answer
    // after it; a conversation that opens with the model or has no answer is skipped.
    let expected: Vec<(String, u64)> = data
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|c| {
            let turns: Vec<_> = c["conversations"]
                .as_array()?
                .iter()
                .filter(|t| t["from"] != "system")
                .collect();
            if turns.first()?["from"] != "human" || turns.get(1)?["from"] != "gpt" {
                return None;
            }
            let q = turns[0]["value"].as_str()?.to_string();
            let a = turns[1]["value"].as_str()?;
            Some((q, t.count_plain(a).expect("count") as u64))
        })
        .collect();
    let w = resolved_workload(&bundle, "sharegpt");
    let prompts = &stored_prompts(&bundle, "sharegpt");
    let shapes = w["shapes"].as_array().expect("shapes");
    assert_eq!(prompts.len(), expected.len());
    for ((p, shape), (q, answer_len)) in prompts.iter().zip(shapes).zip(&expected) {
        // A conversation with a system message is sent as messages, the user's last.
        let sent = p["text"]
            .as_str()
            .or_else(|| p["messages"].as_array()?.last()?["content"].as_str());
        assert_eq!(sent, Some(q.as_str()), "{p}");
        assert_eq!(shape["max_tokens"].as_u64(), Some(*answer_len));
    }
    let recs = records(&bundle, "sim.sharegpt.c4");
    assert_eq!(recs.len(), 12);
    for r in recs {
        let (_, answer_len) = &expected[(r.index as usize) % expected.len()];
        assert!(r.ok, "{r:?}");
        assert_eq!(r.output_tokens, *answer_len, "{r:?}");
    }
}

#[test]
fn mooncake_trace_is_replayed_at_its_recorded_offsets() {
    let s = Scratch::new();
    let bundle = exec_example(&s, "mooncake_trace.toml");
    let trace: Vec<serde_json::Value> =
        std::fs::read_to_string(root().join("plans/data/mooncake.jsonl"))
            .expect("the trace")
            .lines()
            .map(|l| serde_json::from_str(l).expect("a trace line"))
            .collect();
    let time_scale = 0.5;
    let manifest = read_json(&bundle.join("manifest.json"));
    let cells = manifest["cells"].as_array().expect("cells");
    assert_eq!(cells.len(), 1, "one pass over the trace: {cells:?}");
    let cell = cells[0]["id"].as_str().expect("cell id");
    let mut recs = records(&bundle, cell);
    recs.sort_by_key(|r| r.index);
    assert_eq!(recs.len(), trace.len());
    for (r, line) in recs.iter().zip(&trace) {
        let ms = line["timestamp"].as_u64().expect("timestamp");
        let due_us = (ms as f64 * time_scale * 1000.0).round() as u64;
        // The scheduled instant is the trace's, whatever the server did.
        assert_eq!(r.scheduled_us, due_us, "{r:?}");
        assert!(r.ok, "{r:?}");
        assert_eq!(r.input_tokens, line["input_length"].as_u64(), "{r:?}");
        assert_eq!(
            Some(r.output_tokens),
            line["output_length"].as_u64(),
            "{r:?}"
        );
        assert_eq!(r.client_prompt_tokens, line["input_length"].as_u64());
    }
    // The stored requests carry the offsets.
    let stored = std::fs::read_to_string(bundle.join("workloads/trace.prompts.jsonl"))
        .expect("prompts.jsonl");
    for (l, line) in stored.lines().zip(&trace) {
        let v: serde_json::Value = serde_json::from_str(l).expect("json");
        let ms = line["timestamp"].as_u64().expect("timestamp");
        assert_eq!(
            v["scheduled_offset_us"].as_u64(),
            Some((ms as f64 * time_scale * 1000.0).round() as u64)
        );
    }
}

#[test]
fn shared_prefix_plan_sends_groups_whose_prompts_share_their_first_tokens() {
    let s = Scratch::new();
    let bundle = exec_example(&s, "shared_prefix.toml");
    let t = tiny();
    let stored = std::fs::read_to_string(bundle.join("workloads/shared.prompts.jsonl"))
        .expect("prompts.jsonl");
    let ids: Vec<Vec<u32>> = stored
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            t.prompt_ids(v["prompt"].as_str().expect("prompt"))
                .expect("ids")
        })
        .collect();
    assert_eq!(ids.len(), 32);
    for (i, p) in ids.iter().enumerate() {
        assert_eq!(p.len(), 256, "prompt {i}");
        // Prompt i is in group i mod 4: the same first 192 tokens as its group's first prompt,
        // and not the same as the other groups'.
        assert_eq!(p[..192], ids[i % 4][..192], "prompt {i}");
        for g in (0..4).filter(|g| *g != i % 4) {
            assert_ne!(p[..192], ids[g][..192], "prompt {i} vs group {g}");
        }
        assert_ne!(p[192..], ids[(i + 4) % 32][192..], "a unique suffix");
    }
    let cell = summary(&bundle, "sim.shared.c4");
    let m = cell.metrics.expect("metrics");
    assert_eq!(m.requests_ok, 32);
    // The sim reports neither cached tokens nor prefix-cache counters.
    assert_eq!(m.cached_tokens, None);
    assert_eq!(cell.prefix_cache_hit_rate, None);
}

#[test]
fn multi_turn_plan_sends_sessions_turn_by_turn_and_reports_each_turn() {
    let s = Scratch::new();
    let bundle = exec_example(&s, "multi_turn.toml");
    // The relaxed guard came from outside the plan, and the bundle says so.
    let w = resolved_workload(&bundle, "synthetic_sessions");
    assert_eq!(w["load"]["max_dispatch_lag"], "10s");
    assert!(w["sessions"].is_object(), "{w}");
    // The stored requests are the user turns, each with its session and turn.
    let stored: Vec<serde_json::Value> =
        std::fs::read_to_string(bundle.join("workloads/synthetic_sessions.prompts.jsonl"))
            .expect("prompts.jsonl")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
    assert_eq!(stored.len(), 16);
    let t = tiny();
    for (i, v) in stored.iter().enumerate() {
        assert_eq!(v["session"].as_u64(), Some(i as u64 / 4), "{v}");
        assert_eq!(v["turn"].as_u64(), Some(i as u64 % 4), "{v}");
        let m = v["messages"].as_array().expect("messages");
        assert_eq!(m.len(), 1);
        let content = m[0]["content"].as_str().expect("content");
        assert_eq!(t.count_plain(content).expect("count"), 48);
    }
    for cell in ["sim.synthetic_sessions.c1", "sim.synthetic_sessions.c2"] {
        let recs = records(&bundle, cell);
        assert_eq!(recs.len(), 16);
        for r in &recs {
            assert!(r.ok, "{r:?}");
            let turn = u64::from(r.turn.expect("a turn"));
            assert!(r.session.is_some(), "{r:?}");
            // The client's count: every earlier turn (48) and its answer (16), then this turn.
            assert_eq!(r.client_prompt_tokens, Some(turn * (48 + 16) + 48), "{r:?}");
        }
        let c = summary(&bundle, cell);
        assert!(c.prefix_cache_hit_rate.is_some_and(|r| r > 0.0), "{cell}");
        let m = c.metrics.expect("metrics");
        let turns: Vec<u32> = m.by_turn.iter().map(|t| t.turn).collect();
        assert_eq!(turns, [0, 1, 2, 3], "{cell}");
        for t in &m.by_turn {
            assert_eq!(t.requests_ok, 4, "{t:?}");
            assert!(t.ttft_ms.is_some() && t.e2e_ms.is_some(), "{t:?}");
        }
        // The context grows turn by turn, on the client's count and on the server's.
        for pair in m.by_turn.windows(2) {
            assert!(pair[1].client_prompt_tokens_mean > pair[0].client_prompt_tokens_mean);
            assert!(pair[1].server_prompt_tokens_mean > pair[0].server_prompt_tokens_mean);
        }
    }
    // ShareGPT conversations: one session per conversation, turns in order within each.
    let recs = records(&bundle, "sim.conversations.c1");
    let mut seen = std::collections::BTreeMap::<u64, u32>::new();
    for r in &recs {
        assert!(r.ok, "{r:?}");
        let (s, t) = (r.session.expect("session"), r.turn.expect("turn"));
        assert_eq!(seen.get(&s).map_or(0, |t| t + 1), t, "{r:?}");
        seen.insert(s, t);
    }
    assert!(
        seen.values().any(|t| *t > 0),
        "a conversation of several turns"
    );
    let report = std::fs::read_to_string(bundle.join("report.md")).expect("report.md");
    assert!(report.contains("#### By turn"), "{report}");
    assert!(report.contains("#### Prompt tokens"), "{report}");
    // The CSV: a field for every column, the prompt counts among them.
    let csv = std::fs::read_to_string(bundle.join("summary.csv")).expect("summary.csv");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let at = |name: &str| header.iter().position(|h| *h == name).expect(name);
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), header.len(), "{line}");
        if fields[1] == "synthetic_sessions" {
            let client: f64 = fields[at("client_prompt_tokens_mean")]
                .parse()
                .expect("client");
            let server: f64 = fields[at("server_prompt_tokens_mean")]
                .parse()
                .expect("server");
            assert!(
                server > client,
                "the sim's chat template adds tokens: {line}"
            );
        }
    }
}

/// The sim's `--log-requests` lines: what each request carried and the answer it got.
fn logged(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("the sim's request log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn each_turn_carries_the_engine_s_earlier_answers_and_the_session_s_header() {
    let s = Scratch::new();
    let log = s.path().join("requests.jsonl");
    let data = root().join("plans/data/sharegpt.json");
    s.write(
        "plan.toml",
        &sim_plan(
            &format!(
                "max_tokens = 6\n[workload.dataset]\nformat = \"sharegpt\"\npath = \"{}\"\n[workload.sessions]\nthink_time = \"30ms\"\n",
                data.display()
            ),
            "",
            &format!("--log-requests {}", log.display()),
        )
        .replace("requests = 8", "requests = 14"),
    );
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let lines = logged(&log);
    assert_eq!(lines.len(), 14);
    // Each session's requests, in the order the engine got them.
    let mut by_session = std::collections::BTreeMap::<String, Vec<&serde_json::Value>>::new();
    for l in &lines {
        let id = l["session_id"].as_str().expect("an X-Session-ID header");
        by_session.entry(id.to_string()).or_default().push(l);
    }
    let mut longest = 0;
    for (id, reqs) in &by_session {
        let mut answers: Vec<&str> = Vec::new();
        for (k, r) in reqs.iter().enumerate() {
            let messages = r["body"]["messages"].as_array().expect("messages");
            let sent: Vec<&str> = messages
                .iter()
                .filter(|m| m["role"] == "assistant")
                .map(|m| m["content"].as_str().expect("content"))
                .collect();
            // Turn k carries the engine's answers to turns 0..k, in order: the answers it
            // gave (each names its request), not the dataset's.
            assert_eq!(sent, answers, "session {id}, turn {k}");
            assert_eq!(messages.last().expect("a message")["role"], "user");
            answers.push(r["answer"].as_str().expect("answer"));
            longest = longest.max(k + 1);
        }
    }
    assert!(longest >= 3, "a session of three turns or more");
    // Records: the same sessions and turns; a later turn is due a think time after the
    // previous one ended.
    let mut recs = records(&bundle, "sim.w.c2");
    recs.sort_by_key(|r| r.index);
    for r in &recs {
        let prev = recs.iter().rev().find(|p| {
            p.index < r.index
                && p.worker == r.worker
                && p.session == r.session
                && p.turn.map(|t| t + 1) == r.turn
        });
        if let Some(p) = prev {
            assert_eq!(r.scheduled_us, p.end_us + 30_000, "{r:?} after {p:?}");
        }
    }
}

#[test]
fn the_sim_s_prefix_cache_finds_a_session_s_history_cached() {
    let tok = root().join("tests/fixtures/tiny-tokenizer");
    let tok = tok.to_str().expect("utf8 path");
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &sim_plan(
            &format!("tokenizer = \"{tok}\"\n[workload.synthetic]\ninput_tokens = 48\noutput_tokens = 8\ncount = 4\n[workload.sessions]\nturns = 4\n"),
            "",
            &format!("--tokenizer {tok} --prefix-cache"),
        )
        .replace("concurrency = [2]", "concurrency = [1]")
        .replace("requests = 8", "requests = 16"),
    );
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let recs = records(&bundle, "sim.w.c1");
    assert_eq!(recs.len(), 16);
    let extra = runner::builtin::sim::CHAT_TOKENS_PER_MESSAGE as u64;
    for r in &recs {
        assert!(r.ok, "{r:?}");
        let cached = r.cached_tokens.expect("usage reports cached tokens");
        if r.turn == Some(0) {
            // The runner's readiness check sent the first prompt once already.
            if r.session != Some(0) {
                assert_eq!(cached, 0, "a session's first turn shares nothing: {r:?}");
            }
        } else {
            // Everything but the turn's own message (its template tokens and 48 of content)
            // was in the cache: the history the engine had seen, its own answers included.
            assert_eq!(r.input_tokens, Some(cached + extra + 48), "{r:?}");
        }
    }
    let cell = summary(&bundle, "sim.w.c1");
    let rate = cell
        .prefix_cache_hit_rate
        .expect("the sim's prefix-cache counters");
    assert!(rate > 0.0 && rate < 1.0, "{rate}");
    let m = cell.metrics.expect("metrics");
    assert!(m.cached_tokens_mean.is_some_and(|c| c > 0.0), "{m:?}");
    let report = std::fs::read_to_string(bundle.join("report.md")).expect("report.md");
    assert!(
        report.contains(&format!("{:.1}%", rate * 100.0)),
        "{report}"
    );
}
