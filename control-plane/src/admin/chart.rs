//! Charts as inline SVG, rendered on the server: no charting library, no script, and nothing
//! the page's Content-Security-Policy would block (colours come from classes in `app.css`, so
//! they follow the light or dark theme). Every chart has a `<title>` and `<desc>` and the page
//! shows the same numbers in a table.

use std::fmt::Write;

/// Width of the drawing in SVG units; it scales to its container.
const WIDTH: f64 = 640.0;
/// Room for the y-axis labels.
const LEFT: f64 = 56.0;
/// Room for the x-axis labels.
const BOTTOM: f64 = 24.0;
const TOP: f64 = 10.0;
const RIGHT: f64 = 10.0;

/// One line of a line chart (the page names it in a legend next to the chart).
pub struct Line<'a> {
    /// CSS class giving its colour (`s0`, `s1`, ...).
    pub class: &'a str,
    /// One value per x position.
    pub values: Vec<i64>,
}

/// Escapes text for SVG (XML) content and attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The smallest "round" number (1, 2 or 5 times a power of ten) at or above `max`, so the
/// top of the axis reads well; at least 1, so an all-zero chart still has a scale.
pub fn nice_max(max: i64) -> i64 {
    if max <= 1 {
        return 1;
    }
    let mut p = 1i64;
    loop {
        for m in [1, 2, 5] {
            let v = p.saturating_mul(m);
            if v >= max {
                return v;
            }
        }
        p = p.saturating_mul(10);
    }
}

/// The y coordinate of `v` on an axis from 0 (bottom of `height`) to `top` (its top).
fn y_of(v: i64, top: i64, height: f64) -> f64 {
    let plot = height - TOP - BOTTOM;
    TOP + plot * (1.0 - v as f64 / top as f64)
}

fn x_of(i: usize, n: usize) -> f64 {
    let plot = WIDTH - LEFT - RIGHT;
    if n <= 1 {
        LEFT + plot / 2.0
    } else {
        LEFT + plot * i as f64 / (n - 1) as f64
    }
}

fn open(out: &mut String, id: &str, title: &str, desc: &str, height: f64) {
    let (id, title, desc) = (escape(id), escape(title), escape(desc));
    let _ = write!(
        out,
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-labelledby=\"{id}-t\" aria-describedby=\"{id}-d\" \
         xmlns=\"http://www.w3.org/2000/svg\"><title id=\"{id}-t\">{title}</title><desc id=\"{id}-d\">{desc}</desc>"
    );
}

/// A line chart of `lines` over the x positions named by `labels` (first and last shown), or
/// `None` when there is nothing to draw (no positions, or every value zero).
pub fn lines(id: &str, title: &str, desc: &str, labels: &[String], lines: &[Line<'_>]) -> Option<String> {
    let n = labels.len();
    let max = lines.iter().flat_map(|l| l.values.iter().copied()).max().unwrap_or(0);
    if n == 0 || max <= 0 {
        return None;
    }
    let height = 220.0;
    let top = nice_max(max);
    let mut out = String::new();
    open(&mut out, id, title, desc, height);
    axes(&mut out, top, height);
    let base = height - BOTTOM;
    for (i, anchor) in [(0, "start"), (n - 1, "end")] {
        if i == 0 || n > 1 {
            let _ = write!(
                out,
                "<text class=\"label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>",
                x_of(i, n),
                base + 16.0,
                escape(&labels[i])
            );
        }
    }
    for l in lines {
        let pts: Vec<String> = l
            .values
            .iter()
            .take(n)
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x_of(i, n), y_of((*v).max(0), top, height)))
            .collect();
        let class = escape(l.class);
        // A single point is a dot: a polyline of one point draws nothing.
        if pts.len() == 1 {
            let (x, y) = pts[0].split_once(',').unwrap_or(("0", "0"));
            let _ = write!(out, "<circle class=\"dot {class}\" cx=\"{x}\" cy=\"{y}\" r=\"3\"/>");
        } else {
            let _ = write!(out, "<polyline class=\"line {class}\" points=\"{}\"/>", pts.join(" "));
        }
    }
    out.push_str("</svg>");
    Some(out)
}

/// Horizontal grid lines and labels at 0, half and the top of the axis.
fn axes(out: &mut String, top: i64, height: f64) {
    for v in [0, top / 2, top] {
        if v == top / 2 && (top < 2 || top % 2 != 0) {
            continue;
        }
        let y = y_of(v, top, height);
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            short(v)
        );
    }
}

