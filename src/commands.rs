//! One function per subcommand, each returning the exit code: what `runner` does for
//! `exec`, `merge`, `submit`, `status`, `export`, `validate`, `recover`, `report`, `compare`,
//! `list`, `probe` and `engine`.

use std::path::Path;

use crate::cli::{self, Command, EngineCommand};
use crate::error::exit;
use crate::plan::{self, check, diagnostic::Diagnostics, resolve::ResolveContext};
use crate::{builtin, bundle, cluster, export as exports, probe, report, run};

/// Runs one parsed command; any error is printed here, once.
pub fn run(command: Command) -> i32 {
    match command {
        Command::Engine(EngineCommand::Sim(args)) => match builtin::sim::serve(*args) {
            Ok(()) => exit::OK,
            Err(e) => {
                eprintln!("error: the sim engine failed: {e}");
                exit::ERROR
            }
        },
        Command::Engine(EngineCommand::Unpinned { cpus, argv }) => {
            eprintln!("error: {}", crate::affinity::exec_unpinned(&cpus, &argv));
            127
        }
        Command::Engine(EngineCommand::Replay(args)) => match builtin::replay::serve(args) {
            Ok(()) => exit::OK,
            Err(e) => {
                eprintln!("error: the replay engine failed: {e}");
                exit::ERROR
            }
        },
        Command::Probe {
            url,
            api,
            model,
            prompt,
            max_tokens,
            no_stream,
            timeout,
            json,
            api_key_env,
        } => probe(
            probe::ProbeSpec {
                url,
                api: api.into(),
                model,
                prompt,
                max_tokens,
                stream: !no_stream,
                timeout,
                api_key_env,
            },
            json,
        ),
        Command::Validate { plan } => validate(&plan),
        Command::Exec {
            plan,
            results,
            quiet,
            resume,
            engines,
            part,
        } => exec(&plan, &results, quiet, resume, &engines, part.as_deref()),
        Command::Merge { bundles, output } => merge(&bundles, output.as_deref()),
        Command::Submit {
            plan,
            slurm: _,
            k8s,
            partition,
            account,
            time,
            gpus_per_engine,
            sbatch_args,
            results,
            dry_run,
            image,
        } => {
            if k8s {
                submit_k8s(&plan, &results, gpus_per_engine, image.unwrap_or_default())
            } else {
                let options = cluster::slurm::SubmitOptions {
                    partition,
                    account,
                    time,
                    gpus_per_engine,
                    sbatch_args,
                    runner: context().runner_exe,
                };
                submit_slurm(&plan, &results, &options, dry_run)
            }
        }
        Command::Status { bundle } => status(&bundle),
        Command::Export {
            bundle,
            format,
            output,
        } => export(&bundle, format, output.as_deref()),
        Command::Recover { bundle } => match run::recover::recover(&bundle) {
            Ok(r) => {
                print!("{}", r.summary);
                for k in &r.killed {
                    println!("killed a leftover engine process group: {k}");
                }
                for d in &r.declined {
                    println!("not killed: {d}");
                }
                for n in &r.not_killed {
                    eprintln!("error: could not kill {n}");
                }
                println!(
                    "\nrecovered {} cells from their journals; bundle {} is marked interrupted",
                    r.recovered,
                    bundle.display()
                );
                if r.not_killed.is_empty() {
                    exit::OK
                } else {
                    exit::LEFTOVERS
                }
            }
            Err(e) => {
                eprintln!("error: failed to recover {}: {e}", bundle.display());
                exit::ERROR
            }
        },
        Command::Report {
            bundle,
            template: Some(t),
        } => report_template(&bundle, &t),
        Command::Compare {
            bundles,
            format,
            threshold,
        } => compare(&bundles, format, threshold),
        Command::List { dir } => match report::list::find(&dir) {
            Ok(items) => {
                print!("{}", report::list::render(&items));
                exit::OK
            }
            Err(e) => {
                eprintln!("error: cannot list {}: {e}", dir.display());
                exit::ERROR
            }
        },
        Command::Report {
            bundle,
            template: None,
        } => match report::render::rerender(&bundle) {
            Ok(summary) => {
                print!("{summary}");
                if bundle::read::load(&bundle)
                    .is_ok_and(|b| b.manifest.status == bundle::format::RunStatus::Running)
                {
                    eprintln!(
                        "warning: this bundle is still marked `running`; if its runner is gone (killed), run `runner recover {}`",
                        bundle.display()
                    );
                }
                println!(
                    "\nreport: {}",
                    bundle.join(bundle::layout::REPORT_MD).display()
                );
                exit::OK
            }
            Err(e) => {
                eprintln!("error: failed to render the report: {e}");
                exit::ERROR
            }
        },
    }
}

