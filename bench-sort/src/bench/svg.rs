//! The bench's pictures, as SVG drawn with `plotters`:
//!
//! - [`timeline_svg`]: one sort run's `--timeline`, a lane per subtask (maps, then reducers)
//!   and one for the job (sample, commit), colored by phase, x in seconds since the job
//!   started, with a line where the last map ended: what of the reduce side ran before it
//!   overlapped the maps;
//! - [`times_svg`]: the wall time of every tool and mode of one case as horizontal bars,
//!   beside the floor (a grey bar, and a dashed reference line when the case has one floor),
//!   each bar labelled with its seconds and its ratio to its floor.
//!
//! Every lane and bar label is an SVG `<text>` holding exactly the label (`map 0`,
//! `millrace pipelined`), so tests and scripts can find them.

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::config::{BASE_MODE, OOC_MODES_VARIANT};
use super::report::{CaseReport, GnuSort, OutOfCoreReport};
use super::timeline::{Timeline, TimelineSpan};
use engine::task::SpanKind;
use engine::timeline::PhaseKind;

/// Width of every picture, in pixels.
const WIDTH: u32 = 1000;
/// Height of one lane or bar.
const LANE_PX: u32 = 24;
/// Room for the title, the x axis and the legend.
const TITLE_PX: u32 = 40;
const X_AXIS_PX: u32 = 40;
const LEGEND_ROW_PX: u32 = 22;
/// Room for lane and bar labels left of the plot.
const LABEL_PX: u32 = 190;
/// The grid between labelled ticks.
const LIGHT_GRID: RGBColor = RGBColor(245, 245, 245);

/// What a piece of a lane shows; one color each, named in the legend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Paint {
    Map,
    /// A reducer running outside its spans (waiting for input, starting, finishing).
    ReducerOther,
    Receive,
    SortWrite,
    Spill,
    Cascade,
    Merge,
    DiskBusy,
    WaitingForDisk,
    Sample,
    Commit,
    Other,
}

/// How much of a lane's height a piece covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Band {
    Full,
    /// The middle: spans nested in others (spill, cascade, merge).
    Inner,
    /// A strip at the top: waiting for disk.
    Top,
    /// A strip at the bottom: disk busy.
    Bottom,
}

/// The paint of each span kind; spans of other kinds are [`Paint::Other`].
const SPAN_PAINTS: [(SpanKind, Paint); 9] = [
    (SpanKind::Receive, Paint::Receive),
    (SpanKind::SortWrite, Paint::SortWrite),
    (SpanKind::DiskBusy, Paint::DiskBusy),
    (SpanKind::WaitingForDisk, Paint::WaitingForDisk),
    (SpanKind::Spill, Paint::Spill),
    (SpanKind::Cascade, Paint::Cascade),
    (SpanKind::Merge, Paint::Merge),
    (SpanKind::Sample, Paint::Sample),
    (SpanKind::Commit, Paint::Commit),
];

impl Paint {
    fn of_span(span: &TimelineSpan) -> Self {
        SPAN_PAINTS
            .iter()
            .find(|(kind, _)| span.is(*kind))
            .map_or(Self::Other, |&(_, paint)| paint)
    }

    fn name(self) -> &'static str {
        match self {
            Self::Map => "map",
            Self::ReducerOther => "reducer waiting",
            Self::Receive => "shuffle (receive)",
            Self::SortWrite => "sort+write",
            Self::Spill => "spill",
            Self::Cascade => "cascade merge",
            Self::Merge => "final merge",
            Self::DiskBusy => "disk busy",
            Self::WaitingForDisk => "waiting for disk",
            Self::Sample => "sample",
            Self::Commit => "commit",
            Self::Other => "other",
        }
    }

    fn color(self) -> RGBColor {
        match self {
            Self::Map => RGBColor(66, 133, 244),
            Self::ReducerOther => RGBColor(220, 220, 220),
            Self::Receive => RGBColor(251, 188, 5),
            Self::SortWrite => RGBColor(52, 168, 83),
            Self::Spill => RGBColor(234, 67, 53),
            Self::Cascade => RGBColor(171, 71, 188),
            Self::Merge => RGBColor(0, 150, 170),
            Self::DiskBusy => RGBColor(70, 70, 70),
            Self::WaitingForDisk => RGBColor(255, 112, 67),
            Self::Sample => RGBColor(121, 85, 72),
            Self::Commit => RGBColor(0, 0, 0),
            Self::Other => RGBColor(158, 158, 158),
        }
    }

    fn band(self) -> Band {
        match self {
            Self::Spill | Self::Cascade | Self::Merge => Band::Inner,
            Self::WaitingForDisk => Band::Top,
            Self::DiskBusy => Band::Bottom,
            _ => Band::Full,
        }
    }
}

