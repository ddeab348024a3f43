//! Kubernetes: an Indexed Job that runs one engine of a plan per completion index, and a merge
//! Job, rendered as YAML text for `runner submit --k8s`. Every string is a YAML double-quoted
//! scalar ([`yaml_str`]), so no plan or engine name can change the manifest's structure.

use super::quote::{shell_word, yaml_str};
use super::slurm::RenderError;

/// Where the plan, bundle and runner live inside the container, and what the pods get.
#[derive(Debug, Clone, PartialEq)]
pub struct K8sOptions {
    pub image: String,
    pub namespace: Option<String>,
    /// A ReadWriteMany claim mounted at `mount_path`, holding the plan and the bundle; every
    /// engine's pod writes its part there, and the merge Job reads them.
    pub claim: String,
    pub mount_path: String,
    /// The runner binary inside the image.
    pub runner: String,
    /// `nvidia.com/gpu` each engine's pod asks for; none asks for no GPU.
    pub gpus_per_engine: Option<u32>,
    /// An image with `/bin/sh` and `kubectl`, for the merge Job's wait on the engines' Job.
    pub kubectl_image: String,
}

/// One submission: plan and bundle are paths inside the container (under `mount_path`).
#[derive(Debug, Clone)]
pub struct K8sSubmission<'a> {
    pub plan_name: &'a str,
    pub plan: &'a str,
    pub bundle: &'a str,
    pub engines: &'a [String],
    pub options: &'a K8sOptions,
}

/// A Kubernetes object name (RFC 1123 label): lower case alphanumerics and `-`, at most 63.
pub fn object_name(plan_name: &str, suffix: &str) -> String {
    let mut clean: String = plan_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while clean.contains("--") {
        clean = clean.replace("--", "-");
    }
    let clean = clean.trim_matches('-');
    let head = format!("runner-{clean}");
    // Room for "-" and the suffix within 63 characters.
    let room = 63usize.saturating_sub(suffix.len() + 1);
    let head: String = head.chars().take(room).collect();
    format!("{}-{suffix}", head.trim_end_matches('-'))
}

impl K8sSubmission<'_> {
    /// The shell script each engine's pod runs: `JOB_COMPLETION_INDEX` picks the engine.
    fn engine_script(&self) -> String {
        let mut s = String::from("set -eu\ncase \"${JOB_COMPLETION_INDEX:?}\" in\n");
        for (i, engine) in self.engines.iter().enumerate() {
            s.push_str(&format!("  {i}) engine={} ;;\n", shell_word(engine)));
        }
        s.push_str(
            "  *) echo \"runner: no engine for index $JOB_COMPLETION_INDEX\" >&2; exit 2 ;;\n",
        );
        s.push_str("esac\n");
        s.push_str(&format!(
            "exec {} exec {} --engine \"$engine\" --part {}\n",
            shell_word(&self.options.runner),
            shell_word(self.plan),
            shell_word(self.bundle)
        ));
        s
    }

    fn metadata(&self, out: &mut String, name: &str, role: &str) {
        out.push_str("metadata:\n");
        out.push_str(&format!("  name: {}\n", yaml_str(name)));
        if let Some(ns) = &self.options.namespace {
            out.push_str(&format!("  namespace: {}\n", yaml_str(ns)));
        }
        out.push_str("  labels:\n");
        out.push_str("    app.kubernetes.io/name: \"runner\"\n");
        out.push_str(&format!(
            "    app.kubernetes.io/component: {}\n",
            yaml_str(role)
        ));
        out.push_str("  annotations:\n");
        out.push_str(&format!("    runner/plan: {}\n", yaml_str(self.plan_name)));
    }

    fn pod(&self, out: &mut String, command: &[&str], gpus: Option<u32>) {
        let o = self.options;
        out.push_str("  template:\n");
        out.push_str("    spec:\n");
        out.push_str("      restartPolicy: \"Never\"\n");
        out.push_str("      containers:\n");
        out.push_str("        - name: \"runner\"\n");
        out.push_str(&format!("          image: {}\n", yaml_str(&o.image)));
        out.push_str("          command:\n");
        for c in command {
            out.push_str(&format!("            - {}\n", yaml_str(c)));
        }
        if let Some(n) = gpus {
            out.push_str("          resources:\n");
            out.push_str("            limits:\n");
            out.push_str(&format!("              nvidia.com/gpu: {n}\n"));
        }
        out.push_str("          volumeMounts:\n");
        out.push_str("            - name: \"results\"\n");
        out.push_str(&format!(
            "              mountPath: {}\n",
            yaml_str(&o.mount_path)
        ));
        out.push_str("      volumes:\n");
        out.push_str("        - name: \"results\"\n");
        out.push_str("          persistentVolumeClaim:\n");
        out.push_str(&format!("            claimName: {}\n", yaml_str(&o.claim)));
    }

    /// Both Jobs, as one YAML stream (`kubectl apply -f` reads it). Kubernetes has no
    /// dependency between Jobs: the merge Job waits in an init container until the engines'
    /// Job has ended, complete or failed (the Slurm path's `afterany`).
    pub fn render(&self) -> Result<String, RenderError> {
        if self.engines.is_empty() {
            return Err(RenderError::NoEngines);
        }
        let n = self.engines.len();
        let engines_job = object_name(self.plan_name, "engines");
        let merge_job = object_name(self.plan_name, "merge");
        let mut y = String::new();
        y.push_str(
            "# Rendered by `runner submit --k8s`: one completion index per engine, then a\n",
        );
        y.push_str("# merge Job. Apply with `kubectl apply -f`; the claim must hold the plan.\n");
        y.push_str("apiVersion: \"batch/v1\"\n");
        y.push_str("kind: \"Job\"\n");
        self.metadata(&mut y, &engines_job, "engines");
        y.push_str("spec:\n");
        y.push_str("  completionMode: \"Indexed\"\n");
        y.push_str(&format!("  completions: {n}\n"));
        y.push_str(&format!("  parallelism: {n}\n"));
        // A failed engine is a failed part, recorded by the runner; retrying it would measure
        // it twice.
        y.push_str("  backoffLimit: 0\n");
        let script = self.engine_script();
        self.pod(
            &mut y,
            &["/bin/sh", "-c", &script],
            self.options.gpus_per_engine,
        );
        y.push_str("---\n");
        y.push_str("apiVersion: \"batch/v1\"\n");
        y.push_str("kind: \"Job\"\n");
        self.metadata(&mut y, &merge_job, "merge");
        y.push_str("spec:\n");
        y.push_str("  backoffLimit: 0\n");
        let merge = format!(
            "exec {} merge {}\n",
            shell_word(&self.options.runner),
            shell_word(self.bundle)
        );
        self.pod(&mut y, &["/bin/sh", "-c", &merge], None);
        // The wait: the init container asks the API server for the engines' Job conditions;
        // its service account needs `get` on jobs in the namespace.
        let wait = format!(
            "until kubectl get job {job} -o jsonpath='{{.status.conditions[?(@.status==\"True\")].type}}' | grep -Eq 'Complete|Failed'; do sleep 10; done\n",
            job = shell_word(&engines_job)
        );
        y.push_str("      initContainers:\n");
        y.push_str("        - name: \"wait-for-engines\"\n");
        y.push_str(&format!(
            "          image: {}\n",
            yaml_str(&self.options.kubectl_image)
        ));
        y.push_str("          command:\n");
        for c in ["/bin/sh", "-c", &wait] {
            y.push_str(&format!("            - {}\n", yaml_str(c)));
        }
        Ok(y)
    }
}