fn probe(spec: probe::ProbeSpec, json: bool) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::ERROR;
        }
    };
    match rt.block_on(probe::run(&spec)) {
        Ok(report) => {
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("error: cannot print the probe as JSON: {e}");
                        return exit::ERROR;
                    }
                }
            } else {
                print!("{}", probe::render(&report));
            }
            if report.ok {
                exit::OK
            } else {
                exit::ERROR
            }
        }
        Err(e) => {
            eprintln!("error: failed to probe {}: {e}", spec.url);
            exit::ERROR
        }
    }
}

fn report_template(bundle: &Path, template: &Path) -> i32 {
    let run = || -> Result<std::path::PathBuf, String> {
        let name = template
            .file_name()
            .map(|n| n.to_string_lossy().trim_end_matches(".tera").to_string())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "report.custom".into());
        // The output lands in the bundle: it must never replace a file the runner wrote.
        if bundle::layout::TOP.contains(&name.as_str()) || name.starts_with('.') {
            return Err(format!(
                "template {} would be rendered to {}, which is a file of the bundle itself; rename the template (e.g. `custom-{name}.tera`)",
                template.display(),
                bundle.join(&name).display()
            ));
        }
        let loaded = bundle::read::load(bundle).map_err(|e| e.to_string())?;
        let text = std::fs::read_to_string(template)
            .map_err(|e| format!("cannot read template {}: {e}", template.display()))?;
        let data = report::render::data_with_charts(&loaded);
        let out = report::render::render_with(&template.display().to_string(), &text, &data)
            .map_err(|e| e.to_string())?;
        let path = bundle.join(name);
        bundle::write::atomic_write(&path, out.as_bytes()).map_err(|e| e.to_string())?;
        Ok(path)
    };
    match run() {
        Ok(p) => {
            println!("rendered {}", p.display());
            exit::OK
        }
        Err(e) => {
            eprintln!("error: failed to render the template: {e}");
            exit::ERROR
        }
    }
}

fn compare(dirs: &[std::path::PathBuf], format: cli::CompareFormat, threshold: f64) -> i32 {
    let mut loaded = Vec::new();
    for d in dirs {
        match bundle::read::load(d) {
            Ok(b) => loaded.push(b),
            Err(e) => {
                eprintln!("error: failed to read bundle: {e}");
                return exit::ERROR;
            }
        }
    }
    for other in &loaded[1..] {
        let c = report::compare::compare(&loaded[0], other, threshold);
        let text = match format {
            cli::CompareFormat::Table => report::compare::render_table(&c),
            cli::CompareFormat::Markdown => report::compare::render_markdown(&c),
            cli::CompareFormat::Html => report::compare::render_html(&c),
        };
        print!("{text}");
    }
    exit::OK
}

fn context() -> ResolveContext {
    ResolveContext {
        runner_exe: std::env::current_exe().unwrap_or_else(|_| "runner".into()),
    }
}

/// The plan file's bytes (read once: they are hashed, resolved and copied into the bundle), the
/// plan and its warnings; an invalid plan is printed and gives the exit code.
fn load_plan(path: &Path) -> Result<(Vec<u8>, plan::model::Plan, Diagnostics), i32> {
    let loaded = plan::resolve::read(path).and_then(|bytes| {
        plan::resolve::from_bytes(path, &bytes, &context()).map(|ok| (bytes, ok))
    });
    match loaded {
        Ok((bytes, (plan, warnings))) => Ok((bytes, plan, warnings)),
        Err(diags) => {
            eprint!("{diags}");
            eprintln!(
                "\nerror: plan {} is invalid ({} error{})",
                path.display(),
                diags.error_count(),
                if diags.error_count() == 1 { "" } else { "s" }
            );
            Err(exit::INVALID)
        }
    }
}

