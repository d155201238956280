//! `.attrs.json` in, typed and checked values out.
//!
//! Nix writes every derivation attribute into `.attrs.json` under `__structuredAttrs`, plus
//! its own (`builder`, `system`, `outputs`) and one key per `exportReferencesGraph` entry.
//! We read only the keys we need; each missing or mistyped one is an error naming the key.

use crate::graph::Graph;
use crate::layering::{self, Strategy};
use crate::reference;
use crate::store_path::{self, StorePath};
use crate::strict_json::{self, TopLevel};
use crate::time::Timestamp;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A parsed attributes file and where it came from.
pub struct Attrs {
    /// The top-level JSON object, except its lists (see `lists`).
    pub map: Map<String, Value>,
    /// Where each top-level list value (closure graphs, `contents`) lies in `text`. Lists
    /// are parsed on demand, straight from the file's text: a 100,000-path graph is 80 MB
    /// of JSON, and a copy or a `Value` tree of it would take that again or several times.
    lists: BTreeMap<String, Range<usize>>,
    /// The file's text.
    text: String,
    /// The file it was read from (for error messages).
    pub source: PathBuf,
}

/// Finds the attributes file: `explicit`, else `$NIX_ATTRS_JSON_FILE` if it exists (inside
/// Nix 2.8's sandbox it names a host path that does not), else `$NIX_BUILD_TOP/.attrs.json`,
/// else `./.attrs.json`.
///
/// # Errors
/// Lists every place looked at when none exists.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    let mut candidates = Vec::new();
    if let Some(file) = std::env::var_os("NIX_ATTRS_JSON_FILE") {
        candidates.push(PathBuf::from(file));
    }
    if let Some(top) = std::env::var_os("NIX_BUILD_TOP") {
        candidates.push(Path::new(&top).join(".attrs.json"));
    }
    candidates.push(PathBuf::from(".attrs.json"));
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    bail!(
        "no attributes file: looked for {} (pass --attrs FILE)",
        tried.join(", ")
    )
}

