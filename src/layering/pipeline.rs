//! nixpkgs' experimental `layeringPipeline`: the functions of its `flatten-references-graph`
//! (run by `dockerMakeLayers`), with the same semantics, so that nixpkgs users' pipelines
//! give the same layers here.
//!
//! A pipeline is a JSON list of steps `["function", arguments…]`, applied left to right to
//! a value that starts as the closure graph. A value is a *graph* (store paths and the
//! references among them), a *list* of values, or a *dict* of values under the keys
//! `main`, `common`, `rest` (in that order). At the end the value is flattened in order
//! (lists item by item, dicts by their values) and every non-empty graph is one layer.
//!
//! The graph: every path that is not left out (the customisation layer), and the
//! references among them; a left-out path takes its references with it, as nixpkgs'
//! `exclude_paths` does. Its paths are ordered by narSize, smallest first, and every
//! graph a step makes keeps that order. nixpkgs keeps the input order among equal
//! narSizes; Nix writes the graph sorted by path, so ties go by path here, which is the
//! same for Nix's input and independent of the input order for any other.
//!
//! | function | what it does |
//! |---|---|
//! | `popularity_contest` | graph → one single-path graph per path, most popular first (the counts and order of `closure-graph.py`, computed on this graph) |
//! | `limit_layers N` | list → its first N−1 items, then the rest merged into one graph |
//! | `split_paths PATHS` | graph → dict: `main` = the paths and what only they reach, `common` = what they share with the rest, `rest` = the rest; empty parts are left out. A path may be `{"children_of": P}` (the paths P refers to) |
//! | `subcomponent_out PATHS` | graph → dict: `main` = the paths and all they reach, `rest` = the others |
//! | `subcomponent_in PATHS` | graph → dict: `main` = the paths and all that reach them, `rest` = the others |
//! | `split_every N` | graph → list of graphs of N paths each (the last may be smaller) |
//! | `remove_paths PATHS` | graph → the graph without those paths (they go in no layer) |
//! | `over KEY STEP` | dict → the dict with STEP applied to its KEY |
//! | `map STEP` | list → STEP applied to each item |
//! | `pipe [STEPS]` | STEPS applied in turn (a sub-pipeline, for `over` and `map`) |
//! | `flatten` | anything → the flat list of its graphs |
//! | `reverse` | list → the list backwards |
//!
//! Paths a step names that are not in its graph are ignored, as in nixpkgs (after a
//! split, a path is only in one part). As in nixpkgs, `maxLayers` plays no part: the
//! pipeline alone decides how many layers there are (keep them under docker's 127).
//!
//! Where nixpkgs' code stops with a Python error on something whose meaning is plain,
//! this one does the plain thing instead (README lists these):
//! - `limit_layers N` on a list of fewer than N items keeps them all (nixpkgs' merge of
//!   the empty remainder raises; its empty layer would be dropped);
//! - `over KEY` on a dict without KEY (that part was empty) leaves the dict unchanged
//!   (nixpkgs raises `KeyError`); a KEY other than main/common/rest is an error;
//! - a graph where a list is expected (`limit_layers`, `reverse`, `map`, `flatten`, the
//!   end of the pipeline) counts as a list of that one graph (nixpkgs: "'Graph' object
//!   is not iterable");
//! - a single path string where a list of paths is expected is that one path (nixpkgs
//!   does so for `remove_paths` and silently matches nothing for the others).
//!
//! Anything else malformed (an unknown function, a wrong argument, a step applied to the
//! wrong kind of value) is an error naming the step by its place in the JSON, e.g.
//! `layeringPipeline[2] (split_every): expected a positive integer, got "x"`.

use super::{Input, StoreLayer};
use crate::attrs::GraphEntry;
use crate::graph::Graph;
use crate::popularity;
use anyhow::{bail, Result};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::HashMap;

/// How errors name the pipeline's top level.
const ROOT: &str = "layeringPipeline";

/// The functions a pipeline may use, for the error on an unknown one.
const FUNCTIONS: &str = "popularity_contest, limit_layers, split_paths, subcomponent_in, \
    subcomponent_out, split_every, over, map, pipe, flatten, remove_paths, reverse";

/// The layers the pipeline makes.
///
/// # Errors
/// A malformed pipeline or an unknown function, named by its place in the JSON, or a step
/// applied to the wrong kind of value.
pub fn layers(input: &Input<'_>, pipeline: &Value) -> Result<Vec<StoreLayer>> {
    let steps = parse_pipeline(pipeline, ROOT)?;
    let run = Run { graph: input.graph };
    let mut data = Data::Graph(run.start(input));
    for step in &steps {
        data = run.apply(step, data)?;
    }
    let mut parts = Vec::new();
    flatten_into(data, &mut parts);
    Ok(parts
        .into_iter()
        .filter(|part| !part.nodes.is_empty())
        .map(|part| StoreLayer {
            paths: part.nodes,
            reason: if part.reason.is_empty() { "the whole closure".into() } else { part.reason },
        })
        .collect())
}

// ---------------------------------------------------------------------------------------
// Parsing: the whole pipeline is checked before anything runs.

/// One step and where it is in the JSON (`layeringPipeline[1][2]`), for errors.
struct Step {
    at: String,
    kind: Kind,
}

enum Kind {
    PopularityContest,
    LimitLayers(usize),
    SplitPaths(Vec<SplitSpec>),
    Subcomponent(Direction, Vec<String>),
    SplitEvery(usize),
    Over(Key, Box<Step>),
    Map(Box<Step>),
    Pipe(Vec<Step>),
    Flatten,
    RemovePaths(Vec<String>),
    Reverse,
}

/// `subcomponent_out` follows references, `subcomponent_in` goes against them.
#[derive(Clone, Copy)]
enum Direction {
    Out,
    In,
}

/// One entry of `split_paths`' list.
enum SplitSpec {
    Path(String),
    /// `{"children_of": paths}`: the paths those paths refer to.
    ChildrenOf(Vec<String>),
}

/// The keys of the dicts `split_paths` and `subcomponent_*` make, in their order.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Main,
    Common,
    Rest,
}

impl Key {
    fn name(self) -> &'static str {
        match self {
            Key::Main => "main",
            Key::Common => "common",
            Key::Rest => "rest",
        }
    }
}