fn validate(path: &Path) -> i32 {
    let (_, plan, warnings) = match load_plan(path) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let mut found = warnings.0;
    found.extend(check::environment(&plan));
    let diags = Diagnostics(found);
    if !diags.0.is_empty() {
        eprint!("{diags}");
        eprintln!();
    }
    print!("{}", plan::summary::render(&plan, path));
    if diags.has_errors() {
        eprintln!(
            "error: plan {} cannot run on this machine ({} errors)",
            path.display(),
            diags.error_count()
        );
        exit::INVALID
    } else {
        println!(
            "ok: plan is valid{}",
            if diags.0.is_empty() {
                ""
            } else {
                " (with warnings)"
            }
        );
        exit::OK
    }
}

fn exec(
    path: &Path,
    results: &Path,
    quiet: bool,
    resume: Option<std::path::PathBuf>,
    engines: &[String],
    part: Option<&Path>,
) -> i32 {
    let (bytes, plan, warnings) = match load_plan(path) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let plan = if engines.is_empty() {
        plan
    } else {
        match run::part::subset(&plan, engines) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::INVALID;
            }
        }
    };
    let part = match (part, engines) {
        (None, _) => None,
        (Some(bundle), [engine]) => Some((
            run::merge::part_dir(bundle, engine),
            run::part::part_info(engines),
        )),
        (Some(_), _) => {
            eprintln!("error: --part writes one engine's part: give exactly one --engine NAME");
            return exit::INVALID;
        }
    };
    if !warnings.0.is_empty() && !quiet {
        eprint!("{warnings}");
    }
    let mut plan = plan;
    if let Some(v) = std::env::var_os(plan::defaults::MAX_DISPATCH_LAG_ENV) {
        let env = plan::defaults::MAX_DISPATCH_LAG_ENV;
        match humantime::parse_duration(&v.to_string_lossy()) {
            Ok(lag) => {
                eprintln!(
                    "note: {env}={} replaces every workload's `max_dispatch_lag`",
                    humantime::format_duration(lag)
                );
                for w in &mut plan.workloads {
                    w.load.max_dispatch_lag = lag;
                }
            }
            Err(e) => {
                eprintln!("error: {env}={}: not a duration: {e}", v.to_string_lossy());
                return exit::INVALID;
            }
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::ERROR;
        }
    };
    let opts = run::orchestrator::ExecOptions {
        results_root: results.to_path_buf(),
        quiet,
        resume,
        part,
    };
    // Pinned inside the runtime, so its worker threads are pinned too; before any engine is
    // launched, so the engines start on the CPUs the runner had.
    let client = rt.block_on(async {
        if plan.client.is_default() {
            return Ok(());
        }
        crate::affinity::apply(&plan.client).map(|s| {
            for w in &s.warnings {
                eprintln!("warning: {w}");
            }
        })
    });
    if let Err(e) = client {
        eprintln!("error: cannot apply `[client]`: {e}");
        return exit::INVALID;
    }
    let result = rt.block_on(async {
        let (stopper, cancel) = crate::stop::channel();
        if let Err(e) = run::signal::install(stopper) {
            eprintln!(
                "warning: cannot install signal handlers ({e}); Ctrl-C will not tear engines down"
            );
        }
        run::orchestrator::exec(&plan, &bytes, &opts, cancel).await
    });
    match result {
        Ok(out) => {
            print!("{}", out.summary);
            if let Some(e) = &out.report_error {
                eprintln!("warning: the report could not be rendered: {e}");
            }
            println!("\nbundle: {}", out.bundle_dir.display());
            if !out.leftovers.is_empty() {
                for l in &out.leftovers {
                    eprintln!("error: still alive after teardown: {l}");
                }
                eprintln!(
                    "runner: {} engine processes survived teardown (listed in the manifest's `stop.survivors` and the report); stop them by hand before the next run",
                    out.leftovers.len()
                );
                return exit::LEFTOVERS;
            }
            match out.status {
                bundle::format::RunStatus::Interrupted => exit::INTERRUPTED,
                _ if out.cells_failed > 0 || out.cells_invalid > 0 => {
                    eprintln!(
                        "runner: {} cells failed or rejected, {} invalid (not results); see the report",
                        out.cells_failed, out.cells_invalid
                    );
                    for line in out.requests_failed.iter().chain(&out.quality_failed) {
                        eprintln!("runner: {line}");
                    }
                    exit::CELLS_FAILED
                }
                _ if !out.quality_failed.is_empty() => {
                    eprintln!(
                        "runner: every cell was measured, but {} quality results failed:",
                        out.quality_failed.len()
                    );
                    for line in &out.quality_failed {
                        eprintln!("runner: {line}");
                    }
                    exit::CELLS_FAILED
                }
                _ if !out.requests_failed.is_empty() => {
                    eprintln!(
                        "runner: every cell was measured, but {} finished with failed requests:",
                        out.requests_failed.len()
                    );
                    for line in &out.requests_failed {
                        eprintln!("runner: {line}");
                    }
                    exit::REQUESTS_FAILED
                }
                _ => exit::OK,
            }
        }
        Err(e @ (run::error::RunError::Resume { .. } | run::error::RunError::Placement(_))) => {
            eprintln!("error: {e}");
            exit::INVALID
        }
        Err(e) => {
            eprintln!("error: the run failed: {e}");
            exit::ERROR
        }
    }
}

