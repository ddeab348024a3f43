//! The power, energy and cost view of a bundle: per cell the GPUs' mean and peak power, the
//! energy and where it came from, joules per output token and per request, and dollars per
//! million output tokens from the machine's hourly price and from the electricity's; the same
//! figures as CSV columns and as metrics `runner compare` judges (lower is better).

use serde::Serialize;

use crate::bundle::format::CellSummary;
use crate::metrics::energy::{
    usd_per_million_tokens_from_energy, usd_per_million_tokens_from_time, Energy,
};
use crate::plan::model::Plan;

/// The plan's prices (`[cost]`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Prices {
    pub usd_per_hour: Option<f64>,
    pub usd_per_kwh: Option<f64>,
}

impl Prices {
    pub fn of(plan: &Plan) -> Prices {
        Prices {
            usd_per_hour: plan.usd_per_hour,
            usd_per_kwh: plan.usd_per_kwh,
        }
    }
}

/// A cell's energy figures, and its rates where the cell is a result (valid, measured).
struct Figures<'a> {
    energy: Option<&'a Energy>,
    /// Output tokens/s of a valid cell.
    tok_per_s: Option<f64>,
    /// Joules per output token and per request, of a valid cell.
    j_per_token: Option<f64>,
    j_per_request: Option<f64>,
}

fn figures(c: &CellSummary) -> Figures<'_> {
    let energy = c.resources.as_ref().and_then(|r| r.energy.as_ref());
    let valid = c
        .metrics
        .as_ref()
        .filter(|m| c.valid && m.requests_ok > 0 && m.output_tok_per_s > 0.0);
    Figures {
        energy,
        tok_per_s: valid.map(|m| m.output_tok_per_s),
        j_per_token: valid.and(energy).and_then(|e| e.energy_j_per_output_token),
        j_per_request: valid.and(energy).and_then(|e| e.energy_j_per_request),
    }
}

/// Dollars per million output tokens of a cell: from time (`usd_per_hour`) and from energy
/// (`usd_per_kwh`), where the cell is a result and the plan has the price.
pub fn usd_per_million_tokens(c: &CellSummary, p: &Prices) -> (Option<f64>, Option<f64>) {
    let f = figures(c);
    let time = f
        .tok_per_s
        .zip(p.usd_per_hour)
        .map(|(t, h)| usd_per_million_tokens_from_time(t, h));
    let energy = f
        .j_per_token
        .zip(p.usd_per_kwh)
        .map(|(j, k)| usd_per_million_tokens_from_energy(j, k));
    (time, energy)
}

/// One cell's row of the report's energy table; numbers formatted, a dash where absent.
#[derive(Debug, Clone, Serialize)]
pub struct EnergyRow {
    pub engine: String,
    pub level: String,
    /// "mean / peak" watts, summed over the cell's GPUs.
    pub power_w: String,
    pub energy_j: String,
    /// "energy counter" or "integral of sampled power".
    pub source: String,
    pub j_per_output_token: String,
    pub j_per_request: String,
    pub usd_per_m_tokens_time: String,
    pub usd_per_m_tokens_energy: String,
    /// Why figures are missing, when some are.
    pub note: Option<String>,
}

const DASH: &str = "-";

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or(DASH.into(), |v| format!("{v:.digits$}"))
}

/// The energy rows of a workload's cells, in the given order; empty when no cell has GPU
/// power telemetry (no NVML), so the report leaves the table out.
pub fn rows(cells: &[&CellSummary], p: &Prices) -> Vec<EnergyRow> {
    cells
        .iter()
        .filter_map(|c| {
            let f = figures(c);
            let e = f.energy?;
            let (time, energy) = usd_per_million_tokens(c, p);
            Some(EnergyRow {
                engine: c.engine.clone(),
                level: c.level.label(),
                power_w: match (e.power_mean_w, e.power_peak_w) {
                    (None, None) => DASH.into(),
                    (m, pk) => format!("{} / {}", fmt(m, 1), fmt(pk, 1)),
                },
                energy_j: fmt(e.energy_j, 1),
                source: e.energy_source.map_or(DASH.into(), |s| s.label().into()),
                j_per_output_token: fmt(f.j_per_token, 4),
                j_per_request: fmt(f.j_per_request, 2),
                usd_per_m_tokens_time: fmt(time, 3),
                usd_per_m_tokens_energy: fmt(energy, 4),
                note: e.unavailable_reason.clone(),
            })
        })
        .collect()
}

/// The CSV's energy and cost columns, after the others.
pub const CSV_HEADER: &[&str] = &[
    "power_mean_w",
    "power_peak_w",
    "energy_j",
    "energy_source",
    "energy_j_per_output_token",
    "energy_j_per_request",
    "usd_per_m_output_tokens_time",
    "usd_per_m_output_tokens_energy",
];