impl Step {
    fn name(&self) -> &'static str {
        match &self.kind {
            Kind::PopularityContest => "popularity_contest",
            Kind::LimitLayers(_) => "limit_layers",
            Kind::SplitPaths(_) => "split_paths",
            Kind::Subcomponent(Direction::Out, _) => "subcomponent_out",
            Kind::Subcomponent(Direction::In, _) => "subcomponent_in",
            Kind::SplitEvery(_) => "split_every",
            Kind::Over(..) => "over",
            Kind::Map(_) => "map",
            Kind::Pipe(_) => "pipe",
            Kind::Flatten => "flatten",
            Kind::RemovePaths(_) => "remove_paths",
            Kind::Reverse => "reverse",
        }
    }

    /// `layeringPipeline[2] (split_every)`: how errors name the step.
    fn label(&self) -> String {
        format!("{} ({})", self.at, self.name())
    }
}

fn parse_pipeline(value: &Value, at: &str) -> Result<Vec<Step>> {
    let Value::Array(steps) = value else {
        bail!("{at}: expected a list of steps such as [[\"popularity_contest\"], [\"limit_layers\", 100]], got {}", show(value));
    };
    steps.iter().enumerate().map(|(i, step)| parse_step(step, &format!("{at}[{i}]"))).collect()
}

fn parse_step(value: &Value, at: &str) -> Result<Step> {
    let Some((Value::String(name), args)) = value.as_array().and_then(|a| a.split_first()) else {
        bail!("{at}: expected a step [\"function\", arguments…], got {}", show(value));
    };
    // Checks the argument count against the usage shown in the error.
    let arity = |usage: &str, n: usize| -> Result<()> {
        if args.len() != n {
            let got = match args.len() {
                1 => "1 argument".to_string(),
                m => format!("{m} arguments"),
            };
            bail!("{at} ({name}): expected [{usage}], got {got}");
        }
        Ok(())
    };
    let kind = match name.as_str() {
        "popularity_contest" => {
            arity("\"popularity_contest\"", 0)?;
            Kind::PopularityContest
        }
        "limit_layers" => {
            arity("\"limit_layers\", N", 1)?;
            Kind::LimitLayers(positive(&args[0], at, name)?)
        }
        "split_every" => {
            arity("\"split_every\", N", 1)?;
            Kind::SplitEvery(positive(&args[0], at, name)?)
        }
        "split_paths" => {
            arity("\"split_paths\", [paths or {\"children_of\": paths}]", 1)?;
            Kind::SplitPaths(split_specs(&args[0], at)?)
        }
        "subcomponent_out" | "subcomponent_in" => {
            arity(&format!("{name:?}, [paths]"), 1)?;
            let direction = if name == "subcomponent_out" { Direction::Out } else { Direction::In };
            Kind::Subcomponent(direction, paths(&args[0], at, name)?)
        }
        "remove_paths" => {
            arity("\"remove_paths\", [paths]", 1)?;
            Kind::RemovePaths(paths(&args[0], at, name)?)
        }
        "over" => {
            arity("\"over\", \"main\" | \"common\" | \"rest\", step", 2)?;
            let key = match args[0].as_str() {
                Some("main") => Key::Main,
                Some("common") => Key::Common,
                Some("rest") => Key::Rest,
                _ => bail!(
                    "{at} (over): unknown key {}: split_paths makes \"main\", \"common\", \"rest\", subcomponent_in/out make \"main\", \"rest\"",
                    show(&args[0])
                ),
            };
            Kind::Over(key, Box::new(parse_step(&args[1], &format!("{at}[2]"))?))
        }
        "map" => {
            arity("\"map\", step", 1)?;
            Kind::Map(Box::new(parse_step(&args[0], &format!("{at}[1]"))?))
        }
        "pipe" => {
            arity("\"pipe\", [steps]", 1)?;
            Kind::Pipe(parse_pipeline(&args[0], &format!("{at}[1]"))?)
        }
        "flatten" => {
            arity("\"flatten\"", 0)?;
            Kind::Flatten
        }
        "reverse" => {
            arity("\"reverse\"", 0)?;
            Kind::Reverse
        }
        other => bail!("{at}: unknown function {other:?}; the functions are {FUNCTIONS}"),
    };
    Ok(Step { at: at.to_string(), kind })
}

fn positive(value: &Value, at: &str, name: &str) -> Result<usize> {
    match value.as_u64().filter(|&n| n > 0).and_then(|n| usize::try_from(n).ok()) {
        Some(n) => Ok(n),
        None => bail!("{at} ({name}): expected a positive integer, got {}", show(value)),
    }
}

/// A list of store paths, or one path.
fn paths(value: &Value, at: &str, name: &str) -> Result<Vec<String>> {
    match value {
        Value::String(path) => Ok(vec![path.clone()]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(j, item)| match item {
                Value::String(path) => Ok(path.clone()),
                other => bail!("{at} ({name}): expected a store path at [{j}] of its list, got {}", show(other)),
            })
            .collect(),
        other => bail!("{at} ({name}): expected a list of store paths, got {}", show(other)),
    }
}

fn split_specs(value: &Value, at: &str) -> Result<Vec<SplitSpec>> {
    let one = |j: usize, item: &Value| -> Result<SplitSpec> {
        match item {
            Value::String(path) => Ok(SplitSpec::Path(path.clone())),
            // nixpkgs looks only for this key, and so do we.
            Value::Object(map) if map.contains_key("children_of") => {
                Ok(SplitSpec::ChildrenOf(paths(&map["children_of"], at, "split_paths")?))
            }
            other => bail!(
                "{at} (split_paths): expected a store path or {{\"children_of\": paths}} at [{j}] of its list, got {}",
                show(other)
            ),
        }
    };
    match value {
        Value::Array(items) => items.iter().enumerate().map(|(j, item)| one(j, item)).collect(),
        single @ (Value::String(_) | Value::Object(_)) => Ok(vec![one(0, single)?]),
        other => bail!("{at} (split_paths): expected a list of store paths, got {}", show(other)),
    }
}