fn merge(bundles: &[std::path::PathBuf], output: Option<&Path>) -> i32 {
    let merged = match (bundles, output) {
        ([one], None) => run::merge::merge_submitted(one),
        (_, Some(out)) => run::merge::merge_bundles(bundles, out),
        (_, None) => Err(run::merge::MergeError::NoOutput),
    };
    let m = match merged {
        Ok(m) => m,
        Err(e @ run::merge::MergeError::NoOutput) => {
            eprintln!("error: {e}");
            return exit::INVALID;
        }
        Err(e) => {
            eprintln!("error: failed to merge: {e}");
            return exit::ERROR;
        }
    };
    match report::render::rerender(&m.dir) {
        Ok(summary) => print!("{summary}"),
        Err(e) => eprintln!("warning: the report could not be rendered: {e}"),
    }
    for engine in &m.missing {
        eprintln!("runner: missing part: engine {engine} wrote none");
    }
    for f in &m.failed {
        eprintln!("runner: failed part: {f}");
    }
    println!(
        "\nmerged {} cells into {} ({})",
        m.cells,
        m.dir.display(),
        bundle::format::label(&m.status)
    );
    if m.missing.is_empty() && m.failed.is_empty() {
        exit::OK
    } else {
        exit::CELLS_FAILED
    }
}

fn engine_names(plan: &plan::model::Plan) -> Vec<String> {
    plan.engines.iter().map(|e| e.name.clone()).collect()
}

fn absolute(p: &Path) -> std::path::PathBuf {
    std::path::absolute(p)
        .map(|a| cluster::travel::lexical(&a))
        .unwrap_or_else(|_| p.to_path_buf())
}

