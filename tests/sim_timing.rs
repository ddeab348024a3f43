//! The built-in engine follows its serving model, checked through the same client code the
//! runner measures with. Lower bounds are exact (a timer never fires early); there are no
//! upper bounds on measured times, since a loaded machine makes everything late. What the
//! engine did is read from its own `/stats` and `/metrics`, never from a race between runs.

use std::time::Duration;

use bytes::Bytes;
use runner::builtin::sim::{router, SimArgs};
use runner::load::client::{send_alone, RequestTarget, Timeouts};
use runner::metrics::record::{RequestRecord, TokenSource};

fn args(max_batch: usize, step_ms: f64, prefill_ms_per_token: f64) -> SimArgs {
    SimArgs {
        host: "127.0.0.1".into(),
        port: 0,
        model: "m".into(),
        max_batch,
        step_ms,
        step_ms_per_seq: 0.0,
        prefill_ms_per_token,
        ttft_ms: None,
        itl_ms: None,
        load_time: Duration::ZERO,
        refuse_fields: Vec::new(),
        tokenizer: None,
        text: false,
        perturb: 0.0,
        no_prompt_logprobs: false,
        log_requests: None,
        prefix_cache: false,
        faults: Default::default(),
    }
}

async fn serve(a: SimArgs) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router(a)).await });
    format!("http://{addr}")
}

fn body(prompt: &str, max_tokens: u32, stream: bool) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "model": "m", "max_tokens": max_tokens, "stream": stream,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": prompt}],
        })
        .to_string(),
    )
}