impl Attrs {
    /// Reads and parses `path`. A first line starting with `#!` is skipped, so that a
    /// `stream-script` output is both an executable and an attributes file.
    ///
    /// # Errors
    /// The file cannot be read, is not JSON, or is not a JSON object.
    pub fn read(path: &Path) -> Result<Attrs> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read attributes file `{}`", path.display()))?;
        Attrs::parse(bytes, path)
    }

    /// Parses attributes from JSON text (after an optional `#!` line); `source` is named
    /// in errors.
    ///
    /// # Errors
    /// Not JSON, or not a JSON object.
    pub fn parse(bytes: Vec<u8>, source: &Path) -> Result<Attrs> {
        let text = String::from_utf8(bytes).map_err(|e| {
            anyhow!("`{}` is not valid JSON: not UTF-8 at byte {}", source.display(), e.utf8_error().valid_up_to())
        })?;
        let json_start = match text.strip_prefix("#!") {
            // JSON starts after the line's `\n`; `#!` is 2 bytes.
            Some(rest) => rest.find('\n').map_or(text.len(), |nl| 2 + nl + 1),
            None => 0,
        };
        let json = &text[json_start..];
        let raw = match serde_json::from_str::<TopLevel>(json) {
            Ok(TopLevel(raw)) => raw,
            Err(e) => {
                let what = match serde_json::from_str::<Value>(json) {
                    Ok(Value::Object(_)) => format!("`{}` is not a valid attributes file", source.display()),
                    Ok(other) => format!("`{}` must hold a JSON object, not {}", source.display(), type_name(&other)),
                    Err(_) => format!("`{}` is not valid JSON", source.display()),
                };
                return Err(anyhow::Error::new(e).context(what));
            }
        };
        let mut map = Map::new();
        let mut lists = BTreeMap::new();
        for (key, value) in raw {
            let value = value.get();
            if value.starts_with('[') {
                // `value` is a slice of `text`: keep where it is, not a copy.
                let start = value.as_ptr() as usize - text.as_ptr() as usize;
                lists.insert(key, start..start + value.len());
            } else {
                let value = strict_json::parse_value(value).with_context(|| format!("key `{key}`"))?;
                map.insert(key, value);
            }
        }
        Ok(Attrs { map, lists, text, source: source.to_path_buf() })
    }

    /// The JSON text of the top-level list at `key`.
    fn list(&self, key: &str) -> Option<&str> {
        self.lists.get(key).map(|range| &self.text[range.clone()])
    }

    /// The JSON text of the top-level list at `key`, if there is one (for readers that
    /// need other fields of a closure graph than [`Attrs::graph`] keeps).
    pub fn list_text(&self, key: &str) -> Option<&str> {
        self.list(key)
    }

    /// The whole object again, as JSON text (keys sorted).
    pub fn to_json(&self) -> Result<String> {
        let mut all: BTreeMap<&str, Cow<'_, RawValue>> = BTreeMap::new();
        for (key, value) in &self.map {
            all.insert(key, Cow::Owned(serde_json::value::to_raw_value(value)?));
        }
        for (key, range) in &self.lists {
            all.insert(key, Cow::Borrowed(serde_json::from_str(&self.text[range.clone()])?));
        }
        Ok(serde_json::to_string(&all)?)
    }

    /// The value at `key`, treating JSON `null` as absent. Lists are parsed on demand,
    /// so a list given where a scalar belongs is seen, and rejected, by the caller.
    ///
    /// # Errors
    /// A list that cannot be parsed (nested deeper than 128 levels, a repeated key in an
    /// object inside it): an error naming `key`, never a silent default.
    pub fn get(&self, key: &str) -> Result<Option<Cow<'_, Value>>> {
        if let Some(text) = self.list(key) {
            let value = strict_json::parse_value(text).with_context(|| format!("key `{key}`"))?;
            return Ok(Some(Cow::Owned(value)));
        }
        Ok(self.map.get(key).filter(|v| !v.is_null()).map(Cow::Borrowed))
    }

    /// Whether `key` is present and not null (without parsing a list).
    pub fn has(&self, key: &str) -> bool {
        self.lists.contains_key(key) || self.map.get(key).is_some_and(|v| !v.is_null())
    }

    fn string_or(&self, key: &str, default: &str) -> Result<String> {
        match self.get(key)? {
            None => Ok(default.to_string()),
            Some(v) => as_str(key, &v).map(str::to_string),
        }
    }

    fn int_or(&self, key: &str, default: u64) -> Result<u64> {
        match self.get(key)? {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .ok_or_else(|| anyhow!("key `{key}`: expected a non-negative integer, got {v}")),
        }
    }

    /// A uid or gid, default 0: at most [`MAX_ID`].
    fn id_or(&self, key: &str) -> Result<u64> {
        let id = self.int_or(key, 0)?;
        if id > MAX_ID {
            bail!("key `{key}`: {id} is too large; user and group ids go up to {MAX_ID} (2^32 − 2)");
        }
        Ok(id)
    }

    /// A string that goes into tar headers, where a NUL byte would end it early.
    fn header_string_or(&self, key: &str, default: &str) -> Result<String> {
        let value = self.string_or(key, default)?;
        if value.contains('\0') {
            bail!("key `{key}`: {value:?} holds a NUL character, which cannot go in a tar header");
        }
        Ok(value)
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key)?.as_deref() {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => bail!("key `{key}`: expected true or false, got {v}"),
        }
    }

    /// `outputs.out`: where a builder writes (structured attrs do not set `$out`).
    pub fn output_path(&self) -> Result<Option<String>> {
        match self.get("outputs")?.as_deref() {
            None => Ok(None),
            Some(Value::Object(outputs)) => match outputs.get("out") {
                None | Some(Value::Null) => Ok(None),
                Some(v) => as_str("outputs.out", v).map(|s| Some(s.to_string())),
            },
            Some(v) => bail!("key `outputs`: expected an object, got {v}"),
        }
    }

    /// The closure graph stored under `key` (an `exportReferencesGraph` entry). Its
    /// strings borrow from the attrs text.
    ///
    /// # Errors
    /// The key is missing, is not a list, or an entry lacks `path`/`references` or has a
    /// mistyped `narSize`.
    pub fn graph(&self, key: &str) -> Result<Vec<GraphEntry<'_>>> {
        let Some(text) = self.list(key) else {
            if let Some(other) = self.get(key)? {
                bail!("key `{key}`: expected a list of path entries, got {}", type_name(&other));
            }
            bail!(
                "key `{key}` is missing from `{}` (it should hold exportReferencesGraph.{key})",
                self.source.display()
            );
        };
        match serde_json::from_str::<Vec<TypedEntry>>(text) {
            Ok(entries) => entries
                .into_iter()
                .enumerate()
                .map(|(i, e)| {
                    if let Some(hash) = &e.nar_hash {
                        check_nar_hash(&format!("{key}[{i}]"), &e.path.0, &hash.0)?;
                    }
                    Ok(GraphEntry {
                        path: e.path.0,
                        references: e.references.into_iter().map(|r| r.0).collect(),
                        nar_size: e.nar_size.unwrap_or(0),
                        nar_hash: e.nar_hash.map(|h| h.0),
                    })
                })
                .collect(),
            // The fast typed parse failed: find and name the culprit the slow way.
            Err(typed_error) => {
                check_graph(key, &serde_json::from_str(text).with_context(|| format!("key `{key}`"))?)?;
                Err(anyhow!("key `{key}`: {typed_error}"))
            }
        }
    }
}