/// A cell's fields for `CSV_HEADER`; empty where absent.
pub fn csv_fields(c: &CellSummary, p: &Prices) -> Vec<String> {
    let f = figures(c);
    let e = f.energy;
    let num = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
    let (time, energy) = usd_per_million_tokens(c, p);
    vec![
        num(e.and_then(|e| e.power_mean_w)),
        num(e.and_then(|e| e.power_peak_w)),
        num(e.and_then(|e| e.energy_j)),
        e.and_then(|e| e.energy_source)
            .map_or(String::new(), |s| crate::bundle::format::label(&s)),
        num(f.j_per_token),
        num(f.j_per_request),
        num(time),
        num(energy),
    ]
}

/// An energy metric `runner compare` judges; lower is better for each.
pub struct CompareDef {
    pub key: &'static str,
    pub pick: fn(&CellSummary) -> Option<f64>,
}

/// The energy metrics compared between bundles.
pub const COMPARED: &[CompareDef] = &[
    CompareDef {
        key: "energy_j_per_output_token",
        pick: |c| figures(c).j_per_token,
    },
    CompareDef {
        key: "energy_j_per_request",
        pick: |c| figures(c).j_per_request,
    },
    CompareDef {
        key: "power_mean_w",
        pick: |c| figures(c).energy.and_then(|e| e.power_mean_w),
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::format::CellStatus;
    use crate::metrics::sampler::Resources;
    use crate::plan::model::LoadLevel;

    fn cell(valid: bool, energy: Option<Energy>) -> CellSummary {
        let metrics: crate::metrics::summary::CellMetrics =
            serde_json::from_value(serde_json::json!({
                "requests_total": 4, "requests_ok": 4, "requests_failed": 0,
                "failures": {}, "failure_examples": {}, "duration_s": 2.0,
                "request_per_s": 2.0, "output_tok_per_s": 1000.0, "total_tok_per_s": 1000.0,
                "input_tokens": 0, "output_tokens": 2000, "output_tokens_source": "usage",
                "token_count_mismatches": 0, "retries": 0, "requests_retried": 0,
                "short_outputs": 0, "goodput_req_per_s": null, "ttft_ms": null,
                "tpot_ms": null, "itl_ms": null, "e2e_ms": null, "ttfb_ms": null,
                "dispatch_lag_ms": null, "offered_req_per_s": null, "sent_req_per_s": null
            }))
            .expect("metrics");
        serde_json::from_value(serde_json::json!({
            "id": "e.w.c1", "engine": "e", "workload": "w",
            "level": LoadLevel::Concurrency(1), "status": CellStatus::Ok,
            "reason": null, "valid": valid, "started_at": null, "finished_at": null,
            "metrics": metrics, "resources": Resources { energy, ..Resources::default() },
            "slo": null, "records": null
        }))
        .expect("cell")
    }

    fn sample_energy() -> Energy {
        let mut e = Energy {
            devices: vec![0],
            power_samples: 3,
            span_s: 2.5,
            power_mean_w: Some(360.0),
            power_peak_w: Some(400.0),
            energy_j: Some(900.0),
            energy_source: Some(crate::metrics::energy::EnergySource::Counter),
            ..Energy::default()
        };
        e.derive(1000.0, 2.0);
        e
    }

    #[test]
    fn cost_per_million_tokens_from_time_and_from_energy() {
        let p = Prices {
            usd_per_hour: Some(3.6),
            usd_per_kwh: Some(0.36),
        };
        let c = cell(true, Some(sample_energy()));
        // 900 J over 2.5 s is 360 W; at 1000 tok/s that is 0.36 J per token, so a million
        // tokens take 0.1 kWh: $0.036 at $0.36 per kWh. $3.60 an hour at 1000 tok/s: $1.
        let (time, energy) = usd_per_million_tokens(&c, &p);
        assert!((time.expect("time") - 1.0).abs() < 1e-12);
        assert!((energy.expect("energy") - 0.036).abs() < 1e-12);
        let r = &rows(&[&c], &p)[0];
        assert_eq!(r.power_w, "360.0 / 400.0");
        assert_eq!(r.j_per_output_token, "0.3600");
        assert_eq!(r.j_per_request, "180.00");
        assert_eq!(r.source, "energy counter");
        let f = csv_fields(&c, &p);
        assert_eq!(f.len(), CSV_HEADER.len());
        assert_eq!(f[3], "counter");
        assert_eq!(f[4], "0.360000");
        // An invalid cell keeps its power but gives no per-token figure or cost.
        let bad = cell(false, Some(sample_energy()));
        assert_eq!(usd_per_million_tokens(&bad, &p), (None, None));
        assert_eq!(rows(&[&bad], &p)[0].j_per_output_token, "-");
        assert_eq!(rows(&[&bad], &p)[0].power_w, "360.0 / 400.0");
        // Without GPU telemetry there is no row at all.
        assert!(rows(&[&cell(true, None)], &p).is_empty());
        assert_eq!((COMPARED[0].pick)(&c), Some(0.36));
    }
}