/// One colored piece of a lane, in microseconds.
struct Piece {
    paint: Paint,
    start_us: u64,
    end_us: u64,
}

impl Piece {
    fn of_span(span: &TimelineSpan) -> Self {
        Self {
            paint: Paint::of_span(span),
            start_us: span.start_us,
            end_us: span.end_us,
        }
    }
}

/// Any error while drawing, as text (drawing into a `String` fails only on a bug).
type Drawn<T = ()> = Result<T, String>;

fn text_error<E: std::fmt::Display>(error: E) -> String {
    error.to_string()
}

/// The lanes of a timeline: `job` first, then every subtask in [`Timeline::lanes`] order.
fn lanes(timeline: &Timeline) -> Vec<(String, Vec<Piece>)> {
    let mut lanes = vec![(
        "job".to_owned(),
        timeline.job_spans.iter().map(Piece::of_span).collect(),
    )];
    for subtask in timeline.lanes() {
        // Maps have no spans: the whole interval is map work. Other vertices are drawn as
        // waiting, with their spans on top.
        let base = if subtask.vertex == "map" {
            Paint::Map
        } else {
            Paint::ReducerOther
        };
        let mut pieces = vec![Piece {
            paint: base,
            start_us: subtask.start_us,
            end_us: subtask.end_us,
        }];
        // Full-height spans first, then inner, then bottom strips, so details stay on top.
        for band in [Band::Full, Band::Inner, Band::Top, Band::Bottom] {
            pieces.extend(
                subtask
                    .spans
                    .iter()
                    .map(Piece::of_span)
                    .filter(|p| p.paint.band() == band),
            );
        }
        lanes.push((subtask.label(), pieces));
    }
    lanes
}

/// One sort run's timeline: a lane per subtask colored by phase, with a legend.
pub(super) fn timeline_svg(timeline: &Timeline, title: &str) -> Drawn<String> {
    let lanes = lanes(timeline);
    let mut used: Vec<Paint> = Vec::new();
    for piece in lanes.iter().flat_map(|(_, pieces)| pieces) {
        if !used.contains(&piece.paint) {
            used.push(piece.paint);
        }
    }
    let legend: Vec<(String, RGBColor)> = used
        .iter()
        .map(|p| (p.name().to_owned(), p.color()))
        .chain(
            timeline
                .phase(PhaseKind::Map)
                .map(|_| ("last map ends".to_owned(), RED)),
        )
        .collect();
    let legend_rows = legend_rows(&legend);
    let plot_px = LANE_PX * lanes.len() as u32;
    let height = TITLE_PX + plot_px + X_AXIS_PX + LEGEND_ROW_PX * (legend_rows + 1);
    let wall_s = (timeline.wall_us.max(1)) as f64 / 1e6;
    let n = lanes.len() as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(text_error)?;
        let (top, bottom) = root.split_vertically(TITLE_PX + plot_px + X_AXIS_PX);
        let mut chart = frame(&top, title, wall_s, n, "seconds since the job started")?;
        // Lane 0 at the top.
        let y_of = |lane: usize| n - lane as f64;
        for (lane, (_, pieces)) in lanes.iter().enumerate() {
            let rects = pieces.iter().map(|p| {
                let mut rect = Rectangle::new(
                    [
                        (p.start_us as f64 / 1e6, y_of(lane)),
                        (p.end_us as f64 / 1e6, y_of(lane) - 1.0),
                    ],
                    p.paint.color().filled(),
                );
                let (t, b) = match p.paint.band() {
                    Band::Full => (3, 3),
                    Band::Inner => (8, 8),
                    Band::Top => (1, LANE_PX - 6),
                    Band::Bottom => (LANE_PX - 6, 1),
                };
                rect.set_margin(t, b, 0, 0);
                rect
            });
            chart.draw_series(rects).map_err(text_error)?;
        }
        if let Some(map) = timeline.phase(PhaseKind::Map) {
            let x = map.end_us as f64 / 1e6;
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x, 0.0), (x, n)],
                    RED.stroke_width(1),
                )))
                .map_err(text_error)?;
        }
        let labels: Vec<(String, (i32, i32))> = lanes
            .iter()
            .enumerate()
            .map(|(lane, (label, _))| {
                (label.clone(), chart.backend_coord(&(0.0, y_of(lane) - 0.5)))
            })
            .collect();
        draw_labels(&root, &labels)?;
        draw_legend(&bottom, &legend)?;
        root.present().map_err(text_error)?;
    }
    Ok(svg)
}

