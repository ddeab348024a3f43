//! Charts as SVG (plotters' SVG backend), drawn from a bundle alone: per workload, throughput
//! per load level as grouped bars with each engine's speedup over the baseline, output tokens/s
//! and p95 end-to-end latency against load, TTFT percentiles, and the latency/throughput
//! Pareto view; per plan, memory per engine (idle after load, peak under load). SLO thresholds
//! are drawn where the plan has them. Invalid cells are never drawn.

use plotters::prelude::*;
use serde::Serialize;

use crate::bundle::format::CellSummary;
use crate::bundle::read::LoadedBundle;
use crate::metrics::summary::CellMetrics;
use crate::plan::model::{LoadLevel, SloMetric, WorkloadSpec};

/// One rendered chart.
#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    /// File name stem: the chart is written as `charts/<name>.svg`.
    pub name: String,
    pub title: String,
    pub workload: Option<String>,
    pub svg: String,
}

const W: u32 = 760;
const H: u32 = 400;

pub(super) fn color(i: usize) -> RGBColor {
    const P: [RGBColor; 8] = [
        RGBColor(0x4c, 0x72, 0xb0),
        RGBColor(0xdd, 0x84, 0x52),
        RGBColor(0x55, 0xa8, 0x68),
        RGBColor(0xc4, 0x4e, 0x52),
        RGBColor(0x81, 0x72, 0xb3),
        RGBColor(0x93, 0x78, 0x60),
        RGBColor(0xda, 0x8b, 0xc3),
        RGBColor(0x8c, 0x8c, 0x8c),
    ];
    P[i % P.len()]
}

/// A workload's valid, measured cells by engine and level.
struct Grid<'a> {
    engines: Vec<String>,
    levels: Vec<LoadLevel>,
    cells: Vec<&'a CellSummary>,
}

impl<'a> Grid<'a> {
    fn new(b: &'a LoadedBundle, w: &WorkloadSpec) -> Grid<'a> {
        let cells: Vec<&CellSummary> = b
            .cells
            .iter()
            .filter(|c| c.workload == w.name && c.valid)
            .filter(|c| c.metrics.as_ref().is_some_and(|m| m.requests_ok > 0))
            .collect();
        let mut levels: Vec<LoadLevel> = Vec::new();
        for c in &cells {
            if !levels.contains(&c.level) {
                levels.push(c.level);
            }
        }
        levels.sort_by(|a, b| a.magnitude().total_cmp(&b.magnitude()));
        Grid {
            engines: b.plan.engines.iter().map(|e| e.name.clone()).collect(),
            levels,
            cells,
        }
    }

    fn metrics(&self, engine: &str, level: LoadLevel) -> Option<&'a CellMetrics> {
        self.cells
            .iter()
            .find(|c| c.engine == engine && c.level == level)
            .and_then(|c| c.metrics.as_ref())
    }

    fn series(&self, engine: &str, f: impl Fn(&CellMetrics) -> Option<f64>) -> Vec<(f64, f64)> {
        self.levels
            .iter()
            .enumerate()
            .filter_map(|(i, &l)| {
                self.metrics(engine, l)
                    .and_then(&f)
                    .map(|v| (i as f64 + 0.5, v))
            })
            .collect()
    }

    fn label(&self, x: f64) -> String {
        let i = x.floor();
        if (x - i - 0.5).abs() > 1e-6 || i < 0.0 {
            return String::new();
        }
        self.levels
            .get(i as usize)
            .map(LoadLevel::label)
            .unwrap_or_default()
    }

    fn x_desc(&self) -> &'static str {
        match self.levels.first() {
            Some(LoadLevel::Rate(_)) => "offered load (requests/s)",
            _ => "concurrency (requests in flight)",
        }
    }
}

type DrawResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Picks one figure out of a cell's metrics.
type Pick<'a> = &'a dyn Fn(&CellMetrics) -> Option<f64>;

