//! Flame graph SVG (inferno) of the stacks holding memory: one tower per class, frames coloured
//! by the class's group.
//!
//! inferno colours a frame by its name only. To colour by class, every frame name (and a root
//! frame `[class]` per line) carries one of flamegraph's annotation suffixes, which the `java`
//! palette maps to a hue and inferno strips from the displayed text and titles: `_[i]` aqua
//! (network), `_[j]` green (memory a process accounts for: user-anon, page-cache, shmem),
//! `_[k]` orange (every other kernel class). The same function under two classes therefore
//! folds into two frames, one per tower, each in its class's colour.

use std::collections::BTreeMap;

use anyhow::Context as _;
use inferno::flamegraph::color::{BackgroundColor, MultiPalette};
use inferno::flamegraph::{self, Palette};
use memtrace_common::Kind;

use crate::model::summaries::class_in_total;
use crate::model::{Class, Report, StackReport};
use crate::render::folded::{frame_name, FOLDED_STACK_UNAVAILABLE, FOLDED_UNKNOWN};
use crate::units::{format_bytes, format_duration, format_unix_utc};

/// What the width of a frame measures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FlameBy {
    /// Bytes still held at the end of the session.
    #[default]
    Outstanding,
    /// Bytes allocated during the session, freed or not.
    Allocated,
}

/// Options of the SVG renderer.
#[derive(Clone, Debug, Default)]
pub struct SvgOptions {
    pub flame_by: FlameBy,
}

/// What the colours mean: in the subtitle when it fits, and in the notes (an XML comment).
pub const LEGEND: &str = "aqua: network · green: user / page cache / shmem · orange: other kernel";

/// Characters of the subtitle that fit the default 1200-pixel width (12 px monospace, 0.59 em
/// wide); a longer session line leaves the legend out (the `[class]` root frames still name
/// each tower).
const SUBTITLE_MAX_CHARS: usize = 160;

/// The colour group of a class, as an inferno `java` palette annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hue {
    /// Network buffers.
    Aqua,
    /// Memory a process accounts for (RSS, page cache, shmem).
    Green,
    /// Everything else the kernel holds.
    Orange,
}

impl Hue {
    fn of(class: Class) -> Hue {
        match class {
            Class::Network => Hue::Aqua,
            Class::UserAnon | Class::PageCache | Class::Shmem => Hue::Green,
            Class::SlabBacking
            | Class::VmallocBacking
            | Class::PercpuBacking
            | Class::PageTables
            | Class::KernelStack
            | Class::OtherKernel => Hue::Orange,
        }
    }

    /// The annotation suffix the `java` palette resolves to this hue (inferno strips it from
    /// the frame's text and title).
    fn suffix(self) -> &'static str {
        match self {
            Hue::Aqua => "_[i]",
            Hue::Green => "_[j]",
            Hue::Orange => "_[k]",
        }
    }
}

/// The flame graph as an SVG document.
///
/// Like the folded output, it leaves out stacks whose class is not counted in the totals
/// (backing pages of traced kinds), so that nothing is drawn twice, and stacks with nothing in
/// the chosen measure. The output is the same, byte for byte, for the same report.
pub fn render_svg(report: &Report, opts: &SvgOptions) -> anyhow::Result<Vec<u8>> {
    let by = opts.flame_by;
    let lines = annotated_lines(report, by);
    let total = lines.values().fold(0u64, |a, &n| a.saturating_add(n));
    let title = title(report, by);
    let subtitle = subtitle(report, by, total);
    if lines.is_empty() {
        let message = match by {
            FlameBy::Outstanding => "No stack held memory at the end of the session.",
            FlameBy::Allocated => "No stack allocated memory during the session.",
        };
        return Ok(empty_svg(&title, &subtitle, message));
    }

    let text: Vec<String> = lines.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let mut o = flamegraph::Options::default();
    o.colors = Palette::Multi(MultiPalette::Java);
    o.bgcolors = Some(BackgroundColor::Grey);
    // Colours from a hash of the name (flamegraph.pl's --hash), not at random: reproducible
    // output, and frames of one hue keep their shade from graph to graph.
    o.hash = true;
    o.title = title;
    o.subtitle = Some(subtitle);
    o.count_name = "bytes".to_string();
    o.name_type = "Function:".to_string();
    o.notes = format!("memtrace flame graph; {LEGEND}");
    let mut out = Vec::new();
    flamegraph::from_lines(&mut o, text.iter().map(String::as_str), &mut out)
        .context("drawing the flame graph with inferno")?;
    Ok(out)
}