async fn one(base: &str, prompt: &str, max_tokens: u32, stream: bool) -> RequestRecord {
    let target = RequestTarget {
        url: format!("{base}/v1/chat/completions"),
        stream,
        timeouts: Timeouts::default(),
        keep_text: false,
        retry: Default::default(),
        api_key: None,
        expect_tokens: 0,
        allow_empty_output: false,
    };
    send_alone(
        &target,
        body(prompt, max_tokens, stream),
        std::future::pending(),
    )
    .await
    .record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttft_tpot_and_itl_follow_the_step_time() {
    // 20 ms per step, 2 ms per prompt token: a 10-word prompt costs 20 + 20 ms to the first token.
    let base = serve(args(8, 20.0, 2.0)).await;
    let r = one(
        &base,
        "one two three four five six seven eight nine ten",
        6,
        true,
    )
    .await;
    assert!(r.ok, "{r:?}");
    assert_eq!((r.input_tokens, r.output_tokens), (Some(10), 6));
    assert_eq!(r.output_tokens_source, TokenSource::Usage);
    assert_eq!(r.chunks, 6, "the role-only first chunk is not a token");
    // The first step starts at arrival and lasts 20 + 10 x 2 ms; the five after it 20 ms each.
    // Steps keep their deadlines (a late step makes the next ones shorter), so TPOT and ITL
    // have no certain bound; the ends of the chain do.
    let ttft = r.ttft_us().expect("ttft") as f64 / 1000.0;
    assert!(ttft >= 40.0, "ttft {ttft} ms");
    assert!(r.tpot_us().is_some());
    // The role chunk goes out with the first token (as vLLM sends it): seven token events, six
    // gaps by the default (token event) definition, five between the six text events.
    assert_eq!(r.token_us.len(), 7);
    assert_eq!(
        r.token_us[0], r.content_us[0],
        "the role chunk and the first token: one read"
    );
    assert_eq!(r.itl_us().count(), 6);
    assert_eq!(r.itl_text_us().count(), 5);
    assert_eq!(r.ttft_us(), r.ttft_text_us());
    let e2e = r.e2e_us() as f64 / 1000.0;
    assert!(e2e >= 40.0 + 5.0 * 20.0, "e2e {e2e} ms");
    // The client's clock starts before the engine's and stops after it: what the client
    // measured is never less than what the engine says it emitted.
    let s = stats(&base).await;
    assert_eq!(s["requests"], 1, "{s}");
    let emitted = s["ttft_ms_mean"].as_f64().expect("ttft");
    assert!(emitted >= 40.0, "{s}");
    assert!(ttft >= emitted, "client {ttft} ms, engine {s}");
}

/// The engine's batch and queue, from its `/metrics`.
async fn gauges(base: &str) -> (u64, u64) {
    let page = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let gauge = |name: &str| {
        page.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {page}"))
    };
    (
        gauge("sim:num_requests_running"),
        gauge("sim:num_requests_waiting"),
    )
}

/// Polls the engine's gauges until `done` holds (bounded by a generous deadline), checking
/// `always` on every reading; returns the last reading.
async fn watch(
    base: &str,
    done: impl Fn((u64, u64)) -> bool,
    always: impl Fn((u64, u64)) -> bool,
) -> (u64, u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let g = gauges(base).await;
        assert!(always(g), "running, waiting = {g:?}");
        if done(g) {
            return g;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "running, waiting = {g:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_batch_one_serves_one_request_at_a_time() {
    let spawn4 = |base: &str, max_tokens: u32| -> Vec<_> {
        (0..4)
            .map(|_| {
                let base = base.to_string();
                tokio::spawn(async move { one(&base, "hi", max_tokens, true).await })
            })
            .collect()
    };
    // Serially, the last of four 10-token requests ends after the other three: 40 steps of
    // 10 ms from the first arrival at the earliest.
    let serial = serve(args(1, 10.0, 0.0)).await;
    let t0 = std::time::Instant::now();
    for r in spawn4(&serial, 10) {
        let r = r.await.expect("join");
        assert!(r.ok, "{r:?}");
    }
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "four requests in {took:?}"
    );

    // Which requests run together is the engine's own account (its `/metrics`), not a race
    // between two timed runs: four long requests in flight are one running and three waiting
    // at `max_batch 1`, and four running at `max_batch 8`.
    let long = 100_000;
    let reqs = spawn4(&serial, long);
    let g = watch(
        &serial,
        |(_, waiting)| waiting == 3,
        |(running, _)| running <= 1,
    )
    .await;
    assert_eq!(g, (1, 3));
    reqs.iter().for_each(|r| r.abort());
    let batched = serve(args(8, 10.0, 0.0)).await;
    let reqs = spawn4(&batched, long);
    let g = watch(&batched, |(running, _)| running == 4, |_| true).await;
    assert_eq!(g, (4, 0));
    reqs.iter().for_each(|r| r.abort());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_streamed_requests_and_wrong_models_are_answered() {
    let base = serve(args(4, 1.0, 0.0)).await;
    let r = one(&base, "a b c", 4, false).await;
    assert!(r.ok, "{r:?}");
    assert_eq!((r.input_tokens, r.output_tokens), (Some(3), 4));
    assert_eq!(r.content_us.len(), 1);

    let target = RequestTarget {
        url: format!("{base}/v1/chat/completions"),
        stream: true,
        timeouts: Timeouts::default(),
        keep_text: false,
        retry: Default::default(),
        api_key: None,
        expect_tokens: 0,
        allow_empty_output: false,
    };
    let wrong = Bytes::from(
        r#"{"model":"other","messages":[{"role":"user","content":"x"}],"stream":true}"#,
    );
    let r = send_alone(&target, wrong, std::future::pending())
        .await
        .record;
    assert!(!r.ok);
    assert_eq!(r.status, Some(404));
    assert!(
        r.error_message
            .as_deref()
            .unwrap_or("")
            .contains("The model `other` does not exist."),
        "{r:?}"
    );
}

fn fixed(ttft_ms: f64, itl_ms: f64) -> SimArgs {
    SimArgs {
        ttft_ms: Some(ttft_ms),
        itl_ms: Some(itl_ms),
        ..args(8, 0.0, 0.0)
    }
}

async fn stats(base: &str) -> serde_json::Value {
    reqwest::get(format!("{base}/stats"))
        .await
        .expect("stats")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_report_the_timings_the_engine_emitted() {
    let base = serve(fixed(20.0, 5.0)).await;
    for _ in 0..3 {
        let r = one(&base, "hi", 4, true).await;
        assert!(r.ok, "{r:?}");
    }
    let s = stats(&base).await;
    assert_eq!(s["requests"], 3, "{s}");
    assert_eq!(s["itl_n"], 9, "three gaps per 4-token response: {s}");
    // Deadlines run from arrival: a token is never early. A late token shortens the gap to the
    // next, so ITL alone has no certain bound, but each request's last token (20 + 3 x 5 ms)
    // does: its TTFT plus its three gaps.
    let ttft = s["ttft_ms_mean"].as_f64().expect("ttft");
    assert!(ttft >= 20.0, "{s}");
    let itl = s["itl_ms_mean"].as_f64().expect("itl");
    assert!(ttft + 3.0 * itl >= 35.0 - 1e-9, "{s}");
    let client = reqwest::Client::new();
    client
        .post(format!("{base}/stats/reset"))
        .send()
        .await
        .expect("reset");
    assert_eq!(stats(&base).await["requests"], 0);
    // `skip=2` leaves the next two requests out: only the third counts.
    client
        .post(format!("{base}/stats/reset?skip=2"))
        .send()
        .await
        .expect("reset");
    for _ in 0..3 {
        assert!(one(&base, "hi", 4, true).await.ok);
    }
    let s = stats(&base).await;
    assert_eq!(
        (s["requests"].as_u64(), s["itl_n"].as_u64()),
        (Some(1), Some(3)),
        "{s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_cost_mode_streams_the_same_complete_response() {
    let base = serve(fixed(0.0, 0.0)).await;
    for _ in 0..2 {
        let r = one(&base, "one two three", 128, true).await;
        assert!(r.ok, "{r:?}");
        assert_eq!((r.input_tokens, r.output_tokens), (Some(3), 128));
        assert_eq!(r.output_tokens_source, TokenSource::Usage);
        assert_eq!(r.chunks, 128);
    }
}
