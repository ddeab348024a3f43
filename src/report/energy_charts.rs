//! Charts of the cost side, drawn from a bundle alone: per workload, GPU memory against output
//! tokens/s with one point per engine configuration and the Pareto front drawn
//! (`scatter_with_front`, for any two objectives), and energy per output token per load level
//! as grouped bars. Invalid cells are never drawn.

use plotters::prelude::*;

use super::charts::{color, top, Chart};
use super::pareto::{front, Goal};
use crate::bundle::format::CellSummary;
use crate::bundle::read::LoadedBundle;
use crate::plan::model::{LoadLevel, WorkloadSpec};

type DrawResult<T> = Result<T, Box<dyn std::error::Error>>;

const W: u32 = 760;
const H: u32 = 400;

/// One labelled point of a scatter.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub label: String,
    pub x: f64,
    pub y: f64,
}

/// A scatter of labelled points with their Pareto front (`pareto::front` for the goals) drawn
/// as a line through the points on it, which are ringed.
pub fn scatter_with_front(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    points: &[Point],
    goals: (Goal, Goal),
) -> DrawResult<String> {
    let xy: Vec<(f64, f64)> = points.iter().map(|p| (p.x, p.y)).collect();
    let on = front(&xy, goals.0, goals.1);
    let max_x = xy.iter().map(|p| p.0).fold(0.0, f64::max);
    let max_y = xy.iter().map(|p| p.1).fold(0.0, f64::max);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..top(max_x), 0f64..top(max_y))?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .draw()?;
        let front_pts: Vec<(f64, f64)> = on.iter().map(|&i| xy[i]).collect();
        let grey = RGBColor(0x60, 0x60, 0x60);
        chart
            .draw_series(LineSeries::new(front_pts.clone(), grey.stroke_width(1)))?
            .label("Pareto front")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], grey));
        chart.draw_series(
            front_pts
                .iter()
                .map(|&p| Circle::new(p, 7, grey.stroke_width(1))),
        )?;
        for (i, p) in points.iter().enumerate() {
            let c = color(i);
            chart.draw_series(std::iter::once(Circle::new((p.x, p.y), 4, c.filled())))?;
            chart.draw_series(std::iter::once(Text::new(
                p.label.clone(),
                (p.x, p.y),
                ("sans-serif", 12).into_font().color(&BLACK).pos(
                    plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Left,
                        plotters::style::text_anchor::VPos::Bottom,
                    ),
                ),
            )))?;
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

/// A workload's cells that are results: valid, measured, with throughput.
fn results<'a>(b: &'a LoadedBundle, w: &WorkloadSpec) -> Vec<&'a CellSummary> {
    b.cells
        .iter()
        .filter(|c| c.workload == w.name && c.valid)
        .filter(|c| {
            c.metrics
                .as_ref()
                .is_some_and(|m| m.requests_ok > 0 && m.output_tok_per_s > 0.0)
        })
        .collect()
}

/// One point per engine: its highest output tokens/s over the workload's levels, and its peak
/// memory over them (the engine's GPU memory with NVML, its RSS without: `fmt::engine_memory`).
pub fn memory_points(b: &LoadedBundle, w: &WorkloadSpec) -> Vec<Point> {
    let gpu = b.manifest.gpu.available;
    let cells = results(b, w);
    b.plan
        .engines
        .iter()
        .filter_map(|e| {
            let mine: Vec<&&CellSummary> = cells.iter().filter(|c| c.engine == e.name).collect();
            let x = mine
                .iter()
                .filter_map(|c| c.metrics.as_ref().map(|m| m.output_tok_per_s))
                .reduce(f64::max)?;
            let y = mine
                .iter()
                .filter_map(|c| {
                    c.resources
                        .as_ref()
                        .and_then(|r| super::fmt::engine_memory(r, gpu))
                })
                .max()?;
            Some(Point {
                label: e.name.clone(),
                x,
                y: y as f64,
            })
        })
        .collect()
}