/// A graph entry as Nix writes it (other keys, such as `closureSize` and `ca`, ignored).
#[derive(serde::Deserialize)]
struct TypedEntry<'a> {
    #[serde(borrow)]
    path: Text<'a>,
    #[serde(borrow)]
    references: Vec<Text<'a>>,
    #[serde(rename = "narSize")]
    nar_size: Option<u64>,
    #[serde(borrow, rename = "narHash")]
    nar_hash: Option<Text<'a>>,
}

/// A JSON string, borrowed from the input unless it holds escapes. (serde's own
/// `Cow<str>` borrows only as a field of its own, not inside a `Vec`.)
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor<'a>(std::marker::PhantomData<&'a str>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for TextVisitor<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(s.to_string())))
            }
        }
        deserializer.deserialize_str(TextVisitor(std::marker::PhantomData))
    }
}

/// One path of an `exportReferencesGraph` closure, as Nix writes it.
#[derive(Clone, Debug)]
pub struct GraphEntry<'a> {
    /// The store path.
    pub path: Cow<'a, str>,
    /// Paths it refers to; usually includes itself.
    pub references: Vec<Cow<'a, str>>,
    /// Size of its NAR serialisation (0 when absent).
    pub nar_size: u64,
    /// Its `narHash` as Nix wrote it, checked (absent in hand-written graphs).
    pub nar_hash: Option<Cow<'a, str>>,
}

/// Names the first entry of a graph that is not as Nix writes it.
fn check_graph(key: &str, value: &Value) -> Result<()> {
    let Value::Array(items) = value else {
        bail!("key `{key}`: expected a list of path entries, got {}", type_name(value));
    };
    for (i, item) in items.iter().enumerate() {
        let at = format!("{key}[{i}]");
        let Value::Object(entry) = item else {
            bail!("`{at}`: expected an object, got {}", type_name(item));
        };
        let path = match entry.get("path") {
            Some(v) => as_str(&format!("{at}.path"), v)?,
            None => bail!("`{at}` has no `path` key"),
        };
        match entry.get("references") {
            Some(Value::Array(refs)) => {
                for (j, r) in refs.iter().enumerate() {
                    as_str(&format!("{at}.references[{j}]"), r)?;
                }
            }
            Some(v) => bail!("`{at}.references` ({path}): expected a list, got {v}"),
            None => bail!("`{at}` ({path}) has no `references` key"),
        }
        if let Some(v) = entry.get("narSize") {
            if v.as_u64().is_none() {
                bail!("`{at}.narSize` ({path}): expected a non-negative integer, got {v}");
            }
        }
        if let Some(hash) = entry.get("narHash") {
            check_nar_hash(&at, path, as_str(&format!("{at}.narHash"), hash)?)?;
        }
    }
    Ok(())
}

/// Accepts `sha256:<52 nix-base32>`, `sha256:<64 hex>` and SRI `sha256-<base64>`; the
/// value is not used, but a malformed one means the graph did not come from Nix.
fn check_nar_hash(at: &str, path: &str, hash: &str) -> Result<()> {
    let ok = if let Some(digest) = hash.strip_prefix("sha256:") {
        (digest.len() == 52 && digest.bytes().all(|c| b"0123456789abcdfghijklmnpqrsvwxyz".contains(&c)))
            || (digest.len() == 64 && digest.bytes().all(|c| c.is_ascii_hexdigit()))
    } else if let Some(b64) = hash.strip_prefix("sha256-") {
        b64.len() == 44 && b64.bytes().all(|c| c.is_ascii_alphanumeric() || b"+/=".contains(&c))
    } else {
        false
    };
    if !ok {
        bail!("`{at}.narHash` ({path}): {hash:?} is neither `sha256:<nix32>` nor SRI `sha256-<base64>`");
    }
    Ok(())
}

