//! A strict checker for the renderers' tests: a validator of the Prometheus
//! text exposition format 0.0.4. (The JSON is read by `control/json.rs`,
//! which `regent check` uses too.)
//!
//! It is deliberately stricter than real consumers, so that anything it
//! accepts is read the same by every consumer.

use std::collections::{BTreeMap, BTreeSet};

/// A sample's labels, unescaped, in order.
pub(super) type Labels = Vec<(String, String)>;
/// One sample: metric name, labels, value.
pub(super) type Sample = (String, Labels, f64);

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses `{k="v",...}`; returns the labels, unescaped, and the rest.
fn labels(s: &str) -> Result<(Labels, &str), String> {
    let mut rest = s.strip_prefix('{').ok_or("labels must start with {")?;
    let mut out = Vec::new();
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((out, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !is_name(name) || name.contains(':') {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value must be quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, '\n') => return Err("raw newline in label value".into()),
                (_, c) => value.push(c),
            }
        };
        if out.iter().any(|(n, _)| n == name) {
            return Err(format!("duplicate label {name}"));
        }
        out.push((name.to_string(), value));
        rest = &rest[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Checks the exposition; returns every sample as (name, labels, value).
pub(super) fn check_exposition(text: &str) -> Result<Vec<Sample>, String> {
    if !text.ends_with('\n') {
        return Err("must end with a newline".into());
    }
    let mut help: BTreeSet<String> = BTreeSet::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut with_samples: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut series = BTreeSet::new();
    let mut samples = Vec::new();
    let mut histograms = Histograms::default();
    for (n, line) in text.lines().enumerate() {
        let at = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest
                .split_once(' ')
                .ok_or_else(|| at("HELP without text".into()))?;
            if !is_name(name) || doc.trim().is_empty() || !help.insert(name.into()) {
                return Err(at("bad or repeated HELP".into()));
            }
            if with_samples.contains(name) {
                return Err(at("HELP after samples".into()));
            }
            current = Some(name.into());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| at("TYPE without kind".into()))?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(at(format!("unknown type {kind}")));
            }
            if !help.contains(name) || types.insert(name.into(), kind.into()).is_some() {
                return Err(at("TYPE without HELP before it, or repeated".into()));
            }
            if with_samples.contains(name) || current.as_deref() != Some(name) {
                return Err(at("TYPE out of place".into()));
            }
        } else if line.starts_with('#') || line.is_empty() {
            return Err(at("stray comment or blank line".into()));
        } else {
            let brace = line
                .find('{')
                .ok_or_else(|| at("sample without labels".into()))?;
            let name = &line[..brace];
            if !is_name(name) {
                return Err(at("bad metric name".into()));
            }
            let family = current
                .as_deref()
                .filter(|f| types.contains_key(*f))
                .ok_or_else(|| at("sample before HELP and TYPE".into()))?;
            let kind = types[family].as_str();
            let part = if kind == "histogram" {
                match name.strip_prefix(family) {
                    Some("_bucket") => Part::Bucket,
                    Some("_sum") => Part::Sum,
                    Some("_count") => Part::Count,
                    _ => return Err(at("histogram sample not _bucket, _sum or _count".into())),
                }
            } else if name == family {
                Part::Whole
            } else {
                return Err(at("sample outside its family".into()));
            };
            if (kind == "counter") != family.ends_with("_total") {
                return Err(at("counters, and only counters, end in _total".into()));
            }
            let (ls, rest) = labels(&line[brace..]).map_err(at)?;
            if !ls.iter().any(|(k, _)| k == "cluster") {
                return Err(at("no cluster label".into()));
            }
            let value = rest
                .strip_prefix(' ')
                .ok_or_else(|| at("no space before the value".into()))?;
            let v: f64 = value.parse().map_err(|e| at(format!("value: {e}")))?;
            let counts = kind == "counter" || kind == "histogram";
            if !v.is_finite() || (counts && v < 0.0) {
                return Err(at("value out of range".into()));
            }
            let mut key = ls.clone();
            key.sort();
            if !series.insert((name.to_string(), key)) {
                return Err(at("duplicate series".into()));
            }
            if kind == "histogram" {
                histograms.add(family, part, &ls, v).map_err(at)?;
            }
            with_samples.insert(family.to_string());
            samples.push((name.to_string(), ls, v));
        }
    }
    histograms.finish()?;
    Ok(samples)
}

/// Which line of a histogram a sample is, or a sample of another type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Whole,
    Bucket,
    Sum,
    Count,
}

/// One histogram series as read so far.
#[derive(Debug, Default)]
struct HistogramSeries {
    /// `le` and cumulative count of each bucket, in order.
    buckets: Vec<(f64, f64)>,
    sum: Option<f64>,
    count: Option<f64>,
}

/// The histogram series of an exposition, by family and labels without `le`.
#[derive(Debug, Default)]
struct Histograms {
    series: BTreeMap<(String, Labels), HistogramSeries>,
}

impl Histograms {
    /// Checks one sample against what its series had so far: buckets in
    /// increasing `le`, counts that never fall and are whole, `_sum` and
    /// `_count` once each, after the `+Inf` bucket.
    fn add(&mut self, family: &str, part: Part, labels: &Labels, v: f64) -> Result<(), String> {
        let le = labels.iter().find(|(k, _)| k == "le").map(|(_, v)| v);
        let mut key: Labels = labels.iter().filter(|(k, _)| k != "le").cloned().collect();
        key.sort();
        let h = self.series.entry((family.to_string(), key)).or_default();
        let closed = h.buckets.last().is_some_and(|&(le, _)| le == f64::INFINITY);
        match (part, le) {
            (Part::Bucket, Some(le)) => {
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse::<f64>()
                        .ok()
                        .filter(|b| b.is_finite())
                        .ok_or_else(|| format!("bad le {le:?}"))?
                };
                if closed || h.sum.is_some() || h.count.is_some() {
                    return Err("bucket after +Inf, _sum or _count".into());
                }
                if let Some(&(last_le, last_n)) = h.buckets.last() {
                    if bound <= last_le {
                        return Err(format!("le {le} not above {last_le}"));
                    }
                    if v < last_n {
                        return Err(format!("bucket le {le} counts fewer than the one before"));
                    }
                }
                if v.fract() != 0.0 {
                    return Err("bucket count not whole".into());
                }
                h.buckets.push((bound, v));
            }
            (Part::Sum, None) if closed && h.sum.is_none() => h.sum = Some(v),
            (Part::Count, None) if closed && h.count.is_none() => {
                if v != h.buckets[h.buckets.len() - 1].1 {
                    return Err("_count differs from the +Inf bucket".into());
                }
                h.count = Some(v);
            }
            (Part::Bucket, None) => return Err("bucket without le".into()),
            _ => return Err("le out of place, or _sum or _count repeated or before +Inf".into()),
        }
        Ok(())
    }

    /// Every series ended with a `+Inf` bucket, a `_sum` and a `_count`.
    fn finish(&self) -> Result<(), String> {
        for ((family, labels), h) in &self.series {
            if h.sum.is_none() || h.count.is_none() {
                return Err(format!("{family} {labels:?}: no _sum or no _count"));
            }
        }
        Ok(())
    }
}