/// One bar of [`times_svg`].
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Bar {
    /// `floor`, `millrace pipelined`, `GNU sort`, …
    pub(super) label: String,
    pub(super) seconds: f64,
    pub(super) kind: BarKind,
    /// The floor this bar is compared with (its own value for a floor bar).
    pub(super) floor_s: f64,
}

/// What a bar measures; one color each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BarKind {
    Floor,
    /// `millrace sort` in its base mode.
    Millrace,
    /// `millrace sort` in another mode.
    MillraceMode,
    /// Another tool (GNU sort, peers).
    Other,
}

impl BarKind {
    fn color(self) -> RGBColor {
        match self {
            Self::Floor => RGBColor(150, 150, 150),
            Self::Millrace => RGBColor(66, 133, 244),
            Self::MillraceMode => RGBColor(52, 168, 83),
            Self::Other => RGBColor(251, 140, 0),
        }
    }
}

/// The bars of one in-memory case: floor, millrace in every mode, GNU sort when measured.
pub(super) fn case_bars(case: &CaseReport) -> Vec<Bar> {
    let mut bars = vec![
        Bar {
            label: "floor".into(),
            seconds: case.floor_s,
            kind: BarKind::Floor,
            floor_s: case.floor_s,
        },
        Bar {
            label: format!("millrace {BASE_MODE}"),
            seconds: case.sort_s,
            kind: BarKind::Millrace,
            floor_s: case.floor_s,
        },
    ];
    bars.extend(case.modes.iter().map(|m| Bar {
        label: format!("millrace {}", m.mode),
        seconds: m.sort_s,
        kind: BarKind::MillraceMode,
        floor_s: case.floor_s,
    }));
    for peer in &case.peers {
        if let super::PeerReport::Measured { peer, wall_s, .. } = peer {
            bars.push(Bar {
                label: (*peer).to_string(),
                seconds: *wall_s,
                kind: BarKind::Other,
                floor_s: case.floor_s,
            });
        }
    }
    let gnu_peer = bars.iter().any(|b| b.label == "gnu-sort");
    if let (Some(GnuSort::Measured { wall_s, .. }), false) = (&case.gnu_sort, gnu_peer) {
        bars.push(Bar {
            label: "GNU sort".into(),
            seconds: *wall_s,
            kind: BarKind::Other,
            floor_s: case.floor_s,
        });
    }
    bars
}