fn submit_slurm(
    path: &Path,
    results: &Path,
    options: &cluster::slurm::SubmitOptions,
    dry_run: bool,
) -> i32 {
    let (bytes, plan, _) = match load_plan(path) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let engines = engine_names(&plan);
    let plan_abs = absolute(path);
    if dry_run {
        // Nothing is created: the bundle's name is only known once it is.
        let bundle = absolute(results).join(&plan.name).join("<bundle>");
        let sub = cluster::slurm::Submission {
            plan_name: &plan.name,
            plan: &plan_abs,
            bundle: &bundle,
            engines: &engines,
            options,
        };
        return match sub.dry_run() {
            Ok(text) => {
                print!("{text}");
                exit::OK
            }
            Err(e) => {
                eprintln!("error: cannot render the Slurm scripts: {e}");
                exit::INVALID
            }
        };
    }
    let inventory = crate::metrics::gpu::GpuInventory {
        unavailable_reason: Some(
            "not measured: the engines run as Slurm jobs, each part records its own".into(),
        ),
        ..Default::default()
    };
    let dir =
        match run::ledger::Ledger::create_submitted(&plan, &bytes, &absolute(results), inventory) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: failed to create the bundle: {e}");
                return exit::ERROR;
            }
        };
    let sub = cluster::slurm::Submission {
        plan_name: &plan.name,
        plan: &plan_abs,
        bundle: &dir,
        engines: &engines,
        options,
    };
    let submitted = match cluster::submit::submit(&sub, "sbatch") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: failed to submit {}: {e}", path.display());
            eprintln!("the bundle {} holds the rendered scripts", dir.display());
            return exit::ERROR;
        }
    };
    let record = bundle::format::SlurmRecord {
        array_job_id: submitted.array.id,
        merge_job_id: submitted.merge.id,
        cluster: submitted.array.cluster.clone(),
        engines: engines.clone(),
    };
    if let Err(e) = run::ledger::Ledger::record_slurm(&dir, record) {
        eprintln!("warning: submitted, but the job ids could not be recorded in the manifest: {e}");
    }
    println!(
        "submitted {} engines as job array {} and the merge as job {}",
        engines.len(),
        submitted.array,
        submitted.merge
    );
    println!("bundle: {}", dir.display());
    println!("follow it with `runner status {}`", dir.display());
    exit::OK
}

fn submit_k8s(path: &Path, results: &Path, gpus: Option<u32>, image: String) -> i32 {
    let (_, plan, _) = match load_plan(path) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let engines = engine_names(&plan);
    let mount = "/work";
    let options = cluster::k8s::K8sOptions {
        image,
        namespace: None,
        claim: "runner-work".into(),
        mount_path: mount.into(),
        runner: "/usr/local/bin/runner".into(),
        gpus_per_engine: gpus,
        kubectl_image: "bitnami/kubectl".into(),
    };
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plan.toml".into());
    let plan_in = format!("{mount}/plans/{file}");
    let bundle_in = format!("{mount}/{}/{}/submitted", results.display(), plan.name);
    let sub = cluster::k8s::K8sSubmission {
        plan_name: &plan.name,
        plan: &plan_in,
        bundle: &bundle_in,
        engines: &engines,
        options: &options,
    };
    match sub.render() {
        Ok(yaml) => {
            print!("{yaml}");
            exit::OK
        }
        Err(e) => {
            eprintln!("error: cannot render the Kubernetes objects: {e}");
            exit::INVALID
        }
    }
}

fn status(dir: &Path) -> i32 {
    let loaded = match bundle::read::load(dir) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: failed to read bundle: {e}");
            return exit::ERROR;
        }
    };
    let m = &loaded.manifest;
    println!(
        "bundle {}: {}",
        dir.display(),
        bundle::format::label(&m.status)
    );
    let Some(slurm) = &m.slurm else {
        println!("not submitted to a scheduler (no Slurm jobs recorded)");
        return exit::OK;
    };
    let array = cluster::slurm::JobId {
        id: slurm.array_job_id,
        cluster: slurm.cluster.clone(),
    };
    let merge = cluster::slurm::JobId {
        id: slurm.merge_job_id,
        cluster: slurm.cluster.clone(),
    };
    let (squeue, sacct, notes) = job_rows(&[array.clone(), merge.clone()]);
    for n in &notes {
        println!("note: {n}");
    }
    let jobs = cluster::status::engine_jobs(&slurm.engines, &array, &squeue, &sacct);
    for (i, (engine, job)) in jobs.iter().enumerate() {
        let part = run::merge::part_dir(dir, engine);
        let part_state = bundle::read::load(&part)
            .ok()
            .map(|p| bundle::format::label(&p.manifest.status));
        let job_text = match job {
            cluster::status::EngineJob::Queued { state, node } => format!(
                "{}{}",
                job_state(state),
                node.as_deref()
                    .map(|n| format!(" on {n}"))
                    .unwrap_or_default()
            ),
            cluster::status::EngineJob::Ended {
                state,
                node,
                exit_code,
            } => format!(
                "{}{}{}",
                job_state(state),
                node.as_deref()
                    .map(|n| format!(" on {n}"))
                    .unwrap_or_default(),
                exit_code
                    .as_deref()
                    .map(|c| format!(", exit {c}"))
                    .unwrap_or_default()
            ),
            cluster::status::EngineJob::Unknown => "not in the queue".to_string(),
        };
        println!(
            "{engine}: job {}_{i} {job_text}; part {}",
            array.id,
            part_state.unwrap_or_else(|| "not written".into())
        );
    }
    let merge_row = squeue
        .iter()
        .chain(sacct.iter())
        .find(|r| r.job.id == merge.id);
    println!(
        "merge: job {} {}",
        merge.id,
        merge_row.map_or_else(|| "not in the queue".to_string(), |r| job_state(&r.state))
    );
    exit::OK
}

