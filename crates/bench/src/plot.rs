//! SVG charts of runs over time: throughput per second on top, latency percentiles below.
//!
//! SVG text is left to the viewer's fonts, so no font files or system font libraries are
//! needed to draw.

use std::path::Path;

use plotters::prelude::*;

use crate::BenchError;
use crate::timeseries::SecondPoint;

const SIZE: (u32, u32) = (1100, 760);

/// One line set on the chart: a run's timeline and its name in the legend.
pub struct PlotSeries<'a> {
    pub label: String,
    pub points: &'a [SecondPoint],
}

/// Draws `series` into an SVG at `path`. One series shows p50/p90/p99; several (a comparison)
/// show p50 and p99 of each.
pub fn write_svg(path: &Path, title: &str, series: &[PlotSeries]) -> Result<(), BenchError> {
    draw(path, title, series).map_err(|e| BenchError::Output {
        path: path.to_path_buf(),
        reason: format!("drawing the chart: {e}"),
    })
}

type Percentile = (&'static str, fn(&SecondPoint) -> f64);

fn draw(path: &Path, title: &str, series: &[PlotSeries]) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let (upper, lower) = root.split_vertically(SIZE.1 / 2 - 20);

    let seconds = series
        .iter()
        .map(|s| s.points.len())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let max_rate = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| (p.completed + p.failed) as f64))
        .fold(1.0, f64::max);
    let color = |index: usize| Palette99::pick(index).to_rgba();

    let mut throughput = ChartBuilder::on(&upper)
        .caption("workflows per second", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..seconds, 0.0..max_rate * 1.1)?;
    throughput
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("completed/s")
        .draw()?;
    for (index, s) in series.iter().enumerate() {
        let c = color(index);
        throughput
            .draw_series(LineSeries::new(
                s.points
                    .iter()
                    .map(|p| (p.second as f64, p.completed as f64)),
                c.stroke_width(2),
            ))?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        if s.points.iter().any(|p| p.failed > 0) {
            let red = RED.to_rgba();
            throughput
                .draw_series(LineSeries::new(
                    s.points.iter().map(|p| (p.second as f64, p.failed as f64)),
                    red.stroke_width(1),
                ))?
                .label(format!("{} failed", s.label))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red));
        }
    }
    throughput
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;

    let percentiles: Vec<Percentile> = if series.len() == 1 {
        vec![
            ("p50", |p| p.p50_ms),
            ("p90", |p| p.p90_ms),
            ("p99", |p| p.p99_ms),
        ]
    } else {
        vec![("p50", |p| p.p50_ms), ("p99", |p| p.p99_ms)]
    };
    let max_latency = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.p99_ms))
        .fold(1.0, f64::max);
    let mut latency = ChartBuilder::on(&lower)
        .caption("end-to-end latency per second (ms)", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..seconds, 0.0..max_latency * 1.1)?;
    latency
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("ms")
        .draw()?;
    let mut line = 0;
    for s in series {
        for (name, value) in &percentiles {
            let c = color(if series.len() == 1 {
                line
            } else {
                line / percentiles.len()
            });
            // Within a target, lower percentiles are thinner.
            let width = 1 + (line % percentiles.len()) as u32;
            latency
                .draw_series(LineSeries::new(
                    s.points
                        .iter()
                        .filter(|p| p.completed > 0)
                        .map(|p| (p.second as f64, value(p))),
                    c.stroke_width(width),
                ))?
                .label(format!("{} {name}", s.label))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(width))
                });
            line += 1;
        }
    }
    latency
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(second: u64, completed: u64, p99: f64) -> SecondPoint {
        SecondPoint {
            second,
            completed,
            failed: 0,
            p50_ms: p99 / 2.0,
            p90_ms: p99 * 0.9,
            p99_ms: p99,
            max_ms: p99 * 1.5,
        }
    }

    #[test]
    fn writes_an_svg_with_every_series_in_the_legend() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.svg");
        let a = [point(0, 10, 5.0), point(1, 20, 7.0)];
        let b = [point(0, 5, 9.0), point(1, 8, 12.0), point(2, 9, 11.0)];
        write_svg(
            &path,
            "compare",
            &[
                PlotSeries {
                    label: "alpha".into(),
                    points: &a,
                },
                PlotSeries {
                    label: "beta".into(),
                    points: &b,
                },
            ],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        for label in ["alpha", "beta p99", "alpha p50", "compare"] {
            assert!(svg.contains(label), "{label} missing");
        }
        assert!(svg.contains("<polyline"), "lines are drawn");
    }
}