/// The bytes of a stack in the chosen measure.
fn measure(s: &StackReport, by: FlameBy) -> u64 {
    match by {
        FlameBy::Outstanding => s.bytes,
        FlameBy::Allocated => s.allocated_bytes,
    }
}

/// Folded stacks (as in `render_folded`) under a `[class]` root frame, every frame annotated
/// with its class's hue; identical keys merged.
fn annotated_lines(report: &Report, by: FlameBy) -> BTreeMap<String, u64> {
    let mut lines: BTreeMap<String, u64> = BTreeMap::new();
    for s in report
        .stacks
        .iter()
        .filter(|s| class_in_total(&report.classes, s.class))
    {
        let n = measure(s, by);
        if n == 0 {
            continue;
        }
        let suffix = Hue::of(s.class).suffix();
        let mut key = format!("[{}]{suffix}", s.class.name());
        let mut push = |frame: &str| {
            key.push(';');
            key.push_str(frame);
            key.push_str(suffix);
        };
        if s.stack_id.is_none() {
            push(FOLDED_STACK_UNAVAILABLE);
        } else if s.frames.is_empty() {
            push(FOLDED_UNKNOWN);
        } else {
            for f in s.frames.iter().rev() {
                push(&frame_name(f));
            }
        }
        let total = lines.entry(key).or_default();
        *total = total.saturating_add(n);
    }
    lines
}

fn title(report: &Report, by: FlameBy) -> String {
    let what = match by {
        FlameBy::Outstanding => "outstanding kernel memory",
        FlameBy::Allocated => "kernel memory allocated during the session",
    };
    let host = &report.session.hostname;
    if host.is_empty() {
        format!("memtrace: {what}")
    } else {
        format!("memtrace: {what} on {host}")
    }
}

/// `page, slab · 10m00s session · 300.0 MiB held · 2026-11-22 06:50:00 UTC · <legend>` (the
/// legend when it fits).
fn subtitle(report: &Report, by: FlameBy, total: u64) -> String {
    let s = &report.session;
    let mut kinds: Vec<&str> = s
        .kinds
        .iter()
        .filter(|k| k.traced)
        .map(|k| k.kind.as_str())
        .collect();
    if kinds.is_empty() {
        // Reports that do not list kinds come from page-only sessions.
        kinds.push(Kind::Page.name());
    }
    let mut parts = vec![
        kinds.join(", "),
        format!("{} session", format_duration(s.duration_secs)),
    ];
    let mut amount = match by {
        FlameBy::Outstanding => format!("{} held", format_bytes(total)),
        FlameBy::Allocated => format!("{} allocated", format_bytes(total)),
    };
    if s.sample_every > 1 {
        amount.push_str(&format!(" (estimated, 1 in {} sampled)", s.sample_every));
    } else if s.estimated() {
        amount.push_str(&format!(
            " (slab estimated, 1 in {} sampled)",
            s.slab_sample_every
        ));
    }
    parts.push(amount);
    if by == FlameBy::Outstanding && s.min_age_secs > 0.0 {
        parts.push(format!("min age {}", format_duration(s.min_age_secs)));
    }
    if s.started_at_unix > 0.0 {
        parts.push(format_unix_utc(s.started_at_unix));
    }
    let line = parts.join(" · ");
    let with_legend = format!("{line} · {LEGEND}");
    if with_legend.chars().count() <= SUBTITLE_MAX_CHARS {
        with_legend
    } else {
        line
    }
}