/// A horizontal bar chart: one bar per `(label, value)`, longest for the largest value, or
/// `None` when every value is zero.
pub fn bars(id: &str, title: &str, desc: &str, rows: &[(String, i64)]) -> Option<String> {
    let max = rows.iter().map(|(_, v)| *v).max().unwrap_or(0);
    if max <= 0 {
        return None;
    }
    let row = 26.0;
    let label_w = 160.0;
    let height = TOP * 2.0 + row * rows.len() as f64;
    let plot = WIDTH - label_w - 70.0;
    let mut out = String::new();
    open(&mut out, id, title, desc, height);
    for (i, (label, v)) in rows.iter().enumerate() {
        let y = TOP + row * i as f64;
        let w = (plot * (*v).max(0) as f64 / max as f64).max(1.0);
        // Long labels are cut so they do not run into the bar; the full text is in the table.
        let shown: String =
            if label.chars().count() > 22 { label.chars().take(21).chain(['…']).collect() } else { label.clone() };
        let _ = write!(
            out,
            "<text class=\"label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <rect class=\"bar\" x=\"{label_w}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\"/>\
             <text class=\"label\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            label_w - 6.0,
            y + row / 2.0 + 4.0,
            escape(&shown),
            y + 4.0,
            row - 8.0,
            label_w + w + 6.0,
            y + row / 2.0 + 4.0,
            short(*v)
        );
    }
    out.push_str("</svg>");
    Some(out)
}

/// A count in few characters: 950, 12.5k, 3.2M.
pub fn short(v: i64) -> String {
    let f = v as f64;
    if v.abs() >= 1_000_000 {
        format!("{:.1}M", f / 1e6)
    } else if v.abs() >= 10_000 {
        format!("{:.0}k", f / 1e3)
    } else if v.abs() >= 1_000 {
        format!("{:.1}k", f / 1e3)
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("t{i}")).collect()
    }

    #[test]
    fn axis_tops_are_round() {
        assert_eq!([0, 1, 2, 3, 7, 10, 11, 99, 101, 4_900].map(nice_max), [1, 1, 2, 5, 10, 10, 20, 100, 200, 5_000]);
        assert_eq!(nice_max(i64::MAX), i64::MAX, "no overflow");
    }

    #[test]
    fn values_scale_from_the_bottom_to_the_top_of_the_plot() {
        let svg = lines("c", "t", "d", &labels(3), &[Line { class: "s0", values: vec![0, 5, 10] }]).unwrap();
        // 10 is the top (y = TOP), 0 the bottom (220 - BOTTOM), 5 halfway; x spans the plot.
        assert!(svg.contains("points=\"56.0,196.0 343.0,103.0 630.0,10.0\""), "{svg}");
        assert!(svg.contains(">10</text>") && svg.contains(">5</text>") && svg.contains(">0</text>"), "{svg}");
        let svg = bars("b", "t", "d", &[("a".into(), 4), ("b".into(), 2)]).unwrap();
        assert!(svg.contains("width=\"410.0\"") && svg.contains("width=\"205.0\""), "{svg}");
    }

    #[test]
    fn nothing_to_draw_gives_none() {
        assert!(lines("c", "t", "d", &[], &[]).is_none());
        assert!(lines("c", "t", "d", &labels(4), &[Line { class: "s0", values: vec![0; 4] }]).is_none());
        assert!(bars("b", "t", "d", &[]).is_none());
        assert!(bars("b", "t", "d", &[("m".into(), 0)]).is_none());
    }

    #[test]
    fn one_point_is_a_dot() {
        let svg = lines("c", "t", "d", &labels(1), &[Line { class: "s1", values: vec![3] }]).unwrap();
        assert!(svg.contains("<circle class=\"dot s1\"") && !svg.contains("polyline"), "{svg}");
    }

    #[test]
    fn labels_and_titles_are_escaped_and_accessible() {
        let svg = bars("m", "Requests <by> model", "a & b", &[("<script>\"x\"'".into(), 1)]).unwrap();
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;&quot;x&quot;&#39;"), "{svg}");
        assert!(svg.contains("<title id=\"m-t\">Requests &lt;by&gt; model</title><desc id=\"m-d\">a &amp; b</desc>"));
        assert!(svg.contains("role=\"img\" aria-labelledby=\"m-t\" aria-describedby=\"m-d\""));
        assert!(!svg.contains("style="), "no inline styles under the CSP");
        let long = bars("m", "t", "d", &[("x".repeat(40), 1)]).unwrap();
        assert!(long.contains(&format!("{}…", "x".repeat(21))), "{long}");
    }

    #[test]
    fn counts_are_short() {
        assert_eq!([950, 1_260, 12_700, 3_240_000].map(short), ["950", "1.3k", "13k", "3.2M"]);
    }
}