/// A JSON value for an error message, cut short if long.
fn show(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

// ---------------------------------------------------------------------------------------
// Running.

/// A graph: nodes in order (narSize, then path, as the whole graph), and the references
/// among them. Steps that delete references (split_paths) or merge graphs (limit_layers)
/// change the edges later steps see, as in nixpkgs.
struct Part {
    nodes: Vec<u32>,
    edges: Vec<(u32, u32)>,
    /// How this graph came about, for `plan` ("" for the whole closure).
    reason: String,
}

enum Data {
    Graph(Part),
    List(Vec<Data>),
    Dict(Vec<(Key, Data)>),
}

impl Data {
    /// What the value is, for errors.
    fn describe(&self) -> String {
        match self {
            Data::Graph(part) => format!("a graph of {}", count(part.nodes.len(), "path")),
            Data::List(items) => format!("a list of {}", count(items.len(), "item")),
            Data::Dict(entries) => {
                let keys: Vec<String> = entries.iter().map(|(k, _)| format!("{:?}", k.name())).collect();
                format!("a dict with keys {}", keys.join(", "))
            }
        }
    }
}

/// `1 path`, `2 paths`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `reason › label`: a graph's reason, from the reason of the graph it came from.
fn reason(parent: &str, label: impl std::fmt::Display) -> String {
    if parent.is_empty() {
        label.to_string()
    } else {
        format!("{parent} › {label}")
    }
}

struct Run<'a> {
    graph: &'a Graph,
}

impl Run<'_> {
    /// The whole graph minus what is left out, ordered by narSize then path.
    fn start(&self, input: &Input<'_>) -> Part {
        let graph = self.graph;
        let mut nodes: Vec<u32> = input.included().collect();
        nodes.sort_unstable_by(|&a, &b| {
            let (a, b) = (a as usize, b as usize);
            (graph.nar_sizes[a], &graph.paths[a]).cmp(&(graph.nar_sizes[b], &graph.paths[b]))
        });
        let edges = nodes
            .iter()
            .flat_map(|&u| {
                graph.children[u as usize].iter().filter(|&&c| !input.excluded[c as usize]).map(move |&c| (u, c))
            })
            .collect();
        Part { nodes, edges, reason: String::new() }
    }

    fn apply(&self, step: &Step, data: Data) -> Result<Data> {
        Ok(match &step.kind {
            Kind::PopularityContest => Data::List(self.popularity_contest(graph_arg(step, data)?)?),
            Kind::LimitLayers(n) => limit_layers(step, *n, list_arg(step, data)?)?,
            Kind::SplitPaths(specs) => self.split_paths(graph_arg(step, data)?, specs),
            Kind::Subcomponent(direction, paths) => self.subcomponent(graph_arg(step, data)?, *direction, paths),
            Kind::SplitEvery(n) => Data::List(split_every(graph_arg(step, data)?, *n)),
            Kind::RemovePaths(paths) => Data::Graph(self.remove_paths(graph_arg(step, data)?, paths)),
            Kind::Over(key, inner) => match data {
                Data::Dict(mut entries) => {
                    if let Some(i) = entries.iter().position(|(k, _)| k == key) {
                        let (k, value) = entries.remove(i);
                        entries.insert(i, (k, self.apply(inner, value)?));
                    }
                    Data::Dict(entries)
                }
                other => bail!(
                    "{}: expects a dict (made by split_paths or subcomponent_in/out), but the steps before it made {}",
                    step.label(),
                    other.describe()
                ),
            },
            Kind::Map(inner) => {
                Data::List(list_arg(step, data)?.into_iter().map(|item| self.apply(inner, item)).collect::<Result<_>>()?)
            }
            Kind::Pipe(steps) => steps.iter().try_fold(data, |data, step| self.apply(step, data))?,
            Kind::Flatten => {
                let mut parts = Vec::new();
                flatten_into(data, &mut parts);
                Data::List(parts.into_iter().map(Data::Graph).collect())
            }
            Kind::Reverse => {
                let mut items = list_arg(step, data)?;
                items.reverse();
                Data::List(items)
            }
        })
    }

    /// One graph per path, most popular first: the counts and order of `closure-graph.py`
    /// on this graph (nixpkgs' `popularity_contest` is the same algorithm).
    fn popularity_contest(&self, part: Part) -> Result<Vec<Data>> {
        let graph = self.graph;
        let local = Local::new(&part);
        let mut entries: Vec<GraphEntry<'_>> = part
            .nodes
            .iter()
            .map(|&n| GraphEntry {
                path: Cow::Borrowed(graph.paths[n as usize].as_str()),
                references: Vec::new(),
                nar_size: graph.nar_sizes[n as usize],
                nar_hash: None,
            })
            .collect();
        for &(u, v) in &part.edges {
            entries[local.index[&u]].references.push(Cow::Borrowed(graph.paths[v as usize].as_str()));
        }
        let sub = Graph::new(&entries)?;
        Ok(popularity::rank(&sub)
            .iter()
            .enumerate()
            .map(|(i, ranked)| {
                Data::Graph(Part {
                    nodes: vec![part.nodes[ranked.node as usize]],
                    edges: Vec::new(),
                    reason: reason(&part.reason, format_args!("popularity_contest #{}", i + 1)),
                })
            })
            .collect())
    }

    /// nixpkgs' `split_paths`: cut every reference to the split paths; what the rest of
    /// the graph still reaches from its roots is `rest`, what only the split paths reach
    /// is `main`, and what both reach is `common`.
    fn split_paths(&self, part: Part, specs: &[SplitSpec]) -> Data {
        let local = Local::new(&part);
        let mut split = Vec::new();
        for spec in specs {
            match spec {
                SplitSpec::Path(path) => split.extend(local.find(self.graph, path)),
                SplitSpec::ChildrenOf(paths) => {
                    for i in paths.iter().filter_map(|p| local.find(self.graph, p)) {
                        split.extend_from_slice(&local.children[i]);
                    }
                }
            }
        }
        if split.is_empty() {
            return Data::Dict(vec![(Key::Rest, Data::Graph(part))]);
        }
        let n = part.nodes.len();
        let mut is_split = vec![false; n];
        for &i in &split {
            is_split[i] = true;
        }
        let roots: Vec<usize> = (0..n).filter(|&i| local.parents[i].is_empty()).collect();
        if let [root] = roots[..] {
            if is_split[root] {
                // The graph's only root is split off: all of it is `main`, untouched.
                return Data::Dict(vec![(Key::Main, Data::Graph(part))]);
            }
        }
        let split_off = reach(&local.children, &split, &vec![false; n]);
        // From every root (nixpkgs joins several under a fake root), never entering a
        // split path: the references to them are cut.
        let starts: Vec<usize> = roots.into_iter().filter(|&r| !is_split[r]).collect();
        let rest_with_common = reach(&local.children, &starts, &is_split);
        let mut keep = [vec![false; n], vec![false; n], vec![false; n]];
        for i in 0..n {
            match (split_off[i], rest_with_common[i]) {
                (true, false) => keep[0][i] = true,
                (true, true) => keep[1][i] = true,
                (false, _) => keep[2][i] = true,
            }
        }
        let target_kept = |_: u32, v: u32| !is_split[local.index[&v]];
        let mut entries = Vec::new();
        for (key, keep) in [Key::Main, Key::Common, Key::Rest].into_iter().zip(keep) {
            let sub = local.induced(&part, &keep, target_kept, reason(&part.reason, format_args!("split_paths {}", key.name())));
            if !sub.nodes.is_empty() {
                entries.push((key, Data::Graph(sub)));
            }
        }
        Data::Dict(entries)
    }

    /// nixpkgs' `subcomponent_out`/`_in`: `main` is the paths and everything they reach
    /// (out) or everything that reaches them (in); `rest` the others. Both are always
    /// there, even when empty.
    fn subcomponent(&self, part: Part, direction: Direction, paths: &[String]) -> Data {
        let local = Local::new(&part);
        let starts: Vec<usize> = paths.iter().filter_map(|p| local.find(self.graph, p)).collect();
        let (adjacency, name) = match direction {
            Direction::Out => (&local.children, "subcomponent_out"),
            Direction::In => (&local.parents, "subcomponent_in"),
        };
        let main = reach(adjacency, &starts, &vec![false; part.nodes.len()]);
        let rest: Vec<bool> = main.iter().map(|&m| !m).collect();
        let all = |_: u32, _: u32| true;
        let main_part = local.induced(&part, &main, all, reason(&part.reason, format_args!("{name} main")));
        let rest_part = local.induced(&part, &rest, all, reason(&part.reason, format_args!("{name} rest")));
        Data::Dict(vec![(Key::Main, Data::Graph(main_part)), (Key::Rest, Data::Graph(rest_part))])
    }

    fn remove_paths(&self, part: Part, paths: &[String]) -> Part {
        let local = Local::new(&part);
        let mut keep = vec![true; part.nodes.len()];
        for i in paths.iter().filter_map(|p| local.find(self.graph, p)) {
            keep[i] = false;
        }
        local.induced(&part, &keep, |_, _| true, part.reason.clone())
    }
}