fn job_state(s: &cluster::slurm::JobState) -> String {
    match s {
        cluster::slurm::JobState::Other(o) => o.clone(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// squeue's and sacct's rows for `jobs`, and notes on what could not be asked.
fn job_rows(
    jobs: &[cluster::slurm::JobId],
) -> (
    Vec<cluster::slurm::JobRow>,
    Vec<cluster::slurm::JobRow>,
    Vec<String>,
) {
    let mut notes = Vec::new();
    let run = |argv: &[String]| {
        std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .output()
    };
    let squeue = match run(&cluster::slurm::squeue_args(jobs)) {
        Ok(out) if out.status.success() => cluster::slurm::parse_squeue(&String::from_utf8_lossy(
            &out.stdout,
        ))
        .unwrap_or_else(|e| {
            notes.push(format!("squeue: {e}"));
            Vec::new()
        }),
        Ok(out) => {
            notes.push(format!(
                "squeue failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            Vec::new()
        }
        Err(e) => {
            notes.push(format!("cannot run squeue: {e}"));
            Vec::new()
        }
    };
    let sacct = match run(&cluster::slurm::sacct_args(jobs)) {
        Ok(out) => cluster::slurm::sacct_outcome(
            out.status.success(),
            &out.status.to_string(),
            &String::from_utf8_lossy(&out.stdout),
            &String::from_utf8_lossy(&out.stderr),
        )
        .unwrap_or_else(|e| {
            notes.push(e.to_string());
            Vec::new()
        }),
        Err(e) => {
            notes.push(format!("cannot run sacct: {e}"));
            Vec::new()
        }
    };
    (squeue, sacct, notes)
}

fn export(dir: &Path, format: cli::ExportFormat, output: Option<&Path>) -> i32 {
    let loaded = match bundle::read::load(dir) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: failed to read bundle: {e}");
            return exit::ERROR;
        }
    };
    let (name, out) = match format {
        cli::ExportFormat::LlmD => ("llm-d", exports::llm_d::export(&loaded)),
        cli::ExportFormat::Vllm => ("vllm", exports::vllm::export(&loaded)),
    };
    let target = output.map_or_else(|| dir.join("export").join(name), Path::to_path_buf);
    if let Err(e) = std::fs::create_dir_all(&target) {
        eprintln!("error: cannot create {}: {e}", target.display());
        return exit::ERROR;
    }
    for f in &out.files {
        let path = target.join(&f.name);
        let mut bytes = match serde_json::to_vec_pretty(&f.json) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: cannot encode {}: {e}", path.display());
                return exit::ERROR;
            }
        };
        bytes.push(b'\n');
        if let Err(e) = bundle::write::atomic_write(&path, &bytes) {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    }
    for s in &out.skipped {
        println!("skipped {}: {}", s.cell, s.reason);
    }
    println!(
        "wrote {} {name} files to {}",
        out.files.len(),
        target.display()
    );
    exit::OK
}