/// The bars of the out-of-core case: per variant its two-pass floor and its sort, and the
/// other modes after the variant they ran with.
pub(super) fn ooc_bars(ooc: &OutOfCoreReport) -> Vec<Bar> {
    let mut bars = Vec::new();
    for v in &ooc.variants {
        bars.push(Bar {
            label: format!("{} floor", v.variant),
            seconds: v.floor_s,
            kind: BarKind::Floor,
            floor_s: v.floor_s,
        });
        bars.push(Bar {
            label: format!("{} {BASE_MODE}", v.variant),
            seconds: v.sort_s,
            kind: BarKind::Millrace,
            floor_s: v.floor_s,
        });
        if v.variant == OOC_MODES_VARIANT {
            bars.extend(ooc.modes.iter().map(|m| Bar {
                label: format!("{} {}", v.variant, m.mode),
                seconds: m.sort_s,
                kind: BarKind::MillraceMode,
                floor_s: v.floor_s,
            }));
        }
    }
    bars
}

/// Wall time per tool and mode as horizontal bars, each labelled with its seconds and its
/// ratio to its floor; a dashed line at `reference_s` (the common floor) if given.
pub(super) fn times_svg(title: &str, bars: &[Bar], reference_s: Option<f64>) -> Drawn<String> {
    let plot_px = LANE_PX * bars.len().max(1) as u32;
    let height = TITLE_PX + plot_px + X_AXIS_PX + LEGEND_ROW_PX;
    let longest = bars
        .iter()
        .map(|b| b.seconds)
        .filter(|s| s.is_finite())
        .fold(1e-6, f64::max);
    // Room right of the longest bar for its value.
    let x_max = longest * 1.3;
    let n = bars.len().max(1) as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(text_error)?;
        let mut chart = frame(&root, title, x_max, n, "seconds (median wall time)")?;
        let y_of = |i: usize| n - i as f64;
        let finite = |s: f64| if s.is_finite() { s } else { 0.0 };
        chart
            .draw_series(bars.iter().enumerate().map(|(i, b)| {
                let mut rect = Rectangle::new(
                    [(0.0, y_of(i)), (finite(b.seconds), y_of(i) - 1.0)],
                    b.kind.color().filled(),
                );
                rect.set_margin(4, 4, 0, 0);
                rect
            }))
            .map_err(text_error)?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, b)| {
                let text = if b.kind == BarKind::Floor {
                    format!("{:.2} s", b.seconds)
                } else {
                    format!("{:.2} s · {:.2}× floor", b.seconds, b.seconds / b.floor_s)
                };
                Text::new(
                    text,
                    (finite(b.seconds) + x_max * 0.01, y_of(i) - 0.3),
                    ("sans-serif", 12),
                )
            }))
            .map_err(text_error)?;
        if let Some(x) = reference_s.filter(|x| x.is_finite()) {
            chart
                .draw_series(std::iter::once(plotters::element::DashedPathElement::new(
                    vec![(x, 0.0), (x, n)],
                    4,
                    3,
                    BLACK.stroke_width(1),
                )))
                .map_err(text_error)?;
        }
        let labels: Vec<(String, (i32, i32))> = bars
            .iter()
            .enumerate()
            .map(|(i, b)| (b.label.clone(), chart.backend_coord(&(0.0, y_of(i) - 0.5))))
            .collect();
        draw_labels(&root, &labels)?;
        root.present().map_err(text_error)?;
    }
    Ok(svg)
}

/// The chart both pictures use: a caption, x in seconds from 0 to `x_max` with a grid and
/// `x_desc`, `lanes` rows of y (labelled by [`draw_labels`], not by the axis).
fn frame<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
    x_max: f64,
    lanes: f64,
    x_desc: &str,
) -> Drawn<ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin_right(20)
        .x_label_area_size(X_AXIS_PX)
        .y_label_area_size(LABEL_PX)
        .build_cartesian_2d(0f64..x_max, 0f64..lanes)
        .map_err(text_error)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .light_line_style(LIGHT_GRID)
        .x_desc(x_desc)
        .draw()
        .map_err(text_error)?;
    Ok(chart)
}