/// A graph with nothing to draw (inferno refuses empty input): title, subtitle and a message.
fn empty_svg(title: &str, subtitle: &str, message: &str) -> Vec<u8> {
    let (t, s, m) = (xml_escape(title), xml_escape(subtitle), xml_escape(message));
    format!(
        r##"<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="1200" height="110" viewBox="0 0 1200 110" xmlns="http://www.w3.org/2000/svg">
<title>{t}</title>
<defs><linearGradient id="background" y1="0" y2="1" x1="0" x2="0"><stop stop-color="#f8f8f8" offset="5%"/><stop stop-color="#e8e8e8" offset="95%"/></linearGradient></defs>
<rect x="0" y="0" width="100%" height="110" fill="url(#background)"/>
<text x="50%" y="24" text-anchor="middle" font-family="monospace" font-size="17px">{t}</text>
<text x="50%" y="48" text-anchor="middle" font-family="monospace" font-size="12px">{s}</text>
<text x="50%" y="84" text-anchor="middle" font-family="monospace" font-size="12px">{m}</text>
</svg>
"##
    )
    .into_bytes()
}

/// Text safe in XML content and attribute values.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && !matches!(c, '\t' | '\n') => out.push('_'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testkit::{mixed_report, sample_report};
    use crate::model::SessionInfo;
    use crate::render::folded::render_folded;

    /// A piece of the document, from [`parse_xml`].
    #[derive(Debug)]
    enum Ev {
        Start(String, Vec<(String, String)>),
        End(String),
        Text(String),
    }

    /// Resolves the predefined and numeric entities; panics on anything else.
    fn unescape(s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('&') {
            out.push_str(&rest[..i]);
            let end = rest[i..].find(';').expect("entity without ';'") + i;
            let ent = &rest[i + 1..end];
            let c = match ent {
                "amp" => '&',
                "lt" => '<',
                "gt" => '>',
                "quot" => '"',
                "apos" => '\'',
                _ if ent.starts_with("#x") => {
                    char::from_u32(u32::from_str_radix(&ent[2..], 16).expect("hex entity"))
                        .expect("char")
                }
                _ if ent.starts_with('#') => {
                    char::from_u32(ent[1..].parse().expect("decimal entity")).expect("char")
                }
                _ => panic!("unknown entity &{ent};"),
            };
            out.push(c);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// The attributes of a start tag's inside (after the name): `name="value"` pairs.
    fn parse_attrs(mut s: &str) -> Vec<(String, String)> {
        let mut attrs = Vec::new();
        loop {
            s = s.trim_start();
            if s.is_empty() {
                return attrs;
            }
            let eq = s
                .find('=')
                .unwrap_or_else(|| panic!("attribute without value: {s}"));
            let name = s[..eq].trim().to_string();
            assert!(
                !name.is_empty() && !name.contains(char::is_whitespace),
                "bad attribute name in {s}"
            );
            let rest = s[eq + 1..].trim_start();
            let quote = rest.chars().next().expect("attribute value");
            assert!(quote == '"' || quote == '\'', "unquoted value in {s}");
            let end = rest[1..].find(quote).expect("closing quote") + 1;
            let value = &rest[1..end];
            assert!(!value.contains('<'), "'<' in attribute value {value}");
            attrs.push((name, unescape(value)));
            s = &rest[end + 1..];
        }
    }

    /// A minimal XML reader: checks that the document is well formed (one root, tags nested
    /// and closed, attribute values quoted, entities known) and returns its elements and text.
    /// Skips the declaration, comments, the doctype and CDATA sections.
    fn parse_xml(doc: &str) -> Vec<Ev> {
        let mut evs = Vec::new();
        let mut open: Vec<String> = Vec::new();
        let mut roots = 0;
        let mut rest = doc;
        while !rest.is_empty() {
            let Some(lt) = rest.find('<') else {
                assert!(rest.trim().is_empty(), "text after the root: {rest:?}");
                break;
            };
            let text = &rest[..lt];
            if !text.is_empty() {
                assert!(
                    !open.is_empty() || text.trim().is_empty(),
                    "text outside the root: {text:?}"
                );
                evs.push(Ev::Text(unescape(text)));
            }
            rest = &rest[lt..];
            let skip = |rest: &str, start: &str, end: &str| -> Option<usize> {
                rest.starts_with(start)
                    .then(|| rest.find(end).expect("unterminated markup") + end.len())
            };
            if let Some(n) = skip(rest, "<?", "?>")
                .or_else(|| skip(rest, "<!--", "-->"))
                .or_else(|| skip(rest, "<![CDATA[", "]]>"))
                .or_else(|| skip(rest, "<!", ">"))
            {
                rest = &rest[n..];
                continue;
            }
            let gt = rest.find('>').expect("unterminated tag");
            let tag = &rest[1..gt];
            rest = &rest[gt + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let name = name.trim();
                assert_eq!(open.pop().as_deref(), Some(name), "mismatched </{name}>");
                evs.push(Ev::End(name.to_string()));
                continue;
            }
            let (tag, empty) = match tag.strip_suffix('/') {
                Some(t) => (t, true),
                None => (tag, false),
            };
            let name_end = tag.find(char::is_whitespace).unwrap_or(tag.len());
            let name = tag[..name_end].to_string();
            assert!(!name.is_empty(), "empty tag name");
            if open.is_empty() {
                roots += 1;
            }
            evs.push(Ev::Start(name.clone(), parse_attrs(&tag[name_end..])));
            if empty {
                evs.push(Ev::End(name));
            } else {
                open.push(name);
            }
        }
        assert!(open.is_empty(), "unclosed elements: {open:?}");
        assert_eq!(roots, 1, "not one root element");
        evs
    }

    /// The text of every `<title>` element.
    fn titles(evs: &[Ev]) -> Vec<String> {
        let mut out = Vec::new();
        let mut in_title = false;
        for e in evs {
            match e {
                Ev::Start(n, _) if n == "title" => {
                    in_title = true;
                    out.push(String::new());
                }
                Ev::End(n) if n == "title" => in_title = false,
                Ev::Text(t) if in_title => out.last_mut().expect("title").push_str(t),
                _ => {}
            }
        }
        out
    }

    /// The text of the `<text>` element with this id.
    fn text_by_id(evs: &[Ev], id: &str) -> Option<String> {
        let at = evs.iter().position(|e| {
            matches!(e, Ev::Start(n, a) if n == "text" && a.iter().any(|(k, v)| k == "id" && v == id))
        })?;
        match evs.get(at + 1) {
            Some(Ev::Text(t)) => Some(t.clone()),
            _ => Some(String::new()),
        }
    }

    /// A drawn frame: its title, the fill of its rectangle and its text.
    #[derive(Debug, Default)]
    struct Drawn {
        title: String,
        fill: (u8, u8, u8),
        text: String,
    }

    fn frames(evs: &[Ev]) -> Vec<Drawn> {
        let mut out = Vec::new();
        let mut cur: Option<Drawn> = None;
        let mut inside = "";
        for e in evs {
            match e {
                Ev::Start(n, attrs) => {
                    match n.as_str() {
                        "g" => cur = Some(Drawn::default()),
                        "rect" => {
                            if let (Some(d), Some((_, fill))) =
                                (cur.as_mut(), attrs.iter().find(|(k, _)| k == "fill"))
                            {
                                d.fill = parse_rgb(fill);
                            }
                        }
                        _ => {}
                    }
                    inside = if n == "title" || n == "text" { n } else { "" };
                }
                Ev::Text(t) => {
                    if let Some(d) = cur.as_mut() {
                        match inside {
                            "title" => d.title.push_str(t),
                            "text" => d.text.push_str(t),
                            _ => {}
                        }
                    }
                }
                Ev::End(n) => {
                    inside = "";
                    if n == "g" {
                        if let Some(d) = cur.take().filter(|d| !d.title.is_empty()) {
                            out.push(d);
                        }
                    }
                }
            }
        }
        out
    }

    fn parse_rgb(s: &str) -> (u8, u8, u8) {
        let inner = s
            .strip_prefix("rgb(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or_else(|| panic!("not rgb(): {s}"));
        let v: Vec<u8> = inner
            .split(',')
            .map(|c| c.trim().parse().expect("component"))
            .collect();
        assert_eq!(v.len(), 3, "{s}");
        (v[0], v[1], v[2])
    }

    /// `1234567` → `1,234,567`, as inferno writes counts.
    fn thousands(n: u64) -> String {
        let digits = n.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    }

    fn folded_total(r: &Report) -> u64 {
        render_folded(r)
            .lines()
            .map(|l| {
                l.rsplit_once(' ')
                    .and_then(|(_, n)| n.parse::<u64>().ok())
                    .expect("count")
            })
            .sum()
    }

    fn render(r: &Report, flame_by: FlameBy) -> (String, Vec<Ev>) {
        let svg = render_svg(r, &SvgOptions { flame_by }).expect("render");
        let svg = String::from_utf8(svg).expect("utf-8");
        let evs = parse_xml(&svg);
        (svg, evs)
    }

    fn is_aqua((r, g, b): (u8, u8, u8)) -> bool {
        g.abs_diff(b) <= 1 && g > r && b > r
    }

    fn is_green((r, g, b): (u8, u8, u8)) -> bool {
        g > r && g > b
    }

    fn is_orange((r, g, b): (u8, u8, u8)) -> bool {
        r > g && g > b && b == 0
    }

    #[test]
    fn xml_reader_catches_malformed_documents() {
        for bad in [
            "<svg><g></svg>",
            "<svg><g></g>",
            "<svg a=b></svg>",
            "<svg>&nbsp;</svg>",
            "<svg/><svg/>",
        ] {
            let r = std::panic::catch_unwind(|| parse_xml(bad));
            assert!(r.is_err(), "accepted {bad}");
        }
        assert_eq!(thousands(314_593_280), "314,593,280");
        assert_eq!(thousands(999), "999");
    }

    #[test]
    fn outstanding_graph() {
        let r = sample_report(&[], 0);
        let (svg, evs) = render(&r, FlameBy::Outstanding);
        let t = titles(&evs);
        let total = folded_total(&r);
        assert_eq!(total, 314_593_280);
        assert!(
            t.contains(&format!("all ({} bytes, 100%)", thousands(total))),
            "{t:#?}"
        );
        assert!(t.contains(&"skb_page_frag_refill (314,572,800 bytes, 99.99%)".to_string()));
        assert!(t.contains(&"[network] (314,572,800 bytes, 99.99%)".to_string()));
        assert!(t.contains(&"tcp_sendmsg (314,572,800 bytes, 99.99%)".to_string()));
        // No annotation leaks into what is shown.
        for d in frames(&evs) {
            for s in [&d.title, &d.text] {
                assert!(!s.contains("_[i]") && !s.contains("_[j]") && !s.contains("_[k]"));
            }
        }
        for suffix in ["_[i]", "_[j]", "_[k]"] {
            assert!(!svg.contains(suffix), "{suffix} in the SVG");
        }
        // The churn-only stack holds nothing.
        assert!(!svg.contains("my_func_with_odd_chars"));

        assert_eq!(
            text_by_id(&evs, "title").as_deref(),
            Some("memtrace: outstanding kernel memory on web-1")
        );
        assert_eq!(
            text_by_id(&evs, "subtitle").as_deref(),
            Some(
                "page · 30s session · 300.0 MiB held · 2023-11-14 22:13:20 UTC · aqua: network · \
                 green: user / page cache / shmem · orange: other kernel"
            )
        );
        assert!(svg.contains("var nametype = 'Function:';"));

        // Same input, same bytes (colours are not random).
        let again = render_svg(&r, &SvgOptions::default()).expect("render");
        assert_eq!(svg.as_bytes(), &again[..]);
    }

    #[test]
    fn frames_are_coloured_by_class() {
        let r = mixed_report(None);
        let (svg, evs) = render(&r, FlameBy::Outstanding);
        let drawn = frames(&evs);
        let t = titles(&evs);
        assert!(
            t.contains(&format!(
                "all ({} bytes, 100%)",
                thousands(folded_total(&r))
            )),
            "{t:#?}"
        );
        assert_eq!(folded_total(&r), r.totals.bytes);
        // Backing pages of traced kinds are not drawn.
        assert!(!svg.contains("allocate_slab") && !svg.contains("alloc_pages_bulk_noprof"));

        let by_title = |prefix: &str| -> Vec<&Drawn> {
            drawn
                .iter()
                .filter(|d| d.title.starts_with(prefix))
                .collect()
        };
        let network = by_title("[network] (");
        assert_eq!(network.len(), 1, "{drawn:#?}");
        assert_eq!(network[0].text, "[network]");
        assert!(is_aqua(network[0].fill), "{:?}", network[0].fill);
        let anon = by_title("[user-anon] (");
        assert_eq!(anon.len(), 1, "{drawn:#?}");
        assert!(
            is_green(anon[0].fill) && !is_aqua(anon[0].fill),
            "{:?}",
            anon[0]
        );
        let other = by_title("[other-kernel] (");
        assert_eq!(other.len(), 1, "{drawn:#?}");
        assert!(is_orange(other[0].fill), "{:?}", other[0].fill);
        assert!(!is_aqua(other[0].fill));

        // A function in two classes is drawn once per class, in each class's colour.
        let mpol = by_title("alloc_pages_mpol (");
        assert_eq!(mpol.len(), 2, "{drawn:#?}");
        assert!(mpol.iter().any(|d| is_aqua(d.fill)), "{mpol:#?}");
        assert!(
            mpol.iter().any(|d| is_green(d.fill) && !is_aqua(d.fill)),
            "{mpol:#?}"
        );
        // Every frame of a tower has its root's hue.
        for d in &drawn {
            let f = d.fill;
            assert!(
                d.title.starts_with("all (") || is_aqua(f) || is_green(f) || is_orange(f),
                "{d:?}"
            );
        }
    }

    #[test]
    fn allocated_measure() {
        let r = sample_report(&[], 0);
        let (svg, evs) = render(&r, FlameBy::Allocated);
        let t = titles(&evs);
        let allocated: u64 = r.stacks.iter().map(|s| s.allocated_bytes).sum();
        assert_eq!(allocated, 6_442_721_280);
        assert!(
            t.contains(&format!("all ({} bytes, 100%)", thousands(allocated))),
            "{t:#?}"
        );
        // The churn-only stack (1 GiB allocated, nothing held) is drawn now.
        assert!(
            t.iter()
                .any(|x| x.starts_with("my_func_with_odd_chars (1,073,741,824 bytes, ")),
            "{t:#?}"
        );
        assert!(t
            .iter()
            .any(|x| x.starts_with("skb_page_frag_refill (5,368,709,120 bytes, ")));
        assert_eq!(
            text_by_id(&evs, "title").as_deref(),
            Some("memtrace: kernel memory allocated during the session on web-1")
        );
        let sub = text_by_id(&evs, "subtitle").expect("subtitle");
        assert!(sub.contains(" · 6.0 GiB allocated · "), "{sub}");
        assert!(!svg.contains("_[k]") && !svg.contains("ERROR"));
    }

    #[test]
    fn sampled_and_multi_kind_subtitle() {
        let mut r = mixed_report(None);
        r.session.sample_every = 16;
        r.session.hostname = "db-2".into();
        r.session.duration_secs = 600.0;
        r.session.min_age_secs = 60.0;
        r.session.started_at_unix = 1_795_330_200.0;
        let (svg, evs) = render(&r, FlameBy::Outstanding);
        let sub = text_by_id(&evs, "subtitle").expect("subtitle");
        // Too long for the legend, which stays in the notes.
        assert_eq!(
            sub,
            format!(
                "page, slab, vmalloc · 10m00s session · {} held (estimated, 1 in 16 sampled) · \
                 min age 1m00s · 2026-11-22 06:50:00 UTC",
                format_bytes(r.totals.bytes)
            )
        );
        assert!(svg.contains(&format!("<!--NOTES: memtrace flame graph; {LEGEND}-->")));
        assert_eq!(
            text_by_id(&evs, "title").as_deref(),
            Some("memtrace: outstanding kernel memory on db-2")
        );

        // Exact, no min age: the legend fits.
        r.session.sample_every = 1;
        r.session.min_age_secs = 0.0;
        let (_, evs) = render(&r, FlameBy::Outstanding);
        let sub = text_by_id(&evs, "subtitle").expect("subtitle");
        assert_eq!(
            sub,
            format!(
                "page, slab, vmalloc · 10m00s session · {} held · 2026-11-22 06:50:00 UTC · \
                 {LEGEND}",
                format_bytes(r.totals.bytes)
            )
        );
        assert!(sub.chars().count() <= SUBTITLE_MAX_CHARS);
    }

    #[test]
    fn odd_names_stay_well_formed() {
        let mut r = sample_report(&[], 0);
        r.stacks[0].frames[4].symbol = Some("a<b>&\"c'".into());
        r.session.hostname = "h<&>".into();
        let (svg, evs) = render(&r, FlameBy::Outstanding);
        assert!(!svg.contains("a<b"));
        let t = titles(&evs);
        assert!(
            t.iter()
                .any(|x| x.starts_with("a<b>&\"c' (314,572,800 bytes")),
            "{t:#?}"
        );
        assert_eq!(
            text_by_id(&evs, "title").as_deref(),
            Some("memtrace: outstanding kernel memory on h<&>")
        );
    }

    #[test]
    fn empty_report_is_a_valid_svg() {
        let r = Report {
            session: SessionInfo {
                hostname: "idle <&> quiet".into(),
                duration_secs: 5.0,
                ..Default::default()
            },
            ..Default::default()
        };
        for by in [FlameBy::Outstanding, FlameBy::Allocated] {
            let (svg, evs) = render(&r, by);
            assert!(svg.starts_with("<?xml"));
            assert!(
                matches!(&evs[..], [Ev::Text(_), Ev::Start(n, _), ..] | [Ev::Start(n, _), ..] if n == "svg")
            );
            let t = titles(&evs);
            assert_eq!(t.len(), 1, "{t:#?}");
            assert!(t[0].starts_with("memtrace: ") && t[0].ends_with(" on idle <&> quiet"));
            assert!(svg.contains("page · 5.0s session · 0 B "), "{svg}");
            assert!(svg.contains("No stack "), "{svg}");
        }
        // Stacks with nothing in the measure draw nothing either.
        let mut r = sample_report(&[], 0);
        for s in &mut r.stacks {
            s.bytes = 0;
        }
        let (svg, _) = render(&r, FlameBy::Outstanding);
        assert!(svg.contains("No stack held memory at the end of the session."));
        let (svg, _) = render(&r, FlameBy::Allocated);
        assert!(!svg.contains("No stack"));
    }

    #[test]
    fn hues_of_classes() {
        assert_eq!(Hue::of(Class::Network).suffix(), "_[i]");
        for c in [Class::UserAnon, Class::PageCache, Class::Shmem] {
            assert_eq!(Hue::of(c), Hue::Green);
        }
        let orange = Class::ALL
            .iter()
            .filter(|c| Hue::of(**c) == Hue::Orange)
            .count();
        assert_eq!(orange, Class::ALL.len() - 4);
    }
}
