//! The contract chart of the dashboard, drawn by the server as SVG: cumulative recognized
//! revenue against the scheduled firm value and the conditional value over the term.
//! Coordinates are computed with integers from the minor units (no floats near money);
//! colours are presentation attributes, so the page's CSP needs no inline styles.

use events::{format_minor_units, Currency, Date};
use projections::ChartPoint;
use projections::report::group_thousands;

const WIDTH: i128 = 900;
const HEIGHT: i128 = 300;
const LEFT: i128 = 170;
const RIGHT: i128 = 20;
const TOP: i128 = 36;
const BOTTOM: i128 = 40;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The SVG document of a contract's chart.
pub fn svg(contract_id: &str, currency: Currency, as_of: Date, points: &[ChartPoint]) -> String {
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let values = points.iter().flat_map(|p| [p.scheduled_firm, p.with_conditional].into_iter().chain(p.recognized));
    let max = values.clone().max().unwrap_or(0).max(1);
    let min = values.min().unwrap_or(0).min(0);
    let first = points.first().map(|p| p.date).unwrap_or(as_of);
    let last = points.last().map(|p| p.date).unwrap_or(as_of);
    let days = i128::from(first.days_until(last)).max(1);
    let x = |d: Date| LEFT + i128::from(first.days_until(d)).clamp(0, days) * plot_w / days;
    let y = |v: i128| TOP + (max - v) * plot_h / (max - min);
    let line = |pick: &dyn Fn(&ChartPoint) -> Option<i128>| {
        points.iter().filter_map(|p| pick(p).map(|v| format!("{},{}", x(p.date), y(v)))).collect::<Vec<_>>().join(" ")
    };
    let money = |v: i128| format!("{currency} {}", group_thousands(&format_minor_units(v, currency)));
    let id = escape(contract_id);
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="Revenue of {id}" data-chart="{id}">
<title>{id}: cumulative recognized revenue against scheduled firm and conditional value</title>
<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>
<line x1="{LEFT}" y1="{zero}" x2="{right}" y2="{zero}" stroke="#999999" stroke-width="1"/>
<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="#999999" stroke-width="1"/>
<text x="{label_x}" y="{top_label}" text-anchor="end" font-family="sans-serif" font-size="11" fill="#333333">{max_label}</text>
<text x="{label_x}" y="{zero_label}" text-anchor="end" font-family="sans-serif" font-size="11" fill="#333333">{min_label}</text>
<text x="{LEFT}" y="{date_y}" font-family="sans-serif" font-size="11" fill="#333333">{first}</text>
<text x="{right}" y="{date_y}" text-anchor="end" font-family="sans-serif" font-size="11" fill="#333333">{last}</text>
"##,
        zero = y(0),
        right = WIDTH - RIGHT,
        bottom = HEIGHT - BOTTOM,
        label_x = LEFT - 6,
        top_label = TOP + 4,
        zero_label = y(min) + 4,
        max_label = escape(&money(max)),
        min_label = escape(&money(min)),
        date_y = HEIGHT - BOTTOM + 16,
    );
    if (first..=last).contains(&as_of) {
        let ax = x(as_of);
        s += &format!(
            r##"<line x1="{ax}" y1="{TOP}" x2="{ax}" y2="{}" stroke="#bbbbbb" stroke-dasharray="2 3"/>
<text x="{ax}" y="{}" text-anchor="middle" font-family="sans-serif" font-size="11" fill="#555555">as of {as_of}</text>
"##,
            HEIGHT - BOTTOM,
            TOP - 6
        );
    }
    let series: [(&str, &str, &str, &dyn Fn(&ChartPoint) -> Option<i128>); 3] = [
        ("with-conditional", "#e08a00", "6 4", &|p| Some(p.with_conditional)),
        ("scheduled-firm", "#3366cc", "4 3", &|p| Some(p.scheduled_firm)),
        ("recognized", "#2a9d3a", "", &|p| p.recognized),
    ];
    for (name, colour, dash, pick) in series {
        let dash = if dash.is_empty() { String::new() } else { format!(r#" stroke-dasharray="{dash}""#) };
        s += &format!(r#"<polyline data-series="{name}" fill="none" stroke="{colour}" stroke-width="2"{dash} points="{}"/>"#, line(pick));
        s.push('\n');
    }
    let legend = [("#2a9d3a", "recognized"), ("#3366cc", "scheduled firm value"), ("#e08a00", "with conditional value")];
    for (i, (colour, label)) in legend.iter().enumerate() {
        let lx = LEFT + 10 + i as i128 * 200;
        s += &format!(
            r##"<rect x="{lx}" y="8" width="14" height="4" fill="{colour}"/><text x="{}" y="14" font-family="sans-serif" font-size="11" fill="#333333">{label}</text>"##,
            lx + 20
        );
        s.push('\n');
    }
    s += "</svg>\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_scales_with_integers_and_escapes_text() {
        let d = |s: &str| Date::parse(s).unwrap();
        let points = [
            ChartPoint { date: d("2026-01-01"), recognized: Some(0), scheduled_firm: 0, with_conditional: 0 },
            ChartPoint { date: d("2026-07-01"), recognized: Some(500), scheduled_firm: 500, with_conditional: 600 },
            ChartPoint { date: d("2026-12-31"), recognized: None, scheduled_firm: 1000, with_conditional: 1200 },
        ];
        let svg = svg("a<b", Currency::USD, d("2026-07-01"), &points);
        assert!(svg.contains("a&lt;b") && !svg.contains("a<b"), "{svg}");
        assert!(svg.contains("USD 12.00"), "the top of the scale: {svg}");
        // 2026-07-01 is day 181 of 364: x = 170 + 181 * 710 / 364 = 523; y of 500 of 1200.
        assert!(svg.contains(r##"data-series="recognized" fill="none" stroke="#2a9d3a" stroke-width="2" points="170,260 523,166""##), "{svg}");
    }
}
