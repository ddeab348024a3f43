//! Resolving `[load]` tables (the plan's default and a workload's own): levels, arrivals, stop
//! rule, timeouts, error limits; and `[[search]]`.

use std::ops::Range;

use super::Resolver;
use crate::plan::defaults;
use crate::plan::model::*;
use crate::plan::raw::*;

impl Resolver<'_> {
    pub(super) fn load(
        &mut self,
        workload: &str,
        own: Option<&RawLoad>,
        default: &RawLoad,
        default_requests: u64,
        searched: bool,
    ) -> Option<LoadSpec> {
        let pick = |f: fn(&RawLoad) -> bool| own.filter(|o| f(o)).unwrap_or(default);
        // `concurrency` and `rate` are one choice: an override of either replaces both.
        let level_src = pick(|l| l.concurrency.is_some() || l.rate.is_some());
        let levels = match (&level_src.concurrency, &level_src.rate) {
            (Some(_), Some(r)) => {
                self.error_at(
                    r.span(),
                    "`concurrency` and `rate` are both set",
                    Some("a level is closed loop (`concurrency`) or open loop (`rate`, requests per second): keep one".into()),
                );
                return None;
            }
            (None, None) if searched => Vec::new(),
            (None, None) => {
                self.error(
                    format!("workload `{workload}` has no load levels"),
                    "add `concurrency = [1, 4, 16]` (closed loop) or `rate = [5.0, 10.0]` (open loop, requests/s) under `[load]` or `[workload.load]`",
                );
                return None;
            }
            (Some(conc), None) => {
                let mut levels = Vec::new();
                for &c in conc.get_ref() {
                    if !(1..=100_000).contains(&c) {
                        self.error_at(
                            conc.span(),
                            format!("concurrency {c} is out of range"),
                            Some(
                                "each level is a number of requests in flight, from 1 to 100000"
                                    .into(),
                            ),
                        );
                        return None;
                    }
                    levels.push(LoadLevel::Concurrency(c as u32));
                }
                self.check_levels(levels, conc.span(), "concurrency")?
            }
            (None, Some(rate)) => {
                let mut levels = Vec::new();
                for &r in rate.get_ref() {
                    if !(r > 0.0 && r <= 10_000_000.0) {
                        self.error_at(
                            rate.span(),
                            format!("rate {r} is out of range"),
                            Some("each level is a number of requests per second, above 0".into()),
                        );
                        return None;
                    }
                    levels.push(LoadLevel::Rate(r));
                }
                self.check_levels(levels, rate.span(), "rate")?
            }
        };
        let arrival_src =
            pick(|l| l.arrival.is_some() || l.seed.is_some() || l.burstiness.is_some());
        let seed = arrival_src.seed.unwrap_or(0);
        let arrival = match arrival_src.arrival.as_ref().map(|a| a.get_ref().as_str()) {
            None | Some("constant") => Arrival::Constant,
            Some("poisson") => Arrival::Poisson { seed },
            Some("gamma") => {
                let b = arrival_src
                    .burstiness
                    .as_ref()
                    .map_or(1.0, |b| *b.get_ref());
                if !(b > 0.0 && b.is_finite()) {
                    if let Some(bs) = &arrival_src.burstiness {
                        self.error_at(
                            bs.span(),
                            "`burstiness` must be above 0",
                            Some("1 is a Poisson process; above 1 is burstier".into()),
                        );
                    }
                    return None;
                }
                Arrival::Gamma {
                    seed,
                    burstiness: b,
                }
            }
            Some(other) => {
                let span = arrival_src.arrival.as_ref().map_or(0..0, |a| a.span());
                self.error_at(
                    span,
                    format!("unknown arrival `{other}`"),
                    Some("use \"constant\", \"poisson\" or \"gamma\"".into()),
                );
                return None;
            }
        };
        let max_in_flight = match &pick(|l| l.max_in_flight.is_some()).max_in_flight {
            None => None,
            Some(m) => Some(self.positive(m, "`max_in_flight`", 1_000_000)? as u32),
        };
        // `requests` and `duration` are one choice: an override of either replaces both.
        let stop_src = if own.is_some_and(|o| o.requests.is_some() || o.duration.is_some()) {
            own.unwrap_or(default)
        } else {
            default
        };
        let stop = match (&stop_src.requests, &stop_src.duration) {
            (Some(_), Some(d)) => {
                self.error_at(
                    d.span(),
                    "`requests` and `duration` are both set",
                    Some(
                        "a level ends after a number of requests or after a duration: keep one"
                            .into(),
                    ),
                );
                return None;
            }
            (Some(r), None) => StopRule::Requests(self.positive(r, "`requests`", 100_000_000)?),
            (None, Some(_)) => {
                StopRule::Duration(self.duration(&stop_src.duration, defaults::LOAD_DURATION))
            }
            (None, None) => StopRule::Requests(default_requests),
        };
        let warmup = match &pick(|l| l.warmup.is_some()).warmup {
            None => defaults::WARMUP,
            Some(w) if (0..=1_000_000).contains(w.get_ref()) => *w.get_ref() as u32,
            Some(w) => {
                self.error_at(w.span(), "`warmup` must be between 0 and 1000000", None);
                return None;
            }
        };
        let total = self.duration(
            &pick(|l| l.request_timeout.is_some()).request_timeout,
            defaults::REQUEST_TIMEOUT,
        );
        let timeouts = TimeoutSpec {
            connect: self.duration(
                &pick(|l| l.connect_timeout.is_some()).connect_timeout,
                defaults::CONNECT_TIMEOUT,
            ),
            first_token: self.duration(
                &pick(|l| l.first_token_timeout.is_some()).first_token_timeout,
                total,
            ),
            idle: self.duration(
                &pick(|l| l.idle_timeout.is_some()).idle_timeout,
                defaults::IDLE_TIMEOUT.min(total),
            ),
            total,
        };
        let max_errors = match &pick(|l| l.max_errors.is_some()).max_errors {
            None => None,
            Some(m) => Some(self.positive(m, "`max_errors`", i64::MAX)?),
        };
        let max_error_rate = match &pick(|l| l.max_error_rate.is_some()).max_error_rate {
            None => None,
            Some(r) if *r.get_ref() > 0.0 && *r.get_ref() <= 1.0 => Some(*r.get_ref()),
            Some(r) => {
                self.error_at(
                    r.span(),
                    "`max_error_rate` must be above 0 and at most 1",
                    Some("e.g. 0.5 ends a level once half its requests fail".into()),
                );
                return None;
            }
        };
        let max_dispatch_lag = self.duration(
            &pick(|l| l.max_dispatch_lag.is_some()).max_dispatch_lag,
            defaults::MAX_DISPATCH_LAG,
        );
        let retries = match &pick(|l| l.retries.is_some()).retries {
            None => defaults::RETRIES,
            Some(r) if (0..=100).contains(r.get_ref()) => *r.get_ref() as u32,
            Some(r) => {
                self.error_at(
                    r.span(),
                    "`retries` must be between 0 and 100",
                    Some("retries apply to 429 and 503 answers only".into()),
                );
                return None;
            }
        };
        let retry_max_wait = self.duration(
            &pick(|l| l.retry_max_wait.is_some()).retry_max_wait,
            defaults::RETRY_MAX_WAIT,
        );
        let closed = levels.iter().all(|l| l.concurrency().is_some());
        let until_failure = self.until_failure(
            pick(|l| l.until_failure.is_some() || l.max_concurrency.is_some()),
            &levels,
            closed,
            stop,
        )?;
        let steady_state = match &pick(|l| l.steady_state.is_some()).steady_state {
            Some(s) if *s.get_ref() && !closed => {
                self.error_at(
                    s.span(),
                    "`steady_state` applies to closed-loop levels only",
                    Some("the steady-state window is where in-flight requests stay at the concurrency; an open loop has no such level: use `concurrency`, or remove `steady_state`".into()),
                );
                return None;
            }
            Some(s) => *s.get_ref(),
            None => false,
        };
        Some(LoadSpec {
            levels,
            arrival,
            max_in_flight,
            stop,
            warmup,
            timeouts,
            max_errors,
            max_error_rate,
            max_dispatch_lag,
            retries,
            retry_max_wait,
            until_failure,
            steady_state,
        })
    }

    /// `until_failure` and `max_concurrency` (read from the same table: one choice).
    fn until_failure(
        &mut self,
        src: &RawLoad,
        levels: &[LoadLevel],
        closed: bool,
        stop: StopRule,
    ) -> Option<Option<UntilFailureSpec>> {
        let on = src.until_failure.as_ref().is_some_and(|u| *u.get_ref());
        match (&src.until_failure, &src.max_concurrency) {
            (_, Some(m)) if !on => {
                self.error_at(
                    m.span(),
                    "`max_concurrency` has no effect without `until_failure = true`",
                    Some("add `until_failure = true`, or remove `max_concurrency`".into()),
                );
                None
            }
            (_, None) if !on => Some(None),
            (Some(u), _) if !closed => {
                self.error_at(
                    u.span(),
                    "`until_failure` applies to closed-loop levels only",
                    Some("it doubles concurrency past the grid: use `concurrency`, or remove `until_failure`".into()),
                );
                None
            }
            (Some(u), None) => {
                self.error_at(
                    u.span(),
                    "`until_failure = true` needs `max_concurrency`, the most it may reach",
                    Some("add e.g. `max_concurrency = 512` beside it".into()),
                );
                None
            }
            (_, Some(m)) => {
                let top = levels
                    .iter()
                    .filter_map(LoadLevel::concurrency)
                    .max()
                    .unwrap_or(0);
                let max = self.positive(m, "`max_concurrency`", 100_000)? as u32;
                if max <= top {
                    self.error_at(
                        m.span(),
                        format!("`max_concurrency` ({max}) is not above the grid's highest concurrency ({top})"),
                        Some("until_failure doubles concurrency past the grid up to `max_concurrency`: raise it".into()),
                    );
                    return None;
                }
                if let StopRule::Requests(n) = stop {
                    if u64::from(max) > n {
                        self.warn_at(
                            m.span(),
                            format!("`max_concurrency` ({max}) is above the {n} requests sent per level: a closed loop never has more than {n} in flight, so levels above it measure {n} at most"),
                            Some(format!("send at least {max} requests per level (`requests`), or lower `max_concurrency`")),
                        );
                    }
                }
                Some(Some(UntilFailureSpec {
                    max_concurrency: max,
                }))
            }
            (None, None) => Some(None),
        }
    }

    /// A closed-loop level has at most `requests` in flight: a concurrency above the requests
    /// per level is never reached. A search is capped there (so it never reports a level it
    /// did not reach), with a warning; a search whose `min` is above it is refused; grid
    /// levels above it are warned about.
    pub(super) fn check_reach(
        &mut self,
        name: &str,
        w: &RawWorkload,
        load: &LoadSpec,
        search: Option<&mut SearchSpec>,
    ) {
        let StopRule::Requests(n) = load.stop else {
            return;
        };
        if let (Some(s), Some(raw)) = (search, &w.search) {
            let reach = n as f64;
            if s.over == SearchOver::Concurrency && s.min > reach {
                self.error_at(
                    raw.span(),
                    format!(
                        "workload `{name}` searches from concurrency {} but sends {n} requests per level: no level of the search is ever reached",
                        s.min
                    ),
                    Some(format!(
                        "send at least {} requests per level (`requests` in `[workload.load]`)",
                        s.max
                    )),
                );
            } else if s.over == SearchOver::Concurrency && s.max > reach {
                self.warn_at(
                    raw.span(),
                    format!(
                        "workload `{name}` searches up to concurrency {} but sends {n} requests per level: the search stops at {n}, the most a level can have in flight",
                        s.max
                    ),
                    Some(format!(
                        "send at least {} requests per level (`requests` in `[workload.load]`) to search that high",
                        s.max
                    )),
                );
                s.max = reach;
            }
        }
        let unreached: Vec<String> = load
            .levels
            .iter()
            .filter_map(|l| match l {
                LoadLevel::Concurrency(c) if u64::from(*c) > n => Some(c.to_string()),
                _ => None,
            })
            .collect();
        if !unreached.is_empty() {
            self.warn_at(
                w.name.span(),
                format!(
                    "workload `{name}` sends {n} requests per level, fewer than concurrency {}: those levels never have that many requests in flight",
                    unreached.join(", ")
                ),
                Some("raise `requests` to at least the highest concurrency, or use `duration`".into()),
            );
        }
    }

    pub(super) fn search(&mut self, s: &RawSearch) -> Option<SearchSpec> {
        let over = match s.over.get_ref().as_str() {
            "concurrency" => SearchOver::Concurrency,
            "rate" => SearchOver::Rate,
            other => {
                self.error_at(
                    s.over.span(),
                    format!("cannot search over `{other}`"),
                    Some(
                        "use \"concurrency\" (closed loop) or \"rate\" (open loop, requests/s)"
                            .into(),
                    ),
                );
                return None;
            }
        };
        let min = s.min.as_ref().map_or(1.0, |m| *m.get_ref());
        let max = *s.max.get_ref();
        let whole = |v: f64| over == SearchOver::Rate || v.fract() == 0.0;
        if !(min > 0.0 && whole(min)) {
            let span = s.min.as_ref().map_or(s.over.span(), |m| m.span());
            self.error_at(
                span,
                "search `min` must be above 0 (a whole number for concurrency)",
                None,
            );
            return None;
        }
        if !(max >= min && whole(max) && max <= 10_000_000.0) {
            self.error_at(
                s.max.span(),
                format!("search `max` ({max}) must be at least `min` ({min})"),
                Some("the search probes levels between `min` and `max`".into()),
            );
            return None;
        }
        let max_steps = match &s.max_steps {
            None => 10,
            Some(m) => self.positive(m, "`max_steps`", 100)? as u32,
        };
        Some(SearchSpec {
            over,
            min,
            max,
            max_steps,
        })
    }

    pub(super) fn check_levels(
        &mut self,
        levels: Vec<LoadLevel>,
        span: Range<usize>,
        key: &str,
    ) -> Option<Vec<LoadLevel>> {
        if levels.is_empty() {
            self.error_at(
                span,
                format!("`{key}` is empty, so the grid has no cells"),
                Some(format!("list at least one level, e.g. `{key} = [1]`")),
            );
            return None;
        }
        for (i, l) in levels.iter().enumerate() {
            if levels[..i].contains(l) {
                self.error_at(
                    span,
                    format!("{key} {} is listed twice", l.magnitude()),
                    Some("list each level once".into()),
                );
                return None;
            }
        }
        Some(levels)
    }
}
