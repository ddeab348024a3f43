//! The built-in engine follows its serving model, checked through the same client code the
//! runner measures with. Lower bounds are exact (a timer never fires early); upper bounds are
//! wide, so a loaded CI machine cannot make these flake.

use std::time::Duration;

use bytes::Bytes;
use runner::engine::sim::{router, SimArgs};
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
    let ttft = r.ttft_us().expect("ttft") as f64 / 1000.0;
    assert!((40.0..200.0).contains(&ttft), "ttft {ttft} ms");
    let tpot = r.tpot_us().expect("tpot") / 1000.0;
    assert!((19.0..80.0).contains(&tpot), "tpot {tpot} ms");
    let itl: Vec<u64> = r.itl_us().collect();
    assert_eq!(itl.len(), 5);
    let mean = itl.iter().sum::<u64>() as f64 / 5000.0;
    assert!((19.0..80.0).contains(&mean), "mean itl {mean} ms");
    let e2e = r.e2e_us() as f64 / 1000.0;
    assert!(e2e >= 40.0 + 5.0 * 20.0, "e2e {e2e} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_batch_one_serves_one_request_at_a_time() {
    let serial = serve(args(1, 10.0, 0.0)).await;
    let batched = serve(args(8, 10.0, 0.0)).await;
    let run = |base: String| async move {
        let reqs: Vec<_> = (0..4)
            .map(|_| {
                let base = base.clone();
                tokio::spawn(async move { one(&base, "hi", 10, true).await })
            })
            .collect();
        let mut worst = 0;
        for r in reqs {
            let r = r.await.expect("join");
            assert!(r.ok, "{r:?}");
            worst = worst.max(r.e2e_us());
        }
        worst as f64 / 1000.0
    };
    let serial_worst = run(serial).await;
    let batched_worst = run(batched).await;
    // Serially, the last of four 10-token requests waits for the other three: 4 x 100 ms.
    assert!(serial_worst >= 400.0, "serial worst e2e {serial_worst} ms");
    assert!(
        batched_worst < serial_worst,
        "batched {batched_worst} ms vs serial {serial_worst} ms"
    );
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
    // Deadlines run from arrival: a token is never early.
    let ttft = s["ttft_ms_mean"].as_f64().expect("ttft");
    assert!(ttft >= 20.0, "{s}");
    let itl = s["itl_ms_mean"].as_f64().expect("itl");
    assert!(itl >= 4.0, "{s}");
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
