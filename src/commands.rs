//! One function per subcommand, each returning the exit code: what `runner` does for
//! `exec`, `validate`, `recover`, `report`, `compare`, `list`, `probe` and `engine`.

use std::path::Path;

use crate::cli::{self, Command, EngineCommand};
use crate::error::exit;
use crate::plan::{self, check, diagnostic::Diagnostics, resolve::ResolveContext};
use crate::{builtin, bundle, probe, report, run};

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
        } => exec(&plan, &results, quiet, resume),
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

fn exec(path: &Path, results: &Path, quiet: bool, resume: Option<std::path::PathBuf>) -> i32 {
    let (bytes, plan, warnings) = match load_plan(path) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if !warnings.0.is_empty() && !quiet {
        eprint!("{warnings}");
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
    };
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
                    for line in &out.requests_failed {
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
        Err(e @ run::error::RunError::Resume { .. }) => {
            eprintln!("error: {e}");
            exit::INVALID
        }
        Err(e) => {
            eprintln!("error: the run failed: {e}");
            exit::ERROR
        }
    }
}