fn as_str<'a>(key: &str, value: &'a Value) -> Result<&'a str> {
    value
        .as_str()
        .ok_or_else(|| anyhow!("key `{key}`: expected a string, got {value}"))
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// How the whole archive written by `build` is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compressor {
    /// Plain tar.
    None,
    /// Multi-member gzip, members compressed in parallel.
    Gz,
    /// zstd level 3, multi-threaded.
    Zstd,
}

/// Everything `build`, `stream` and `plan` need, checked. Argument names are
/// buildLayeredImage's; see docs/contract.md.
pub struct ImageSpec {
    /// Image name as given (lowercased for the repo tag).
    pub name: String,
    /// The tag: the given one, or the hash part of `outputs.out`.
    pub tag: String,
    /// Store paths merged into the customisation layer.
    pub contents: Vec<StorePath>,
    /// The Docker `config` object, as given.
    pub config: Value,
    /// Image creation time.
    pub created: Timestamp,
    /// mtime of every layer entry.
    pub mtime: Timestamp,
    /// Total layer budget, customisation layer included.
    pub max_layers: usize,
    /// How store paths are split into layers (`layering`, or `layeringPipeline`).
    pub layering: Strategy,
    /// Owner of store-layer entries.
    pub uid: u64,
    /// Group of store-layer entries.
    pub gid: u64,
    /// Owner name of store-layer entries.
    pub uname: String,
    /// Group name of store-layer entries.
    pub gname: String,
    /// `architecture` of the image config.
    pub architecture: String,
    /// `variant` of the image config (e.g. `v7` on 32-bit ARM); empty: left out.
    pub variant: String,
    /// Print the layer plan to stderr while building (`build`, `stream-script`).
    pub debug: bool,
    /// Compression of the archive written by `build`.
    pub compressor: Compressor,
    /// Whether the closure goes into store layers.
    pub include_store_paths: bool,
    /// Whether the image carries a Nix database of the closure of `contents`.
    pub include_nix_db: bool,
    /// A prebuilt last layer (`<path>/layer.tar`), from extraCommands/fakeRootCommands.
    pub customisation_layer: Option<StorePath>,
    /// `outputs.out`, when Nix gave one.
    pub out: Option<String>,
}