/// A graph step's argument: a graph, or an error saying how to reach one.
fn graph_arg(step: &Step, data: Data) -> Result<Part> {
    match data {
        Data::Graph(part) => Ok(part),
        Data::List(_) => bail!(
            "{}: expects a graph, but the steps before it made {}; apply it to each item with [\"map\", …]",
            step.label(),
            data.describe()
        ),
        Data::Dict(_) => bail!(
            "{}: expects a graph, but the steps before it made {}; apply it to one of them with [\"over\", KEY, …]",
            step.label(),
            data.describe()
        ),
    }
}

/// A list step's argument: a list, or a graph as a list of itself.
fn list_arg(step: &Step, data: Data) -> Result<Vec<Data>> {
    match data {
        Data::List(items) => Ok(items),
        Data::Graph(part) => Ok(vec![Data::Graph(part)]),
        Data::Dict(_) => bail!(
            "{}: expects a list, but the steps before it made {}; use [\"flatten\"] or [\"over\", KEY, …] first",
            step.label(),
            data.describe()
        ),
    }
}

/// The first `n − 1` items as they are, then the rest merged into one graph (the union of
/// their paths in order and of their references, as igraph's disjoint union).
fn limit_layers(step: &Step, n: usize, mut items: Vec<Data>) -> Result<Data> {
    let keep = n - 1;
    if items.len() <= keep + 1 {
        // Nothing to merge: a lone last item stays as it is (nixpkgs' reduce returns it
        // untouched), and fewer items than N stay all (see the module docs).
        return Ok(Data::List(items));
    }
    let rest = items.split_off(keep);
    let count = rest.len();
    let mut merged = Part { nodes: Vec::new(), edges: Vec::new(), reason: String::new() };
    let mut reasons = Vec::with_capacity(count);
    for (j, item) in rest.into_iter().enumerate() {
        match item {
            Data::Graph(part) => {
                merged.nodes.extend(part.nodes);
                merged.edges.extend(part.edges);
                reasons.push(part.reason);
            }
            other => bail!(
                "{}: item {} is {}, and only graphs can be merged into the last layer; use [\"flatten\"] first",
                step.label(),
                keep + j,
                other.describe()
            ),
        }
    }
    merged.reason = reason(&common_reason(&reasons), format_args!("limit_layers {n}: {count} merged"));
    items.push(Data::Graph(merged));
    Ok(Data::List(items))
}

/// The `›`-separated steps every reason starts with.
fn common_reason(reasons: &[String]) -> String {
    let Some(first) = reasons.first() else {
        return String::new();
    };
    let mut common: Vec<&str> = first.split(" › ").collect();
    for r in &reasons[1..] {
        let same = common.iter().zip(r.split(" › ")).take_while(|(a, b)| *a == b).count();
        common.truncate(same);
    }
    common.join(" › ")
}

/// Graphs of `n` paths each, in order, with the references within each.
fn split_every(part: Part, n: usize) -> Vec<Data> {
    let local = Local::new(&part);
    let mut chunks: Vec<Part> = part
        .nodes
        .chunks(n)
        .enumerate()
        .map(|(i, nodes)| Part {
            nodes: nodes.to_vec(),
            edges: Vec::new(),
            reason: reason(&part.reason, format_args!("split_every {n} #{}", i + 1)),
        })
        .collect();
    for &(u, v) in &part.edges {
        let (cu, cv) = (local.index[&u] / n, local.index[&v] / n);
        if cu == cv {
            chunks[cu].edges.push((u, v));
        }
    }
    chunks.into_iter().map(Data::Graph).collect()
}

/// Every graph in `data`, in order: lists item by item, dicts by their values.
fn flatten_into(data: Data, out: &mut Vec<Part>) {
    match data {
        Data::Graph(part) => out.push(part),
        Data::List(items) => items.into_iter().for_each(|item| flatten_into(item, out)),
        Data::Dict(entries) => entries.into_iter().for_each(|(_, value)| flatten_into(value, out)),
    }
}

/// A graph's nodes by position, with references by position both ways.
struct Local {
    index: HashMap<u32, usize>,
    children: Vec<Vec<usize>>,
    parents: Vec<Vec<usize>>,
}

