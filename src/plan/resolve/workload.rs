//! Resolving `[[workload]]` tables: prompts, request shape, SLO.

use toml::Spanned;

use super::source;
use super::Resolver;
use crate::plan::model::*;
use crate::plan::prompts;
use crate::plan::raw::*;

impl Resolver<'_> {
    pub(super) fn workload(
        &mut self,
        w: &RawWorkload,
        default_load: &RawLoad,
    ) -> Option<WorkloadSpec> {
        let name_ok = self.safe_name(&w.name, "workload");
        let name = w.name.get_ref().clone();
        let sources = [
            w.prompts.as_ref().map(|p| p.span()),
            w.prompts_file.as_ref().map(|p| p.span()),
            w.documents.as_ref().map(|p| p.span()),
            w.synthetic.as_ref().map(|p| p.span()),
            w.dataset.as_ref().map(|p| p.span()),
        ];
        let given: Vec<_> = sources.iter().flatten().cloned().collect();
        let source_hint = "use exactly one of `prompts = [...]`, `prompts_file = \"...\"`, `[workload.documents]`, `[workload.synthetic]` or `[workload.dataset]`";
        if given.len() != 1 {
            let span = given.get(1).cloned().unwrap_or(w.name.span());
            let msg = if given.is_empty() {
                format!("workload `{name}` has no prompts")
            } else {
                format!("workload `{name}` has more than one prompt source")
            };
            self.error_at(span, msg, Some(source_hint.into()));
            return None;
        }
        let sessions = self.sessions(w);
        let tokenizer = self.tokenizer(w).ok()?;
        let counter = source::counter(tokenizer.as_ref());
        let wanted_max = w
            .max_tokens
            .as_ref()
            .map_or(Some(128), |m| self.positive(m, "`max_tokens`", 1_000_000));
        // Sources of `src/workload/` build their requests (and lengths) themselves; the plan's
        // own prompts (and today's word synthetic) are counted here.
        let built = match (&w.synthetic, &w.dataset) {
            (Some(s), _)
                if !(s.get_ref().is_legacy() && tokenizer.is_none() && w.sessions.is_none()) =>
            {
                Some(self.synthetic(s, w, tokenizer.as_ref())?)
            }
            (_, Some(d)) => {
                Some(self.dataset(d, w, wanted_max.map(|m| m as u32), tokenizer.as_ref())?)
            }
            _ => None,
        };
        let loaded = if built.is_some() {
            Ok((String::new(), Vec::new()))
        } else if let Some(p) = &w.prompts {
            Ok((
                "inline".to_string(),
                p.get_ref().iter().cloned().map(Prompt::Text).collect(),
            ))
        } else if let Some(f) = &w.prompts_file {
            let path = self.relative(f.get_ref());
            prompts::from_file(&path)
                .map(|p| (format!("file {}", f.get_ref()), p))
                .map_err(|e| (f.span(), e))
        } else if let Some(d) = &w.documents {
            let d = d.get_ref();
            let path = self.relative(d.file.get_ref());
            let marker = d.marker.clone().unwrap_or_else(|| "[DOC]".into());
            let template = d.template.as_ref().map(|t| t.get_ref().clone());
            if let Some(t) = &d.template {
                if !t.get_ref().contains("{doc}") {
                    self.error_at(
                        t.span(),
                        "the documents `template` has no `{doc}`",
                        Some("put `{doc}` where each document's text goes".into()),
                    );
                }
            }
            prompts::from_documents(&path, &marker, template.as_deref().unwrap_or("{doc}"))
                .map(|p| {
                    (
                        format!("documents {} split on {marker}", d.file.get_ref()),
                        p,
                    )
                })
                .map_err(|e| (d.file.span(), e))
        } else if let Some(s) = &w.synthetic {
            let s = s.get_ref();
            let Some(input_tokens) = &s.input_tokens else {
                return None;
            };
            match (
                self.positive(input_tokens, "`input_tokens`", 1_000_000),
                s.count
                    .as_ref()
                    .map_or(Some(16), |c| self.positive(c, "`count`", 1_000_000)),
            ) {
                (Some(len), Some(count)) if len * count > 50_000_000 => {
                    self.error_at(
                        input_tokens.span(),
                        format!("{count} synthetic prompts of {len} words is more text than a benchmark needs"),
                        Some("keep `input_tokens x count` under 50 million words; requests reuse prompts in turn".into()),
                    );
                    return None;
                }
                (Some(len), Some(count)) => {
                    let seed = s.seed.unwrap_or(0);
                    Ok((
                        format!("synthetic {len} words x {count}, seed {seed}"),
                        prompts::synthetic(len as usize, count as usize, seed),
                    ))
                }
                _ => return None,
            }
        } else {
            return None;
        };
        // The bound on every request's `max_tokens`: the source's own where it sets them.
        let own_max = built.as_ref().and_then(|b| b.max_tokens).map(u64::from);
        let max_tokens = wanted_max.map(|m| match own_max {
            Some(own) if w.max_tokens.is_none() => own,
            Some(own) => m.max(own),
            None => m,
        });
        let (source, prompts, shapes) = match (loaded, built) {
            (_, Some(b)) => (b.source, b.prompts, b.shapes),
            (Ok((source, prompts)), None) => {
                let mut shapes = Vec::with_capacity(prompts.len());
                for p in &prompts {
                    match source::shape_of(p, &counter) {
                        Ok(s) => shapes.push(s),
                        Err(e) => {
                            self.error_at(given[0].clone(), e, None);
                            return None;
                        }
                    }
                }
                (source, prompts, shapes)
            }
            (Err((span, e)), None) => {
                self.error_at(span, e.message, e.hint);
                return None;
            }
        };
        let source = match &sessions {
            Some(Some(spec)) => {
                let mut ids: Vec<u64> = shapes.iter().filter_map(|s| s.session).collect();
                ids.dedup();
                let mut s = match w.dataset {
                    Some(_) => format!("{source}, {} conversations as sessions", ids.len()),
                    None => source,
                };
                if !spec.think_time.is_zero() {
                    s.push_str(&format!(
                        ", think time {}",
                        humantime::format_duration(spec.think_time)
                    ));
                }
                s
            }
            _ => source,
        };
        if prompts.is_empty() {
            self.error_at(
                given[0].clone(),
                format!("workload `{name}` has no prompts"),
                Some("the prompt source is empty; add prompts".into()),
            );
            return None;
        }

        let min_tokens = match &w.min_tokens {
            None => Some(None),
            Some(m) => match (self.positive(m, "`min_tokens`", 1_000_000), max_tokens) {
                (Some(v), Some(max)) if v > max => {
                    self.error_at(
                        m.span(),
                        format!("`min_tokens` ({v}) is above `max_tokens` ({max})"),
                        Some("set `min_tokens = max_tokens` for a fixed output length".into()),
                    );
                    None
                }
                (v, _) => v.map(|v| Some(v as u32)),
            },
        };
        let repeat = w
            .repeat
            .as_ref()
            .map_or(Some(1), |r| self.positive(r, "`repeat`", 1_000_000));
        let temperature = match &w.temperature {
            None => 0.0,
            Some(t) if (0.0..=2.0).contains(t.get_ref()) => *t.get_ref(),
            Some(t) => {
                self.error_at(t.span(), "`temperature` must be between 0 and 2", None);
                0.0
            }
        };
        let slo = w.slo.as_ref().map(|s| self.slo(s)).unwrap_or_default();
        let mut search = match &w.search {
            None => None,
            Some(sp) => {
                if slo.is_empty() {
                    self.error_at(
                        sp.span(),
                        format!("workload `{name}` has a `[workload.search]` but no SLO to search under"),
                        Some("add `[workload.slo]` with e.g. `ttft_p95_ms = 2000`".into()),
                    );
                }
                self.search(sp.get_ref())
            }
        };
        // A trace is its own schedule: one open-loop pass over it at the recorded offsets.
        let trace: Vec<u64> = shapes
            .iter()
            .filter_map(|s| s.scheduled_offset_us)
            .collect();
        let is_trace = !trace.is_empty();
        if let (true, Some(own)) = (is_trace, &w.load) {
            if let Some(span) = own
                .concurrency
                .as_ref()
                .map(|c| c.span())
                .or(own.rate.as_ref().map(|r| r.span()))
            {
                self.error_at(
                    span,
                    format!("workload `{name}` replays a trace, which sets its own schedule"),
                    Some("remove `concurrency`/`rate` from `[workload.load]`; `time_scale` speeds the trace up or slows it down".into()),
                );
                return None;
            }
        }
        let mut load = self.load(
            &name,
            w.load.as_ref(),
            default_load,
            prompts.len() as u64 * repeat.unwrap_or(1),
            search.is_some() || is_trace,
        );
        if let (true, Some(l)) = (is_trace, load.as_mut()) {
            let span_s = trace.last().copied().unwrap_or(0) as f64 / 1e6;
            // The level's label: the trace's mean rate.
            let rate = if span_s > 0.0 {
                (trace.len() - 1).max(1) as f64 / span_s
            } else {
                1.0
            };
            l.levels = vec![LoadLevel::Rate((rate * 1000.0).round() / 1000.0)];
            l.stop = StopRule::Requests(trace.len() as u64);
            l.warmup = 0;
        }
        if let Some(l) = &load {
            self.check_reach(&name, w, l, search.as_mut());
        }
        if let (Some(Some(_)), Some(l)) = (&sessions, &load) {
            let open = l.levels.iter().any(|l| l.rate().is_some())
                || search.is_some_and(|s| s.over == SearchOver::Rate);
            if open {
                let span = w
                    .load
                    .as_ref()
                    .and_then(|l| l.rate.as_ref())
                    .or(default_load.rate.as_ref())
                    .map(|r| r.span())
                    .or(w.search.as_ref().map(|s| s.span()))
                    .unwrap_or(w.name.span());
                self.error_at(
                    span,
                    format!("workload `{name}` sends sessions, which run closed loop"),
                    Some("use `concurrency = [...]` (sessions in flight) for a `[workload.sessions]` workload".into()),
                );
                return None;
            }
        }
        match (load, name_ok, max_tokens, repeat, min_tokens, sessions) {
            (
                Some(load),
                true,
                Some(max_tokens),
                Some(repeat),
                Some(min_tokens),
                Some(sessions),
            ) => Some(WorkloadSpec {
                name,
                source,
                prompts,
                shapes,
                unit: counter.unit(),
                tokenizer: tokenizer.map(|(_, p)| p),
                sessions,
                max_tokens: max_tokens as u32,
                min_tokens,
                temperature,
                ignore_eos: w.ignore_eos.unwrap_or(false),
                allow_empty_output: w.allow_empty_output.unwrap_or(false),
                stream: w.stream.unwrap_or(true),
                repeat: repeat as u32,
                load,
                slo,
                search,
                matrix: MatrixValues::default(),
            }),
            _ => None,
        }
    }

    /// `[workload.sessions]`: `Some(None)` without one, `None` after reporting a bad one.
    fn sessions(&mut self, w: &RawWorkload) -> Option<Option<SessionsSpec>> {
        let Some(s) = &w.sessions else {
            return Some(None);
        };
        let r = s.get_ref();
        let sharegpt = w
            .dataset
            .as_ref()
            .is_some_and(|d| d.get_ref().format.get_ref() == "sharegpt");
        if !(sharegpt || w.synthetic.is_some()) {
            self.error_at(
                s.span(),
                "`[workload.sessions]` needs a ShareGPT dataset or `[workload.synthetic]`",
                Some("sessions are whole ShareGPT conversations (`[workload.dataset] format = \"sharegpt\"`) or synthetic turns (`turns = T`)".into()),
            );
            return None;
        }
        if let (true, Some(t)) = (sharegpt, &r.turns) {
            self.error_at(
                t.span(),
                "`turns` applies to `[workload.synthetic]` sessions",
                Some("remove `turns`: a ShareGPT conversation has its own turns".into()),
            );
            return None;
        }
        let errors = self.diags.len();
        let think_time = self.duration(&r.think_time, std::time::Duration::ZERO);
        if self.diags.len() > errors {
            return None;
        }
        Some(Some(SessionsSpec { think_time }))
    }

    pub(super) fn slo(&mut self, s: &Spanned<RawSlo>) -> Vec<SloRule> {
        use Percentile::*;
        use SloMetric::*;
        let r = s.get_ref();
        let all = [
            (Ttft, P50, r.ttft_p50_ms),
            (Ttft, P90, r.ttft_p90_ms),
            (Ttft, P95, r.ttft_p95_ms),
            (Ttft, P99, r.ttft_p99_ms),
            (Tpot, P50, r.tpot_p50_ms),
            (Tpot, P90, r.tpot_p90_ms),
            (Tpot, P95, r.tpot_p95_ms),
            (Tpot, P99, r.tpot_p99_ms),
            (Itl, P50, r.itl_p50_ms),
            (Itl, P90, r.itl_p90_ms),
            (Itl, P95, r.itl_p95_ms),
            (Itl, P99, r.itl_p99_ms),
            (E2e, P50, r.e2e_p50_ms),
            (E2e, P90, r.e2e_p90_ms),
            (E2e, P95, r.e2e_p95_ms),
            (E2e, P99, r.e2e_p99_ms),
        ];
        let mut rules = Vec::new();
        for (metric, percentile, v) in all {
            let Some(max_ms) = v else { continue };
            let rule = SloRule {
                metric,
                percentile,
                max_ms,
            };
            if !(max_ms > 0.0 && max_ms.is_finite()) {
                self.error_at(
                    s.span(),
                    format!("SLO `{}` = {max_ms} can never be met", rule.key()),
                    Some("an SLO threshold is a positive number of milliseconds".into()),
                );
                continue;
            }
            rules.push(rule);
        }
        if rules.is_empty() && self.diags.iter().all(|d| !d.is_error()) {
            self.warn_at(
                s.span(),
                "`[workload.slo]` sets no threshold",
                Some("add e.g. `ttft_p95_ms = 2000`, or remove the table".into()),
            );
        }
        rules
    }
}