impl ImageSpec {
    /// Reads and checks every image attribute.
    ///
    /// # Errors
    /// Names the first key whose value is missing, mistyped or out of range.
    pub fn from_attrs(attrs: &Attrs, store_dir: &str) -> Result<ImageSpec> {
        // Under structured attrs `name` is the derivation's (a file name such as
        // `hello.tar.gz`); the Nix functions pass the image's own name as `imageName`.
        let name_key = if attrs.has("imageName") { "imageName" } else { "name" };
        let name = match attrs.get(name_key)? {
            Some(v) => as_str(name_key, &v)?.to_string(),
            None => bail!("key `name` is missing from `{}`", attrs.source.display()),
        };
        // The repo tag holds the name lowercased (see `repo_tag`): that is what must parse.
        reference::check_name(&name.to_lowercase()).map_err(|why| anyhow!("key `{name_key}`: {name:?}: {why}"))?;
        let out = attrs.output_path()?;
        let tag = match attrs.get("tag")? {
            Some(v) => as_str("tag", &v)?.to_string(),
            None => match &out {
                Some(out) => store_path::hash_part_of(store_dir, out)
                    .context("key `tag` is null, so the tag is the hash of `outputs.out`")?,
                None => bail!("key `tag` is null and there is no `outputs.out` to take a tag from"),
            },
        };
        reference::check_tag(&tag).map_err(|why| anyhow!("key `tag`: {tag:?}: {why}"))?;
        let contents = match attrs.get("contents")?.as_deref() {
            None => Vec::new(),
            Some(Value::String(s)) => vec![StorePath::parse(store_dir, s).context("key `contents`")?],
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let key = format!("contents[{i}]");
                    StorePath::parse(store_dir, as_str(&key, v)?).with_context(|| format!("key `{key}`"))
                })
                .collect::<Result<Vec<_>>>()?,
            Some(v) => bail!("key `contents`: expected a list of store paths, got {v}"),
        };
        let config = match attrs.get("config")?.as_deref() {
            None => Value::Object(Map::new()),
            Some(v @ Value::Object(_)) => v.clone(),
            Some(v) => bail!("key `config`: expected an object (the Docker image config), got {v}"),
        };
        let created = Timestamp::parse("created", &attrs.string_or("created", DEFAULT_TIME)?)?;
        let mtime = Timestamp::parse("mtime", &attrs.string_or("mtime", DEFAULT_TIME)?)?;
        let max_layers = attrs.int_or("maxLayers", 100)?;
        if max_layers < 2 {
            bail!("key `maxLayers`: {max_layers} is too small; it must be at least 2 (one store layer and the customisation layer)");
        }
        if max_layers > layering::MAX_LAYERS {
            bail!(
                "key `maxLayers`: {max_layers} is more than {}; docker's and podman's overlay storage mounts about 125 layers at most, \
                 and the autolayer and reuse strategies' work grows with the number of layers",
                layering::MAX_LAYERS
            );
        }
        let layering = match (attrs.get("layeringPipeline")?, attrs.get("layering")?) {
            (Some(_), Some(name)) => {
                bail!("keys `layering` ({name}) and `layeringPipeline` are both given; give one (the Nix functions refuse both too)")
            }
            (Some(pipeline), None) => match pipeline.as_ref() {
                Value::Array(_) => Strategy::Pipeline(pipeline.into_owned()),
                other => bail!("key `layeringPipeline`: expected a list of [function, arguments…] steps, got {other}"),
            },
            (None, Some(name)) => Strategy::from_name(as_str("layering", &name)?).context("key `layering`")?,
            (None, None) => layering::DEFAULT,
        };
        let compressor = match attrs.string_or("compressor", "gz")?.as_str() {
            "none" => Compressor::None,
            "gz" => Compressor::Gz,
            "zstd" => Compressor::Zstd,
            other => bail!("key `compressor`: unknown compressor {other:?}; use \"none\", \"gz\" or \"zstd\""),
        };
        let include_store_paths = attrs.bool_or("includeStorePaths", true)?;
        let customisation_layer = match attrs.get("customisationLayer")? {
            None => None,
            Some(v) => Some(
                StorePath::parse(store_dir, as_str("customisationLayer", &v)?)
                    .context("key `customisationLayer`")?,
            ),
        };
        Ok(ImageSpec {
            name,
            tag,
            contents,
            config,
            created,
            mtime,
            max_layers: usize::try_from(max_layers).unwrap_or(usize::MAX),
            layering,
            uid: attrs.id_or("uid")?,
            gid: attrs.id_or("gid")?,
            uname: attrs.header_string_or("uname", "root")?,
            gname: attrs.header_string_or("gname", "root")?,
            architecture: attrs.string_or("architecture", "amd64")?,
            variant: attrs.string_or("variant", "")?,
            debug: attrs.bool_or("debug", false)?,
            compressor,
            include_store_paths,
            include_nix_db: attrs.bool_or("includeNixDB", false)?,
            customisation_layer,
            out,
        })
    }

    /// The checked closure graph (`exportReferencesGraph.closure`).
    ///
    /// # Errors
    /// `closure` is missing while contents need it, or is not a valid graph.
    pub fn closure(&self, attrs: &Attrs) -> Result<Graph> {
        // Nix writes no key at all for an empty root set, so an absent `closure` is an
        // empty closure, unless contents need it.
        let needs_closure = (self.include_store_paths && !(self.contents.is_empty() && self.customisation_layer.is_none()))
            || (self.include_nix_db && !self.contents.is_empty());
        if !attrs.has("closure") && !needs_closure {
            return Ok(Graph::default());
        }
        Graph::new(&attrs.graph("closure")?).context("key `closure`")
    }

    /// `lowercase(name):tag`, the image's RepoTags entry.
    pub fn repo_tag(&self) -> String {
        format!("{}:{}", self.name.to_lowercase(), self.tag)
    }
}

/// The largest uid or gid: Linux ids are 32-bit and chown(2) reserves `(uid_t)-1`, so
/// an image holding a larger one cannot be unpacked. (Go's archive/tar itself reads up to
/// 2^63 − 1, and Nix passes any 64-bit integer.)
pub const MAX_ID: u64 = u32::MAX as u64 - 1;

/// buildLayeredImage's default for `created` and `mtime`.
pub const DEFAULT_TIME: &str = "1970-01-01T00:00:01Z";