/// Energy per output token per level, one bar per engine (valid cells with the figure).
fn energy_bars(b: &LoadedBundle, w: &WorkloadSpec, title: &str) -> DrawResult<Option<String>> {
    let cells = results(b, w);
    let value = |c: &CellSummary| {
        c.resources
            .as_ref()
            .and_then(|r| r.energy.as_ref())
            .and_then(|e| e.energy_j_per_output_token)
    };
    let mut levels: Vec<LoadLevel> = Vec::new();
    for c in cells.iter().filter(|c| value(c).is_some()) {
        if !levels.contains(&c.level) {
            levels.push(c.level);
        }
    }
    if levels.is_empty() {
        return Ok(None);
    }
    levels.sort_by(|a, b| a.magnitude().total_cmp(&b.magnitude()));
    let engines: Vec<&str> = b.plan.engines.iter().map(|e| e.name.as_str()).collect();
    let find = |e: &str, l: LoadLevel| {
        cells
            .iter()
            .find(|c| c.engine == e && c.level == l)
            .and_then(|c| value(c))
    };
    let max = cells.iter().filter_map(|c| value(c)).fold(0.0, f64::max);
    let n = levels.len() as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..n, 0f64..top(max))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(levels.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor();
                if (x - i - 0.5).abs() < 1e-6 && i >= 0.0 {
                    levels
                        .get(i as usize)
                        .map(LoadLevel::label)
                        .unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .x_desc(match levels.first() {
                Some(LoadLevel::Rate(_)) => "offered load (requests/s)",
                _ => "concurrency (requests in flight)",
            })
            .y_desc("joules per output token")
            .draw()?;
        let width = 0.8 / engines.len().max(1) as f64;
        for (j, e) in engines.iter().enumerate() {
            let c = color(j);
            let bars: Vec<_> = levels
                .iter()
                .enumerate()
                .filter_map(|(i, &l)| {
                    let v = find(e, l)?;
                    let x0 = i as f64 + 0.1 + j as f64 * width;
                    Some(Rectangle::new(
                        [(x0, 0.0), (x0 + width * 0.95, v)],
                        c.filled(),
                    ))
                })
                .collect();
            chart
                .draw_series(bars)?
                .label(*e)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        root.present()?;
    }
    Ok(Some(svg))
}

/// This module's charts of a bundle, appended to `charts`; one that cannot be drawn is left
/// out with its error.
pub fn push_all(b: &LoadedBundle, charts: &mut Vec<Chart>, errors: &mut Vec<String>) {
    let gpu = b.manifest.gpu.available;
    for w in &b.plan.workloads {
        let points = memory_points(b, w);
        if !points.is_empty() {
            let gib = points.iter().map(|p| p.y).fold(0.0, f64::max) >= (1u64 << 30) as f64;
            let (unit, div) = if gib {
                ("GiB", (1u64 << 30) as f64)
            } else {
                ("MiB", (1u64 << 20) as f64)
            };
            let scaled: Vec<Point> = points
                .into_iter()
                .map(|p| Point { y: p.y / div, ..p })
                .collect();
            let what = if gpu { "GPU memory" } else { "engine RSS" };
            let title = format!("{}: {what} against output tokens/s (Pareto front)", w.name);
            let name = format!("memory_pareto_{}", w.name);
            match scatter_with_front(
                &title,
                "output tokens/s (the engine's best level)",
                &format!("peak {what} ({unit})"),
                &scaled,
                (Goal::Higher, Goal::Lower),
            ) {
                Ok(svg) => charts.push(Chart {
                    name,
                    title,
                    workload: Some(w.name.clone()),
                    svg,
                }),
                Err(e) => errors.push(format!("chart {name}: {e}")),
            }
        }
        let title = format!("{}: energy per output token", w.name);
        let name = format!("energy_{}", w.name);
        match energy_bars(b, w, &title) {
            Ok(Some(svg)) => charts.push(Chart {
                name,
                title,
                workload: Some(w.name.clone()),
                svg,
            }),
            Ok(None) => {}
            Err(e) => errors.push(format!("chart {name}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_front_is_drawn_through_its_points_only() {
        let p = |label: &str, x: f64, y: f64| Point {
            label: label.into(),
            x,
            y,
        };
        // b is beaten by c (faster, less memory): the front is a and c.
        let pts = [
            p("a", 100.0, 10.0),
            p("b", 150.0, 30.0),
            p("c", 200.0, 20.0),
        ];
        let svg =
            scatter_with_front("t", "x", "y", &pts, (Goal::Higher, Goal::Lower)).expect("drawn");
        assert!(svg.contains("Pareto front"));
        for l in ["a", "b", "c"] {
            assert!(svg.contains(&format!("\n{l}\n")), "label {l}");
        }
        // One ring per point on the front, one dot per point.
        assert_eq!(svg.matches("<circle").count(), 2 + 3, "{svg}");
    }
}
