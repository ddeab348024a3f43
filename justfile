# Developer tasks. Install just with `cargo install just` (it is not a Debian package here).

# Run the quickstart plan against the built-in engine.
demo:
    cargo run --release -- exec plans/quickstart.toml

# The test suite, as README documents it.
test:
    cargo test --locked

# Everything CI checks: formatting, lints, tests.
ci:
    cargo fmt --check
    cargo clippy --locked --all-targets -- -D warnings
    cargo test --locked

# Check every example plan.
validate:
    for p in plans/*.toml; do cargo run --quiet -- validate "$p" || exit 1; done

# The client benchmark: engine pinned to CPU 0, runner to CPU 1; prints the table of
# docs/performance.md (installs wrk with apt-get when missing). `just bench --quick` to try it.
bench *ARGS:
    cargo build --release --locked
    python3 bench/bench.py {{ARGS}}

# The real-engine case study CI runs (vLLM CPU build, HF baseline, tiny models).
case-study:
    engines/cpu_case_study.sh

# Four single-GPU engines on four fake GPUs, alone and with `[run] parallel`: prints the
# parallel run's wall time over the longest engine alone (issue 18's target: at most 1.2x).
bench-parallel *ARGS:
    cargo build --release --locked
    python3 bench/parallel.py {{ARGS}}