/// Lane or bar labels, right-aligned just left of the plot at `(x, y)` (the lane's middle at
/// the plot's left edge, in pixels of `root`).
fn draw_labels(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    labels: &[(String, (i32, i32))],
) -> Drawn {
    let style = TextStyle::from(("sans-serif", 13).into_font()).pos(
        plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Right,
            plotters::style::text_anchor::VPos::Center,
        ),
    );
    for (label, (x, y)) in labels {
        root.draw(&Text::new(label.clone(), (x - 8, *y), style.clone()))
            .map_err(text_error)?;
    }
    Ok(())
}

/// Approximate width of a legend entry: swatch, gap, text at ~7 px per character.
fn legend_entry_px(name: &str) -> u32 {
    20 + 7 * name.chars().count() as u32 + 18
}

/// Rows the legend needs at [`WIDTH`].
fn legend_rows(entries: &[(String, RGBColor)]) -> u32 {
    let mut rows = 1;
    let mut x = 10;
    for (name, _) in entries {
        let w = legend_entry_px(name);
        if x + w > WIDTH - 10 && x > 10 {
            rows += 1;
            x = 10;
        }
        x += w;
    }
    rows
}

/// A swatch and a name per entry, left to right, wrapping like [`legend_rows`].
fn draw_legend(area: &DrawingArea<SVGBackend<'_>, Shift>, entries: &[(String, RGBColor)]) -> Drawn {
    let (mut x, mut y) = (10i32, 6i32);
    for (name, color) in entries {
        let w = legend_entry_px(name) as i32;
        if x + w > WIDTH as i32 - 10 && x > 10 {
            x = 10;
            y += LEGEND_ROW_PX as i32;
        }
        area.draw(&Rectangle::new([(x, y), (x + 14, y + 12)], color.filled()))
            .map_err(text_error)?;
        area.draw(&Text::new(name.clone(), (x + 20, y), ("sans-serif", 13)))
            .map_err(text_error)?;
        x += w;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::timeline::PIPELINED;

    /// The texts of an SVG, parsed as XML.
    fn texts(svg: &str) -> Vec<String> {
        let doc = roxmltree::Document::parse(svg).expect("the SVG is well-formed XML");
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        doc.descendants()
            .filter(|n| n.has_tag_name("text"))
            .map(|n| n.text().unwrap_or("").trim().to_owned())
            .collect()
    }

    #[test]
    fn timeline_has_a_lane_per_subtask_and_a_legend() {
        let timeline = Timeline::parse(PIPELINED.as_bytes()).unwrap();
        let svg = timeline_svg(&timeline, "20k binary pipelined").unwrap();
        let texts = texts(&svg);
        for lane in ["job", "sort 0", "map 0", "map 1"] {
            assert_eq!(
                texts.iter().filter(|t| *t == lane).count(),
                1,
                "{lane}: {texts:?}"
            );
        }
        for legend in [
            "map",
            "shuffle (receive)",
            "sort+write",
            "disk busy",
            "commit",
        ] {
            assert!(texts.iter().any(|t| t == legend), "{legend}: {texts:?}");
        }
        assert!(texts.iter().any(|t| t == "20k binary pipelined"));
    }

    #[test]
    fn times_chart_has_a_bar_per_tool_and_mode() {
        let bars = vec![
            Bar {
                label: "floor".into(),
                seconds: 0.5,
                kind: BarKind::Floor,
                floor_s: 0.5,
            },
            Bar {
                label: "millrace pipelined".into(),
                seconds: 1.25,
                kind: BarKind::Millrace,
                floor_s: 0.5,
            },
            Bar {
                label: "millrace staged".into(),
                seconds: 1.5,
                kind: BarKind::MillraceMode,
                floor_s: 0.5,
            },
        ];
        let svg = times_svg("10M binary", &bars, Some(0.5)).unwrap();
        let texts = texts(&svg);
        for bar in &bars {
            assert!(texts.contains(&bar.label), "{}: {texts:?}", bar.label);
        }
        assert!(
            texts.iter().any(|t| t == "1.50 s · 3.00× floor"),
            "{texts:?}"
        );
    }
}
