//! Every example plan in plans/ is valid on this machine (programs missing here are warnings).

mod common;

use std::process::Command;

#[test]
fn every_example_plan_validates() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut n = 0;
    for e in std::fs::read_dir(format!("{root}/plans")).expect("plans/") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "toml") {
            n += 1;
            // The CPU case study counts prompt tokens with the tiny model's own tokenizer, which
            // engines/make_tiny_models.py makes (engines/cpu_case_study.sh runs both): before
            // that, the plan cannot be resolved on this machine.
            let plan = std::fs::read_to_string(&p).expect("plan");
            let models = std::path::Path::new(root).join("target/tiny-models/tiny-llama");
            if plan.contains("tokenizer = \"../target/tiny-models/") && !models.is_dir() {
                eprintln!(
                    "skipped {}: {} is made by engines/make_tiny_models.py",
                    p.display(),
                    models.display()
                );
                continue;
            }
            let out = Command::new(common::RUNNER)
                .arg("validate")
                .arg(&p)
                .current_dir(root)
                .output()
                .expect("run validate");
            assert!(
                out.status.success(),
                "{}: {}",
                p.display(),
                common::text(&out)
            );
        }
    }
    assert!(n >= 2, "plans/ has the quickstart and the day 2 case study");
}