fn slo_bound(w: &WorkloadSpec, metric: SloMetric) -> Option<(f64, String)> {
    w.slo
        .iter()
        .filter(|r| r.metric == metric)
        .max_by_key(|r| r.percentile as u8)
        .map(|r| (r.max_ms, r.key()))
}

pub(super) fn top(max: f64) -> f64 {
    if max > 0.0 {
        max * 1.18
    } else {
        1.0
    }
}

/// Throughput per level, one bar per engine, speedup over the baseline above each bar.
fn throughput(g: &Grid, title: &str) -> DrawResult<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE)?;
        let max = g
            .cells
            .iter()
            .filter_map(|c| c.metrics.as_ref().map(|m| m.output_tok_per_s))
            .fold(0.0, f64::max);
        let n = g.levels.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..n, 0f64..top(max))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(g.levels.len() * 2 + 1)
            .x_label_formatter(&|x| g.label(*x))
            .x_desc(g.x_desc())
            .y_desc("output tokens/s")
            .draw()?;
        let m = g.engines.len().max(1) as f64;
        let width = 0.8 / m;
        for (j, e) in g.engines.iter().enumerate() {
            let c = color(j);
            let bars: Vec<_> = g
                .levels
                .iter()
                .enumerate()
                .filter_map(|(i, &l)| {
                    let v = g.metrics(e, l)?.output_tok_per_s;
                    let x0 = i as f64 + 0.1 + j as f64 * width;
                    Some(Rectangle::new(
                        [(x0, 0.0), (x0 + width * 0.95, v)],
                        c.filled(),
                    ))
                })
                .collect();
            chart
                .draw_series(bars)?
                .label(e.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
            // Repeated runs: a whisker from the slowest run to the fastest.
            let whiskers: Vec<_> = g
                .levels
                .iter()
                .enumerate()
                .filter_map(|(i, &l)| {
                    let cell = g.cells.iter().find(|c| &c.engine == e && c.level == l)?;
                    let v: Vec<f64> = cell.repeats.iter().map(|m| m.output_tok_per_s).collect();
                    if v.len() < 2 {
                        return None;
                    }
                    let (lo, hi) = (
                        v.iter().cloned().fold(f64::MAX, f64::min),
                        v.iter().cloned().fold(0.0, f64::max),
                    );
                    let x = i as f64 + 0.1 + (j as f64 + 0.5) * width;
                    Some(PathElement::new(
                        vec![(x, lo), (x, hi)],
                        BLACK.stroke_width(2),
                    ))
                })
                .collect();
            chart.draw_series(whiskers)?;
            if j > 0 {
                let base = &g.engines[0];
                let labels: Vec<_> = g
                    .levels
                    .iter()
                    .enumerate()
                    .filter_map(|(i, &l)| {
                        let v = g.metrics(e, l)?.output_tok_per_s;
                        let b = g.metrics(base, l)?.output_tok_per_s;
                        (b > 0.0).then(|| {
                            let x = i as f64 + 0.1 + (j as f64 + 0.5) * width;
                            Text::new(
                                format!("{:.1}x", v / b),
                                (x, v),
                                ("sans-serif", 12).into_font().color(&BLACK).pos(
                                    plotters::style::text_anchor::Pos::new(
                                        plotters::style::text_anchor::HPos::Center,
                                        plotters::style::text_anchor::VPos::Bottom,
                                    ),
                                ),
                            )
                        })
                    })
                    .collect();
                chart.draw_series(labels)?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// One line per engine (and optionally per second statistic), with an SLO line.
fn lines(
    g: &Grid,
    title: &str,
    y_desc: &str,
    series: &[(&str, Pick)],
    slo: Option<(f64, String)>,
) -> DrawResult<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut max = slo.as_ref().map_or(0.0, |s| s.0);
        for e in &g.engines {
            for (_, f) in series {
                for (_, v) in g.series(e, f) {
                    max = max.max(v);
                }
            }
        }
        let n = g.levels.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..n, 0f64..top(max))?;
        chart
            .configure_mesh()
            .x_labels(g.levels.len() * 2 + 1)
            .x_label_formatter(&|x| g.label(*x))
            .x_desc(g.x_desc())
            .y_desc(y_desc)
            .draw()?;
        for (j, e) in g.engines.iter().enumerate() {
            let c = color(j);
            for (k, (stat, f)) in series.iter().enumerate() {
                let pts = g.series(e, f);
                let style = if k == 0 {
                    c.stroke_width(2)
                } else {
                    c.mix(0.6).stroke_width(1)
                };
                let label = if series.len() > 1 {
                    format!("{e} {stat}")
                } else {
                    e.clone()
                };
                chart
                    .draw_series(LineSeries::new(pts.clone(), style))?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
            }
        }
        if let Some((v, key)) = slo {
            let red = RGBColor(0xd0, 0x20, 0x20);
            chart
                .draw_series(LineSeries::new(vec![(0.0, v), (n, v)], red.stroke_width(1)))?
                .label(format!("SLO {key} = {v}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], red));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// Tokens/s per user against tokens/s in total, one curve per engine through its levels.
fn pareto(g: &Grid, title: &str) -> DrawResult<String> {
    let pts: Vec<Vec<(f64, f64)>> = g
        .engines
        .iter()
        .map(|e| {
            g.levels
                .iter()
                .filter_map(|&l| {
                    let m = g.metrics(e, l)?;
                    let per_user = 1000.0 / m.tpot_ms.as_ref()?.mean;
                    Some((m.output_tok_per_s, per_user))
                })
                .collect()
        })
        .collect();
    let max_x = pts.iter().flatten().map(|p| p.0).fold(0.0, f64::max);
    let max_y = pts.iter().flatten().map(|p| p.1).fold(0.0, f64::max);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..top(max_x), 0f64..top(max_y))?;
        chart
            .configure_mesh()
            .x_desc("output tokens/s, all users")
            .y_desc("output tokens/s per user (1000 / TPOT)")
            .draw()?;
        for (j, e) in g.engines.iter().enumerate() {
            let c = color(j);
            chart
                .draw_series(LineSeries::new(pts[j].clone(), c.stroke_width(2)))?
                .label(e.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c));
            chart.draw_series(pts[j].iter().map(|&p| Circle::new(p, 3, c.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// Memory per engine: once ready (idle) and the peak under load.
fn memory(b: &LoadedBundle) -> DrawResult<Option<String>> {
    let gpu = b.manifest.gpu.available;
    let pick = |r: &crate::metrics::sampler::Resources| super::fmt::engine_memory(r, gpu);
    let rows: Vec<(String, f64, f64)> = b
        .manifest
        .engines
        .iter()
        .map(|e| {
            let idle = e.idle.as_ref().and_then(pick).unwrap_or(0) as f64;
            let peak = b
                .cells
                .iter()
                .filter(|c| c.engine == e.name)
                .filter_map(|c| c.resources.as_ref().and_then(pick))
                .max()
                .unwrap_or(0) as f64;
            (
                e.name.clone(),
                idle / (1u64 << 20) as f64,
                peak / (1u64 << 20) as f64,
            )
        })
        .collect();
    if rows.iter().all(|r| r.1 == 0.0 && r.2 == 0.0) {
        return Ok(None);
    }
    let max = rows.iter().map(|r| r.1.max(r.2)).fold(0.0, f64::max);
    let n = rows.len() as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE)?;
        let what = if gpu {
            "GPU memory used"
        } else {
            "engine resident memory (RSS)"
        };
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("Memory per engine: {what}"), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..n, 0f64..top(max))?;
        let names: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(rows.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor();
                if (x - i - 0.5).abs() < 1e-6 {
                    names.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc("MiB")
            .draw()?;
        for (k, (label, c)) in [
            ("idle, after load", color(0)),
            ("peak under load", color(1)),
        ]
        .into_iter()
        .enumerate()
        {
            let bars: Vec<_> = rows
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let v = if k == 0 { r.1 } else { r.2 };
                    let x0 = i as f64 + 0.15 + k as f64 * 0.35;
                    Rectangle::new([(x0, 0.0), (x0 + 0.33, v)], c.filled())
                })
                .collect();
            chart
                .draw_series(bars)?
                .label(label)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        root.present()?;
    }
    Ok(Some(svg))
}

/// Every chart of a bundle. A chart that cannot be drawn is left out with its error.
pub fn all(b: &LoadedBundle) -> (Vec<Chart>, Vec<String>) {
    let mut charts = Vec::new();
    let mut errors = Vec::new();
    let mut push =
        |name: String, title: String, workload: Option<String>, r: DrawResult<String>| match r {
            Ok(svg) => charts.push(Chart {
                name,
                title,
                workload,
                svg,
            }),
            Err(e) => errors.push(format!("chart {name}: {e}")),
        };
    for w in &b.plan.workloads {
        let g = Grid::new(b, w);
        if g.levels.is_empty() {
            continue;
        }
        let wn = Some(w.name.clone());
        let t = format!(
            "{}: output tokens/s by load (speedup over {})",
            w.name,
            g.engines.first().map_or("", String::as_str)
        );
        push(
            format!("throughput_{}", w.name),
            t.clone(),
            wn.clone(),
            throughput(&g, &t),
        );
        let t = format!("{}: output tokens/s", w.name);
        let tok: Pick = &|m| Some(m.output_tok_per_s);
        push(
            format!("tokens_{}", w.name),
            t.clone(),
            wn.clone(),
            lines(&g, &t, "output tokens/s", &[("", tok)], None),
        );
        let t = format!("{}: end-to-end latency", w.name);
        let p50: Pick = &|m| m.e2e_ms.as_ref().map(|s| s.p50);
        let p95: Pick = &|m| m.e2e_ms.as_ref().map(|s| s.p95);
        push(
            format!("e2e_{}", w.name),
            t.clone(),
            wn.clone(),
            lines(
                &g,
                &t,
                "ms",
                &[("p95", p95), ("p50", p50)],
                slo_bound(w, SloMetric::E2e),
            ),
        );
        let t = format!("{}: time to first token", w.name);
        let p50: Pick = &|m| m.ttft_ms.as_ref().map(|s| s.p50);
        let p95: Pick = &|m| m.ttft_ms.as_ref().map(|s| s.p95);
        let p99: Pick = &|m| m.ttft_ms.as_ref().map(|s| s.p99);
        push(
            format!("ttft_{}", w.name),
            t.clone(),
            wn.clone(),
            lines(
                &g,
                &t,
                "ms",
                &[("p95", p95), ("p50", p50), ("p99", p99)],
                slo_bound(w, SloMetric::Ttft),
            ),
        );
        if w.stream {
            let t = format!("{}: latency against throughput (Pareto)", w.name);
            push(format!("pareto_{}", w.name), t.clone(), wn, pareto(&g, &t));
        }
    }
    match memory(b) {
        Ok(Some(svg)) => charts.push(Chart {
            name: "memory".into(),
            title: "Memory per engine".into(),
            workload: None,
            svg,
        }),
        Ok(None) => {}
        Err(e) => errors.push(format!("chart memory: {e}")),
    }
    super::energy_charts::push_all(b, &mut charts, &mut errors);
    for (name, title, svg) in super::quality::charts(b) {
        match svg {
            Ok(svg) => charts.push(Chart {
                name,
                title,
                workload: None,
                svg,
            }),
            Err(e) => errors.push(format!("chart {name}: {e}")),
        }
    }
    (charts, errors)
}