impl Local {
    fn new(part: &Part) -> Local {
        let index: HashMap<u32, usize> = part.nodes.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let mut children = vec![Vec::new(); part.nodes.len()];
        let mut parents = vec![Vec::new(); part.nodes.len()];
        for &(u, v) in &part.edges {
            let (u, v) = (index[&u], index[&v]);
            children[u].push(v);
            parents[v].push(u);
        }
        Local { index, children, parents }
    }

    /// The position of `path`, if it is in this graph.
    fn find(&self, graph: &Graph, path: &str) -> Option<usize> {
        graph.node(path).and_then(|n| self.index.get(&n).copied())
    }

    /// The graph of the kept positions, in order, with the references among them that
    /// `edge_kept` keeps.
    fn induced(&self, part: &Part, keep: &[bool], edge_kept: impl Fn(u32, u32) -> bool, reason: String) -> Part {
        let nodes = part.nodes.iter().zip(keep).filter(|(_, &k)| k).map(|(&n, _)| n).collect();
        let edges = part
            .edges
            .iter()
            .copied()
            .filter(|&(u, v)| keep[self.index[&u]] && keep[self.index[&v]] && edge_kept(u, v))
            .collect();
        Part { nodes, edges, reason }
    }
}

/// Positions reachable from `starts` (included) along `adjacency`, never entering a
/// `blocked` one (a blocked start is still included).
fn reach(adjacency: &[Vec<usize>], starts: &[usize], blocked: &[bool]) -> Vec<bool> {
    let mut seen = vec![false; adjacency.len()];
    let mut stack = Vec::new();
    for &s in starts {
        if !seen[s] {
            seen[s] = true;
            stack.push(s);
        }
    }
    while let Some(v) = stack.pop() {
        for &w in &adjacency[v] {
            if !seen[w] && !blocked[w] {
                seen[w] = true;
                stack.push(w);
            }
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    //! Vectors from nixpkgs' own tests of `flatten-references-graph` (NixOS/nixpkgs,
    //! `pkgs/build-support/flatten-references-graph/src/flatten_references_graph/*_test.py`),
    //! restated here: their graphs, their expected path sets, in our documented order.
    use super::*;
    use crate::layering::popularity as classic;
    use serde_json::json;

    /// A graph from `(path, narSize, references)`.
    fn sized(nodes: &[(&str, u64, &[&str])]) -> Graph {
        let entries: Vec<GraphEntry> = nodes
            .iter()
            .map(|(path, size, refs)| GraphEntry {
                path: Cow::Borrowed(*path),
                references: refs.iter().map(|r| Cow::Borrowed(*r)).collect(),
                nar_size: *size,
                nar_hash: None,
            })
            .collect();
        Graph::new(&entries).unwrap()
    }

    /// A graph from edges and detached nodes, every narSize 0 (so paths order it).
    fn edges(edges: &[(&'static str, &'static str)], detached: &[&'static str]) -> Graph {
        let mut names: Vec<&str> = edges.iter().flat_map(|&(a, b)| [a, b]).chain(detached.iter().copied()).collect();
        names.sort_unstable();
        names.dedup();
        let refs: Vec<Vec<&str>> =
            names.iter().map(|n| edges.iter().filter(|(a, _)| a == n).map(|&(_, b)| b).collect()).collect();
        let nodes: Vec<(&str, u64, &[&str])> = names.iter().zip(&refs).map(|(n, r)| (*n, 0, r.as_slice())).collect();
        sized(&nodes)
    }

    /// The layers `pipeline` makes of `graph` without the `excluded` paths, as paths.
    fn run(graph: &Graph, excluded: &[&str], pipeline: Value) -> Result<Vec<Vec<String>>> {
        let excluded: Vec<bool> = graph.paths.iter().map(|p| excluded.contains(&p.as_str())).collect();
        let input = Input { graph, excluded: &excluded, available: 99 };
        Ok(layers(&input, &pipeline)?
            .into_iter()
            .map(|l| l.paths.iter().map(|&n| graph.paths[n as usize].clone()).collect())
            .collect())
    }

    fn ok(graph: &Graph, pipeline: Value) -> Vec<Vec<String>> {
        run(graph, &[], pipeline).unwrap()
    }

    fn err(graph: &Graph, pipeline: Value) -> String {
        format!("{:#}", run(graph, &[], pipeline).unwrap_err())
    }

    fn want(layers: &[&[&str]]) -> Vec<Vec<String>> {
        layers.iter().map(|l| l.iter().map(|p| p.to_string()).collect()).collect()
    }

    /// One part of a dict by name: key, paths, references (sorted).
    type Named = (&'static str, Vec<String>, Vec<(String, String)>);

    /// One step on the whole graph; the dict it makes, by name.
    fn dict(graph: &Graph, step: Value) -> Vec<Named> {
        let excluded = vec![false; graph.len()];
        let input = Input { graph, excluded: &excluded, available: 99 };
        let run = Run { graph };
        let step = parse_step(&step, ROOT).unwrap();
        let Data::Dict(entries) = run.apply(&step, Data::Graph(run.start(&input))).unwrap() else {
            panic!("not a dict");
        };
        let name = |n: u32| graph.paths[n as usize].clone();
        entries
            .into_iter()
            .map(|(key, value)| {
                let Data::Graph(part) = value else { panic!("not a graph") };
                let mut edges: Vec<(String, String)> = part.edges.iter().map(|&(u, v)| (name(u), name(v))).collect();
                edges.sort();
                (key.name(), part.nodes.iter().map(|&n| name(n)).collect(), edges)
            })
            .collect()
    }

    fn part(key: &'static str, paths: &[&str], edges: &[(&str, &str)]) -> Named {
        let mut edges: Vec<(String, String)> = edges.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        edges.sort();
        (key, paths.iter().map(|p| p.to_string()).collect(), edges)
    }

    /// flatten_references_graph_test.py's graph: A→C, B→C, B→D; narSizes 2, 4, 6, 8.
    fn frg_graph() -> Graph {
        sized(&[("A", 2, &["A", "C"]), ("B", 4, &["C", "D"]), ("C", 6, &["C"]), ("D", 8, &["D"])])
    }

    #[test]
    fn nixpkgs_flatten_references_graph_test() {
        let g = frg_graph();
        let split = json!([["split_paths", ["B"]]]);
        // B and its exclusive deps, the common deps, the rest.
        assert_eq!(ok(&g, split.clone()), want(&[&["B", "D"], &["C"], &["A"]]));
        let nested = json!([["split_paths", ["B"]], ["over", "main", ["subcomponent_in", ["B"]]]]);
        assert_eq!(ok(&g, nested), want(&[&["B"], &["D"], &["C"], &["A"]]));
        // exclude_paths: without A, B is the only root and is all of `main`.
        assert_eq!(run(&g, &["A"], split.clone()).unwrap(), want(&[&["B", "C", "D"]]));
        // Without D, B's layer loses it.
        assert_eq!(run(&g, &["D"], split).unwrap(), want(&[&["B"], &["C"], &["A"]]));
    }

    /// popularity_contest_test.py's graph.
    fn contest_graph() -> Graph {
        edges(
            &[
                ("Root1", "A"),
                ("A", "B"),
                ("A", "D"),
                ("D", "E"),
                ("B", "D"),
                ("B", "F"),
                ("Root2", "B"),
                ("Root3", "C"),
            ],
            &["X"],
        )
    }

    #[test]
    fn nixpkgs_popularity_contest_test() {
        let order = ["E", "D", "F", "B", "A", "C", "Root1", "Root2", "Root3", "X"];
        let one_each: Vec<&[&str]> = order.iter().map(std::slice::from_ref).collect();
        assert_eq!(ok(&contest_graph(), json!([["popularity_contest"]])), want(&one_each));
        assert_eq!(ok(&edges(&[], &[]), json!([["popularity_contest"]])), want(&[]));
    }

    #[test]
    fn nixpkgs_split_paths_test() {
        let g = contest_graph(); // split_paths_test.py uses the same graph
        let all = ["A", "B", "C", "D", "E", "F", "Root1", "Root2", "Root3", "X"];
        let all_edges =
            [("Root1", "A"), ("A", "B"), ("A", "D"), ("D", "E"), ("B", "D"), ("B", "F"), ("Root2", "B"), ("Root3", "C")];
        assert_eq!(dict(&g, json!(["split_paths", []])), vec![part("rest", &all, &all_edges)]);
        assert_eq!(dict(&edges(&[], &[]), json!(["split_paths", ["B"]])), vec![part("rest", &[], &[])]);
        assert_eq!(
            dict(&g, json!(["split_paths", ["B"]])),
            vec![
                part("main", &["B", "F"], &[("B", "F")]),
                part("common", &["D", "E"], &[("D", "E")]),
                part("rest", &["A", "C", "Root1", "Root2", "Root3", "X"], &[("Root1", "A"), ("Root3", "C")]),
            ]
        );
        assert_eq!(
            dict(&g, json!(["split_paths", ["B", "Root3"]])),
            vec![
                part("main", &["B", "C", "F", "Root3"], &[("B", "F"), ("Root3", "C")]),
                part("common", &["D", "E"], &[("D", "E")]),
                part("rest", &["A", "Root1", "Root2", "X"], &[("Root1", "A")]),
            ]
        );
        assert_eq!(
            dict(&g, json!(["split_paths", ["D"]])),
            vec![
                part("main", &["D", "E"], &[("D", "E")]),
                part(
                    "rest",
                    &["A", "B", "C", "F", "Root1", "Root2", "Root3", "X"],
                    &[("Root1", "A"), ("A", "B"), ("B", "F"), ("Root2", "B"), ("Root3", "C")]
                ),
            ]
        );
    }

    #[test]
    fn split_paths_children_of_and_a_lone_root() {
        let g = contest_graph();
        // The children of A are B and D: the same split as ["B", "D"].
        assert_eq!(
            dict(&g, json!(["split_paths", [{"children_of": "A"}]])),
            dict(&g, json!(["split_paths", ["B", "D"]]))
        );
        assert_eq!(
            dict(&g, json!(["split_paths", [{"children_of": ["A", "Root3"], "note": "ignored"}]])),
            dict(&g, json!(["split_paths", ["B", "C", "D"]]))
        );
        // A graph whose only root is split off is all `main`, references untouched.
        let chain = edges(&[("a", "b"), ("b", "c")], &[]);
        assert_eq!(
            dict(&chain, json!(["split_paths", ["a"]])),
            vec![part("main", &["a", "b", "c"], &[("a", "b"), ("b", "c")])]
        );
        // Paths not in the graph are ignored.
        assert_eq!(dict(&chain, json!(["split_paths", ["nope"]])), vec![part("rest", &["a", "b", "c"], &[("a", "b"), ("b", "c")])]);
    }

    /// subcomponent_test.py's graph.
    fn subcomponent_graph() -> Graph {
        edges(&[("Root1", "A"), ("A", "B"), ("A", "C"), ("B", "D"), ("B", "E"), ("Root2", "B"), ("Root3", "C")], &[])
    }

    #[test]
    fn nixpkgs_subcomponent_test() {
        let g = subcomponent_graph();
        assert_eq!(
            dict(&g, json!(["subcomponent_out", ["B"]])),
            vec![
                part("main", &["B", "D", "E"], &[("B", "D"), ("B", "E")]),
                part("rest", &["A", "C", "Root1", "Root2", "Root3"], &[("Root1", "A"), ("A", "C"), ("Root3", "C")]),
            ]
        );
        assert_eq!(
            dict(&g, json!(["subcomponent_out", ["B", "Root3"]])),
            vec![
                part("main", &["B", "C", "D", "E", "Root3"], &[("B", "D"), ("B", "E"), ("Root3", "C")]),
                part("rest", &["A", "Root1", "Root2"], &[("Root1", "A")]),
            ]
        );
        assert_eq!(
            dict(&g, json!(["subcomponent_in", ["B"]])),
            vec![
                part("main", &["A", "B", "Root1", "Root2"], &[("Root1", "A"), ("A", "B"), ("Root2", "B")]),
                part("rest", &["C", "D", "E", "Root3"], &[("Root3", "C")]),
            ]
        );
        assert_eq!(
            dict(&g, json!(["subcomponent_in", ["B", "Root3"]])),
            vec![
                part("main", &["A", "B", "Root1", "Root2", "Root3"], &[("Root1", "A"), ("A", "B"), ("Root2", "B")]),
                part("rest", &["C", "D", "E"], &[]),
            ]
        );
        // No paths: `main` is there and empty, and it makes no layer.
        let all = ["A", "B", "C", "D", "E", "Root1", "Root2", "Root3"];
        assert_eq!(dict(&g, json!(["subcomponent_out", []]))[0], part("main", &[], &[]));
        assert_eq!(ok(&g, json!([["subcomponent_in", []]])), want(&[&all]));
        assert_eq!(ok(&edges(&[], &[]), json!([["subcomponent_out", ["B"]]])), want(&[]));
    }

    #[test]
    fn limit_layers_keeps_n_minus_one_and_merges_the_rest() {
        let g = contest_graph();
        let pop = ["E", "D", "F", "B", "A", "C", "Root1", "Root2", "Root3", "X"];
        let limited = |n: u64| ok(&g, json!([["popularity_contest"], ["limit_layers", n]]));
        assert_eq!(limited(1), want(&[&pop]));
        assert_eq!(limited(3), want(&[&["E"], &["D"], &["F", "B", "A", "C", "Root1", "Root2", "Root3", "X"]]));
        // As many items as N, or fewer: nothing merges.
        let one_each: Vec<&[&str]> = pop.iter().map(std::slice::from_ref).collect();
        for n in [10, 11, 100] {
            assert_eq!(limited(n), want(&one_each), "limit_layers {n}");
        }
        // lib_test.py's test_limit_layers_nothing_to_do: one graph, limit 1.
        assert_eq!(ok(&g, json!([["split_every", 100], ["limit_layers", 1]])), want(&[&["A", "B", "C", "D", "E", "F", "Root1", "Root2", "Root3", "X"]]));
        // A lone last item stays as it is, whatever it is; two that are not graphs do not merge.
        let nested = json!([["split_every", 4], ["map", ["split_every", 2]], ["limit_layers", 3]]);
        assert_eq!(ok(&g, nested), want(&[&["A", "B"], &["C", "D"], &["E", "F"], &["Root1", "Root2"], &["Root3", "X"]]));
        let e = err(&g, json!([["split_every", 4], ["map", ["split_every", 2]], ["limit_layers", 2]]));
        assert!(e.contains("layeringPipeline[2] (limit_layers): item 1 is a list of 2 items"), "{e}");
    }

    #[test]
    fn the_2024_default_pipeline_is_the_classic_popularity_split() {
        // nixpkgs' default from Nov 2024 to 25.11 was [["popularity_contest"],
        // ["limit_layers", available]]: with nothing left out of the graph it makes the
        // same layers as the classic split, on any graph and any number of layers.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |bound: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % bound
        };
        for case in 0..60 {
            let n = 1 + next(40) as usize;
            let names: Vec<String> = (0..n).map(|i| format!("/nix/store/{:032}-p{}", next(5), i)).collect();
            let mut refs: Vec<Vec<&str>> = vec![Vec::new(); n];
            for (i, r) in refs.iter_mut().enumerate() {
                for later in &names[i + 1..] {
                    if next(100) < 15 {
                        r.push(later.as_str());
                    }
                }
            }
            let nodes: Vec<(&str, u64, &[&str])> =
                names.iter().zip(&refs).map(|(p, r)| (p.as_str(), next(3), r.as_slice())).collect();
            let g = sized(&nodes);
            let excluded = vec![false; n];
            for available in 1..n + 3 {
                let input = Input { graph: &g, excluded: &excluded, available };
                let pipeline = json!([["popularity_contest"], ["limit_layers", available]]);
                let ours: Vec<Vec<u32>> = layers(&input, &pipeline).unwrap().into_iter().map(|l| l.paths).collect();
                let theirs: Vec<Vec<u32>> = classic::layers(&input).into_iter().map(|l| l.paths).collect();
                assert_eq!(ours, theirs, "case {case}: {n} paths, {available} layers");
            }
        }
    }

    #[test]
    fn popularity_is_counted_without_the_left_out_customisation_layer() {
        // nixpkgs' pipeline drops exclude_paths before counting; the classic split counted
        // with the customisation layer (R here, which refers to p3 besides the roots), so
        // with one the two can order paths differently.
        let g = edges(
            &[("p0", "p1"), ("p0", "p4"), ("p2", "p3"), ("p2", "p4"), ("R", "p0"), ("R", "p2"), ("R", "p3"), ("R", "p5"), ("R", "p6")],
            &[],
        );
        let excluded: Vec<bool> = g.paths.iter().map(|p| p == "R").collect();
        let input = Input { graph: &g, excluded: &excluded, available: 99 };
        let names = |layers: Vec<StoreLayer>| -> Vec<String> {
            layers.iter().map(|l| g.paths[l.paths[0] as usize].clone()).collect()
        };
        let pipeline = layers(&input, &json!([["popularity_contest"]])).unwrap();
        assert_eq!(names(pipeline), ["p4", "p1", "p3", "p0", "p2", "p5", "p6"]);
        assert_eq!(names(classic::layers(&input)), ["p4", "p3", "p1", "p0", "p2", "p5", "p6"]);
    }

    #[test]
    fn paths_are_ordered_by_nar_size_then_path_whatever_the_input_order() {
        let nodes = [("d", 1, &[][..]), ("c", 5, &[]), ("b", 1, &[]), ("a", 9, &["d"])];
        let mut reversed = nodes;
        reversed.reverse();
        for g in [sized(&nodes), sized(&reversed)] {
            assert_eq!(ok(&g, json!([])), want(&[&["b", "d", "c", "a"]]));
            assert_eq!(ok(&g, json!([["split_every", 3]])), want(&[&["b", "d", "c"], &["a"]]));
        }
    }

    #[test]
    fn over_map_pipe_flatten_reverse_remove_paths() {
        let g = frg_graph();
        // The example of nixpkgs' manual pull request: one package's closure apart, the rest by popularity.
        let p = json!([["subcomponent_out", ["B"]], ["over", "rest", ["pipe", [["popularity_contest"], ["limit_layers", 100]]]]]);
        assert_eq!(ok(&g, p), want(&[&["B", "C", "D"], &["A"]]));
        let p = json!([["popularity_contest"], ["reverse"], ["limit_layers", 3]]);
        assert_eq!(ok(&g, p), want(&[&["B"], &["A"], &["D", "C"]]));
        let p = json!([["remove_paths", "C"], ["split_every", 1]]);
        assert_eq!(ok(&g, p), want(&[&["A"], &["B"], &["D"]]));
        let p = json!([["split_paths", ["B"]], ["flatten"], ["reverse"]]);
        assert_eq!(ok(&g, p), want(&[&["A"], &["C"], &["B", "D"]]));
        let p = json!([["split_every", 2], ["map", ["popularity_contest"]]]);
        assert_eq!(ok(&g, p), want(&[&["A"], &["B"], &["C"], &["D"]]));
        // split_every keeps the references within each part: E, D, B, A by popularity.
        let p = json!([["split_every", 5], ["map", ["pipe", [["popularity_contest"], ["limit_layers", 1]]]]]);
        assert_eq!(ok(&contest_graph(), p), want(&[&["E", "D", "B", "A", "C"], &["F", "Root1", "Root2", "Root3", "X"]]));
        // A key the dict lacks (its part was empty) leaves it as it is.
        let p = json!([["split_paths", ["D"]], ["over", "common", ["split_every", 1]]]);
        assert_eq!(ok(&g, p), want(&[&["D"], &["A", "B", "C"]]));
    }

    #[test]
    fn reasons_say_where_a_layer_comes_from() {
        let g = frg_graph();
        let excluded = vec![false; g.len()];
        let input = Input { graph: &g, excluded: &excluded, available: 99 };
        let p = json!([["split_paths", ["B"]], ["over", "rest", ["pipe", [["popularity_contest"], ["limit_layers", 1]]]]]);
        let reasons: Vec<String> = layers(&input, &p).unwrap().into_iter().map(|l| l.reason).collect();
        assert_eq!(reasons, ["split_paths main", "split_paths common", "split_paths rest › popularity_contest #1"].map(String::from));
        let g2 = contest_graph();
        let excluded2 = vec![false; g2.len()];
        let input2 = Input { graph: &g2, excluded: &excluded2, available: 99 };
        let p = json!([["split_paths", ["D"]], ["over", "rest", ["pipe", [["popularity_contest"], ["limit_layers", 2]]]]]);
        let reasons: Vec<String> = layers(&input2, &p).unwrap().into_iter().map(|l| l.reason).collect();
        let merged = "split_paths rest › limit_layers 2: 7 merged";
        assert_eq!(reasons, ["split_paths main", "split_paths rest › popularity_contest #1", merged].map(String::from));
        let p = json!([["popularity_contest"], ["limit_layers", 2]]);
        let reasons: Vec<String> = layers(&input, &p).unwrap().into_iter().map(|l| l.reason).collect();
        assert_eq!(reasons, ["popularity_contest #1", "limit_layers 2: 3 merged"].map(String::from));
        assert_eq!(layers(&input, &json!([])).unwrap()[0].reason, "the whole closure");
    }

    #[test]
    fn malformed_pipelines_name_the_step() {
        let g = frg_graph();
        let cases = [
            (json!({"a": 1}), "layeringPipeline: expected a list of steps"),
            (json!([["popularity_contest"], "limit_layers"]), "layeringPipeline[1]: expected a step [\"function\", arguments…], got \"limit_layers\""),
            (json!([[]]), "layeringPipeline[0]: expected a step"),
            (json!([[7]]), "layeringPipeline[0]: expected a step"),
            (json!([["popularity"]]), "layeringPipeline[0]: unknown function \"popularity\"; the functions are popularity_contest,"),
            (json!([["popularity_contest", 3]]), "layeringPipeline[0] (popularity_contest): expected [\"popularity_contest\"], got 1 argument"),
            (json!([["limit_layers"]]), "layeringPipeline[0] (limit_layers): expected [\"limit_layers\", N], got 0 arguments"),
            (json!([["split_every", "x"]]), "layeringPipeline[0] (split_every): expected a positive integer, got \"x\""),
            (json!([["limit_layers", 0]]), "(limit_layers): expected a positive integer, got 0"),
            (json!([["limit_layers", -3]]), "(limit_layers): expected a positive integer, got -3"),
            (json!([["split_every", 2.5]]), "(split_every): expected a positive integer, got 2.5"),
            (json!([["remove_paths", ["A", 3]]]), "layeringPipeline[0] (remove_paths): expected a store path at [1] of its list, got 3"),
            (json!([["subcomponent_out", {"a": 1}]]), "(subcomponent_out): expected a list of store paths"),
            (json!([["split_paths", [{"parents_of": "A"}]]]), "(split_paths): expected a store path or {\"children_of\": paths} at [0]"),
            (json!([["over", "Rest", ["flatten"]]]), "layeringPipeline[0] (over): unknown key \"Rest\""),
            (json!([["over", "rest", ["frobnicate"]]]), "layeringPipeline[0][2]: unknown function \"frobnicate\""),
            (
                json!([["split_paths", ["B"]], ["over", "rest", ["pipe", [["popularity_contest"], ["split_every", 0]]]]]),
                "layeringPipeline[1][2][1][1] (split_every): expected a positive integer, got 0",
            ),
            (json!([["map", ["limit_layers", "many"]]]), "layeringPipeline[0][1] (limit_layers): expected a positive integer"),
            (json!([["pipe", "popularity_contest"]]), "layeringPipeline[0][1]: expected a list of steps"),
        ];
        for (pipeline, fragment) in cases {
            let e = err(&g, pipeline.clone());
            assert!(e.contains(fragment), "{pipeline}: {e}");
        }
    }

    #[test]
    fn a_step_on_the_wrong_kind_of_value_is_named() {
        let g = frg_graph();
        let cases = [
            (json!([["popularity_contest"], ["split_every", 2]]), "layeringPipeline[1] (split_every): expects a graph, but the steps before it made a list of 4 items; apply it to each item with [\"map\", …]"),
            (json!([["split_paths", ["B"]], ["popularity_contest"]]), "layeringPipeline[1] (popularity_contest): expects a graph, but the steps before it made a dict with keys \"main\", \"common\", \"rest\""),
            (json!([["split_paths", ["B"]], ["limit_layers", 2]]), "layeringPipeline[1] (limit_layers): expects a list, but the steps before it made a dict"),
            (json!([["over", "rest", ["flatten"]]]), "layeringPipeline[0] (over): expects a dict"),
            (json!([["split_every", 2], ["over", "rest", ["flatten"]]]), "layeringPipeline[1] (over): expects a dict (made by split_paths or subcomponent_in/out), but the steps before it made a list of 2 items"),
        ];
        for (pipeline, fragment) in cases {
            let e = err(&g, pipeline.clone());
            assert!(e.contains(fragment), "{pipeline}: {e}");
        }
        // A graph where a list is expected is a list of that graph.
        assert_eq!(ok(&g, json!([["reverse"], ["limit_layers", 5]])), want(&[&["A", "B", "C", "D"]]));
    }
}
