//! The `nix-layers` command: argument parsing and dispatch only.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use nix_layers::archive::{write_image, Written};
use nix_layers::attrs::{self, Attrs, Compressor};
use nix_layers::cache::LayerCache;
use nix_layers::compress::{Compressed, Compression};
use nix_layers::destination::engine_load::{self, Engine, EngineLoad};
use nix_layers::destination::hybrid_archive::write_archive;
use nix_layers::destination::oci_layout::{OciArchive, OciLayout, OciTarget};
use nix_layers::destination::registry::RegistryPush;
use nix_layers::destination::Destination;
use nix_layers::graph::Graph;
use nix_layers::layering::{self, Input, Strategy};
use nix_layers::output::{self, write_atomically, AtomicFile};
use nix_layers::pipeline::{plan_image, PlannedImage};
use nix_layers::plan::human_size;
use nix_layers::popularity;
use nix_layers::reference;
use nix_layers::registry::auth::Credentials;
use nix_layers::registry::{Client, ClientOptions, Reference};
use nix_layers::store_path::store_dir_from_env;
use nix_layers::workers;
use serde_json::Value;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

/// Layered Docker images from Nix closures. Run by Nix as the builder of a
/// `__structuredAttrs` derivation, or by hand with `--attrs FILE`.
#[derive(Parser)]
#[command(name = "nix-layers", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a closure's paths, most popular first (byte-identical to nixpkgs'
    /// closure-graph.py FILE KEY). Without FILE, read the attrs file's `graph` and write
    /// to `outputs.out` (the builder of referencesByPopularity).
    Popularity {
        /// A JSON file holding the graph under KEY (or a bare list of path entries).
        file: Option<PathBuf>,
        /// The key of the graph in FILE.
        #[arg(default_value = "graph")]
        key: String,
        #[command(flatten)]
        io: InputOutput,
    },
    /// Write the image archive (an OCI layout plus docker's manifest.json), compressed
    /// as `compressor` says, to the out path (the builder of buildLayeredImage).
    Build {
        #[command(flatten)]
        io: InputOutput,
        #[command(flatten)]
        threads: Threads,
    },
    /// Write the uncompressed image archive to stdout (`nix-layers stream | docker load`),
    /// or run VERB on the image. A stream script runs this: `./result ARGS…` is
    /// `nix-layers stream ./result ARGS…`.
    #[command(after_long_help = "(the list of verbs is filled in at run time)")]
    Stream {
        /// The attrs file, or a stream script (same as --attrs; this is how a stream
        /// script runs itself).
        file: Option<PathBuf>,
        /// The attrs file.
        #[arg(long, value_name = "FILE")]
        attrs: Option<PathBuf>,
        #[command(flatten)]
        tag: RepoTagArg,
        #[command(flatten)]
        threads: Threads,
        #[command(flatten)]
        cache: Cache,
        /// A subcommand to run on this image instead of writing it to stdout, and its
        /// arguments: `push docker://HOST/NAME[:TAG]`, `oci oci:DIR`, `load docker`…
        /// It is run with `--attrs FILE` (and with -t and --threads when given before it).
        #[arg(value_name = "VERB [ARGS]", trailing_var_arg = true, allow_hyphen_values = true)]
        verb: Vec<OsString>,
    },
    /// Write the image as an OCI layout: `oci:DIR[:TAG]` (a directory, added to if it
    /// exists) or `oci-archive:FILE[:TAG]` (a tar of one). TAG defaults to the image's tag.
    Oci {
        /// `oci:DIR[:TAG]` or `oci-archive:FILE[:TAG]`.
        dest: String,
        /// The attrs file.
        #[arg(long, value_name = "FILE")]
        attrs: Option<PathBuf>,
        #[command(flatten)]
        compression: LayerCompression,
        #[command(flatten)]
        threads: Threads,
        #[command(flatten)]
        cache: Cache,
    },
    /// Push the image to a registry: `docker://HOST[:PORT]/NAME[:TAG]` (TAG defaults to
    /// the image's tag). Blobs the registry has are not uploaded; the manifest goes last.
    Push {
        /// `docker://HOST[:PORT]/NAME[:TAG]`.
        dest: String,
        /// The attrs file.
        #[arg(long, value_name = "FILE")]
        attrs: Option<PathBuf>,
        #[command(flatten)]
        compression: LayerCompression,
        /// Credentials for the registry (no auth file is read then).
        #[arg(long, value_name = "USER:PASS")]
        creds: Option<String>,
        /// The auth file to read credentials from (default: $REGISTRY_AUTH_FILE, then
        /// containers' and docker's auth files and their credential helpers).
        #[arg(long, value_name = "FILE")]
        authfile: Option<PathBuf>,
        /// Require HTTPS with a verified certificate; `--tls-verify=false` also allows a
        /// self-signed certificate or plain HTTP.
        #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
        tls_verify: bool,
        /// A directory of CA certificates (`*.crt`) and a client certificate (`*.cert` +
        /// `*.key`) for the registry.
        #[arg(long, value_name = "DIR")]
        cert_dir: Option<PathBuf>,
        #[command(flatten)]
        threads: Threads,
        #[command(flatten)]
        cache: Cache,
    },
    /// Copy the image to a destination named as skopeo names it: `docker://…` runs `push`,
    /// `oci:…` and `oci-archive:…` run `oci`, `docker-daemon:[NAME:TAG]` runs
    /// `load docker [-t NAME:TAG]`, `containers-storage:[NAME:TAG]` runs `load podman
    /// [-t NAME:TAG]`. OPTIONS go to that subcommand (`--creds USER:PASS`, ...).
    CopyTo {
        /// `docker://HOST[:PORT]/NAME[:TAG]`, `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`,
        /// `docker-daemon:[NAME:TAG]` or `containers-storage:[NAME:TAG]`.
        dest: String,
        /// The attrs file.
        #[arg(long, value_name = "FILE")]
        attrs: Option<PathBuf>,
        /// Options of the subcommand DEST maps to.
        #[arg(value_name = "OPTIONS", trailing_var_arg = true, allow_hyphen_values = true)]
        options: Vec<OsString>,
    },
    /// Load the image into docker or podman (`ENGINE load`), leaving out of the archive
    /// the layers the engine already has.
    Load {
        /// `docker` or `podman`: whichever its CLI reaches (DOCKER_HOST, podman's storage
        /// configuration).
        #[arg(value_name = "ENGINE", value_parser = ["docker", "podman"])]
        engine: String,
        /// The attrs file (a stream script too).
        #[arg(long, value_name = "FILE")]
        attrs: Option<PathBuf>,
        #[command(flatten)]
        tag: RepoTagArg,
        #[command(flatten)]
        threads: Threads,
        #[command(flatten)]
        cache: Cache,
    },
    /// Write an executable that streams the image when run (the builder of
    /// streamLayeredImage): `#!<this binary> stream` followed by the attrs.
    StreamScript {
        #[command(flatten)]
        io: InputOutput,
    },
    /// Print a closure's store layers as one JSON list of lists of store paths (the
    /// shape nixpkgs' auto-layer.py prints), at most N−1 of them (one layer is kept for
    /// the customisation layer).
    Layers {
        /// A JSON file holding the graph under KEY (or a bare list of path entries).
        file: PathBuf,
        /// The key of the graph in FILE.
        #[arg(default_value = "graph")]
        key: String,
        /// The strategy: popularity, autolayer or reuse.
        #[arg(long, value_name = "NAME", default_value = layering::DEFAULT.name())]
        layering: String,
        /// The image's total layer budget, customisation layer included.
        #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(2..=layering::MAX_LAYERS))]
        max_layers: u64,
        /// A nixpkgs layeringPipeline (JSON list) to use instead of --layering; as in
        /// nixpkgs, it alone decides the layers (--max-layers is ignored).
        #[arg(long, value_name = "FILE", conflicts_with = "layering")]
        pipeline: Option<PathBuf>,
        /// Store paths to leave out, one per line (auto-layer.py's IGNORE_FILE).
        #[arg(long, value_name = "FILE")]
        ignore: Option<PathBuf>,
    },
    /// Print the layer plan: the strategy, then per layer its store paths, narSize and
    /// why it exists.
    Plan {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The attrs file.
        #[arg(long, value_name = "FILE")]
        attrs: Option<PathBuf>,
    },
}

#[derive(Args)]
struct InputOutput {
    /// The attrs file (default: $NIX_ATTRS_JSON_FILE, $NIX_BUILD_TOP/.attrs.json, ./.attrs.json).
    #[arg(long, value_name = "FILE")]
    attrs: Option<PathBuf>,
    /// Where to write (default: `outputs.out` of the attrs).
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct LayerCompression {
    /// Compression of each layer blob.
    #[arg(long, value_name = "FORMAT", default_value = "gzip", value_parser = ["gzip", "zstd", "none"])]
    compression_format: String,
    /// Its level, as skopeo's --dest-compress-level: gzip 1–9 (default 2, libdeflate's,
    /// about zlib's 6 in size), zstd 1–19 (default 3). Lower is faster and larger.
    #[arg(long, value_name = "N")]
    compression_level: Option<i32>,
}

impl LayerCompression {
    /// The format and level asked for.
    fn get(&self) -> Result<Compression> {
        let format = match self.compression_format.as_str() {
            "zstd" => Compressor::Zstd,
            "none" => Compressor::None,
            _ => Compressor::Gz,
        };
        Compression::with_level(format, self.compression_level)
    }
}

#[derive(Args)]
struct RepoTagArg {
    /// Name the image NAME:TAG instead of the attrs' name and tag (manifest.json's
    /// `RepoTags`, the index's annotations), as nixpkgs' stream script's -t does:
    /// `docker load` then names the image NAME:TAG.
    #[arg(short = 't', long, visible_alias = "repo_tag", value_name = "NAME:TAG", value_parser = parse_repo_tag)]
    repo_tag: Option<RepoTag>,
}

#[derive(Args)]
struct Cache {
    /// Do not use the layer cache ($XDG_CACHE_HOME/nix-layers): read every layer and
    /// remember nothing.
    #[arg(long)]
    no_cache: bool,
}

impl Cache {
    fn open(&self) -> LayerCache {
        LayerCache::open(self.no_cache)
    }
}

#[derive(Args, Default)]
struct Threads {
    /// Worker threads, at least 1 (default: $NIX_BUILD_CORES if set and > 0, else all
    /// cores). Capped at 4 × the cores and at 256: more gives no speed.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    threads: Option<u64>,
}

impl Threads {
    fn count(&self) -> usize {
        let requested = match self.threads {
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => match std::env::var("NIX_BUILD_CORES").ok().and_then(|v| v.parse::<usize>().ok()) {
                Some(n) if n > 0 => n,
                _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
            },
        };
        workers::cap(requested)
    }
}

fn main() -> ExitCode {
    let cli = parse_args();
    match output::remove_temp_files_on_signals().and_then(|()| run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("nix-layers: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let store_dir = store_dir_from_env();
    match cli.command {
        Command::Popularity { file, key, io } => popularity_cmd(file, &key, io),
        Command::Build { io, threads } => build_cmd(io, threads.count(), &store_dir),
        Command::Stream { file, attrs, tag, threads, cache, verb } => {
            stream_or_verb(file, attrs, tag.repo_tag.as_ref(), &threads, &cache, verb, &store_dir)
        }
        Command::CopyTo { dest, attrs, options } => copy_to_cmd(&dest, attrs, options),
        Command::Oci { dest, attrs, compression, threads, cache } => {
            oci_cmd(&dest, attrs, compression.get()?, threads.count(), &cache.open(), &store_dir)
        }
        Command::Push { dest, attrs, compression, creds, authfile, tls_verify, cert_dir, threads, cache } => {
            let options = ClientOptions {
                tls_verify,
                cert_dir,
                creds: creds.map(|c| Credentials::parse(&c).map_err(|e| anyhow!("--creds: {e}"))).transpose()?,
                authfile,
                ..ClientOptions::default()
            };
            push_cmd(&dest, attrs, compression.get()?, &options, threads.count(), &cache.open(), &store_dir)
        }
        Command::Load { engine, attrs, tag, threads, cache } => {
            load_cmd(&engine, attrs, tag.repo_tag.as_ref(), threads.count(), &cache.open(), &store_dir)
        }
        Command::StreamScript { io } => stream_script_cmd(io, &store_dir),
        Command::Layers { file, key, layering, max_layers, pipeline, ignore } => {
            layers_cmd(&file, &key, &layering, max_layers, pipeline.as_deref(), ignore.as_deref())
        }
        Command::Plan { json, attrs } => plan_cmd(attrs, json, &store_dir),
    }
}

/// Attrs a stream script has read already, handed over to the verb it runs: reading
/// them again would cost as much (a 100,000-path closure is 80 MB of JSON).
static PRELOADED: Mutex<Option<Attrs>> = Mutex::new(None);

fn read_attrs(explicit: Option<&Path>) -> Result<Attrs> {
    let path = attrs::locate(explicit)?;
    let preloaded = PRELOADED.lock().ok().and_then(|mut slot| slot.take());
    match preloaded {
        Some(attrs) if attrs.source == path => Ok(attrs),
        _ => Attrs::read(&path),
    }
}

/// `--out`, else `outputs.out`.
fn out_path(explicit: Option<PathBuf>, attrs: &Attrs) -> Result<PathBuf> {
    match explicit {
        Some(path) => Ok(path),
        None => match attrs.output_path()? {
            Some(out) => Ok(PathBuf::from(out)),
            None => bail!("no output path: pass --out PATH or set `outputs.out` in `{}`", attrs.source.display()),
        },
    }
}

fn popularity_cmd(file: Option<PathBuf>, key: &str, io: InputOutput) -> Result<()> {
    let to_stdout = file.is_some() && io.out.is_none();
    let attrs = match file.as_deref() {
        Some(path) => read_graph_file(path, key)?,
        None => read_attrs(io.attrs.as_deref())?,
    };
    let graph = Graph::new(&attrs.graph(key)?).with_context(|| format!("key `{key}`"))?;
    let text = popularity::render(&graph, &popularity::rank(&graph));
    if to_stdout {
        let mut stdout = output::stdout()?;
        stdout.write_all(text.as_bytes())?;
        return stdout.flush().context("cannot write to stdout");
    }
    write_atomically(&out_path(io.out, &attrs)?, text.as_bytes(), 0o444)
}

/// Reads a graph file for `popularity FILE`: an object with the graph under `key`, or,
/// as a convenience, a bare list of path entries.
fn read_graph_file(path: &Path, key: &str) -> Result<Attrs> {
    let text = std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    if text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        let mut wrapped = format!("{{{}:", serde_json::to_string(key)?).into_bytes();
        wrapped.extend_from_slice(&text);
        wrapped.push(b'}');
        return Attrs::parse(wrapped, path);
    }
    Attrs::read(path)
}

fn layers_cmd(
    file: &Path,
    key: &str,
    layering_name: &str,
    max_layers: u64,
    pipeline: Option<&Path>,
    ignore: Option<&Path>,
) -> Result<()> {
    let strategy = match pipeline {
        Some(path) => {
            let text = std::fs::read(path).with_context(|| format!("cannot read the pipeline `{}`", path.display()))?;
            let value: Value = serde_json::from_slice(&text)
                .with_context(|| format!("the pipeline `{}` is not valid JSON", path.display()))?;
            Strategy::Pipeline(value)
        }
        None => Strategy::from_name(layering_name).context("--layering")?,
    };
    let attrs = read_graph_file(file, key)?;
    let graph = Graph::new(&attrs.graph(key)?).with_context(|| format!("key `{key}`"))?;
    let mut excluded = vec![false; graph.len()];
    if let Some(ignore) = ignore {
        let text = std::fs::read_to_string(ignore).with_context(|| format!("cannot read `{}`", ignore.display()))?;
        for node in text.lines().filter_map(|line| graph.node(line.trim())) {
            excluded[node as usize] = true;
        }
    }
    let available = usize::try_from(max_layers - 1).unwrap_or(usize::MAX);
    let layers = layering::store_layers(&strategy, &Input { graph: &graph, excluded: &excluded, available })?;
    let mut stdout = output::stdout()?;
    stdout.write_all(layering::to_json_text(&graph, &layers).as_bytes())?;
    stdout.flush().context("cannot write to stdout")
}

fn build_cmd(io: InputOutput, threads: usize, store_dir: &str) -> Result<()> {
    let started = Instant::now();
    let attrs = read_attrs(io.attrs.as_deref())?;
    let image = plan_image(&attrs, store_dir)?;
    print_plan_if_debug(&image);
    let target = out_path(io.out, &attrs)?;
    drop(attrs); // the plan has what is needed; the raw closure JSON can go
    let layers = image.scan_layers(store_dir, threads)?;
    let spec = image.into_spec();
    let mut file = AtomicFile::create(&target)?;
    let mut out = Compressed::new(file.writer(), Compression::default_for(spec.compressor), threads)?;
    // A Nix build's output depends on its inputs only: no cache.
    let written = write_archive(&mut out, &spec, &layers, threads, &LayerCache::disabled())?;
    out.finish().context("cannot write the image")?;
    file.commit(0o444)?;
    summary(written, started);
    Ok(())
}

/// The last line of a build log: layers, their bytes, seconds.
fn summary(written: Written, started: Instant) {
    eprintln!(
        "nix-layers: {} layers, {} in {:.1} s",
        written.layers,
        human_size(written.layer_bytes),
        started.elapsed().as_secs_f64()
    );
}

fn stream_cmd(attrs: Attrs, repo_tag: Option<&RepoTag>, threads: usize, cache: &LayerCache, store_dir: &str) -> Result<()> {
    let started = Instant::now();
    let mut stdout = output::stdout()?;
    let image = plan_image(&attrs, store_dir)?;
    drop(attrs); // the plan has what is needed; the raw closure JSON can go
    let layers = image.scan_layers(store_dir, threads)?;
    let mut spec = image.into_spec();
    if let Some(repo_tag) = repo_tag {
        repo_tag.apply(&mut spec);
    }
    let written = write_archive(&mut stdout, &spec, &layers, threads, cache)?;
    summary(written, started);
    Ok(())
}

/// With `debug = true` (nixpkgs' argument: show the layering decisions), the build log
/// gets the `plan` table.
fn print_plan_if_debug(image: &PlannedImage) {
    if image.spec.debug {
        eprint!("nix-layers: debug: layer plan\n{}", image.plan.to_table(&image.graph));
    }
}

fn oci_cmd(
    dest: &str,
    attrs_file: Option<PathBuf>,
    compression: Compression,
    threads: usize,
    cache: &LayerCache,
    store_dir: &str,
) -> Result<()> {
    let started = Instant::now();
    let (target, tag) = OciTarget::parse(dest)?;
    let attrs = read_attrs(attrs_file.as_deref())?;
    let image = plan_image(&attrs, store_dir)?;
    drop(attrs); // the plan has what is needed; the raw closure JSON can go
    let layers = image.scan_layers(store_dir, threads)?;
    let spec = image.into_spec();
    let tag = tag.unwrap_or_else(|| spec.tag.clone());
    let mut destination: Box<dyn Destination> = match &target {
        OciTarget::Dir(dir) => Box::new(OciLayout::open(dir, &tag, compression, threads, cache.clone())?),
        OciTarget::Archive(file) => Box::new(OciArchive::create(file, &tag, compression, threads, cache.clone())?),
    };
    let written = write_image(destination.as_mut(), &spec, &layers, threads, cache)?;
    summary(written, started);
    Ok(())
}

fn push_cmd(
    dest: &str,
    attrs_file: Option<PathBuf>,
    compression: Compression,
    options: &ClientOptions,
    threads: usize,
    cache: &LayerCache,
    store_dir: &str,
) -> Result<()> {
    let started = Instant::now();
    let reference = Reference::parse(dest)?;
    if reference.digest.is_some() {
        bail!("`{dest}`: push takes a tag, not a digest (the manifest's digest is known only once it is written)");
    }
    let attrs = read_attrs(attrs_file.as_deref())?;
    let image = plan_image(&attrs, store_dir)?;
    drop(attrs); // the plan has what is needed; the raw closure JSON can go
    let layers = image.scan_layers(store_dir, threads)?;
    let spec = image.into_spec();
    let tag = reference.tag.clone().unwrap_or_else(|| spec.tag.clone());
    // Connect (and learn how to authenticate) before any layer is read.
    let client = Client::connect(reference.api_host(), options)?;
    let mut push = RegistryPush::new(client, &reference.repository, &tag, compression, threads, layers.len(), cache.clone())?;
    let written = write_image(&mut push, &spec, &layers, threads, cache)?;
    let stats = push.stats();
    eprintln!(
        "nix-layers: pushed {}/{}:{tag}@{}: {} uploaded, {} already present, {} mounted, {} sent, {:.1} s",
        reference.registry,
        reference.repository,
        push.manifest_digest().unwrap_or("?"),
        stats.uploaded,
        stats.present,
        stats.mounted,
        human_size(stats.bytes_sent),
        started.elapsed().as_secs_f64()
    );
    summary(written, started);
    Ok(())
}

fn load_cmd(
    engine: &str,
    attrs_file: Option<PathBuf>,
    repo_tag: Option<&RepoTag>,
    threads: usize,
    cache: &LayerCache,
    store_dir: &str,
) -> Result<()> {
    let started = Instant::now();
    let engine = Engine::from_name(engine)?;
    let attrs = read_attrs(attrs_file.as_deref())?;
    let image = plan_image(&attrs, store_dir)?;
    drop(attrs); // the plan has what is needed; the raw closure JSON can go
    // Ask the engine first: a daemon that is down fails before the store is scanned.
    let stored = engine_load::query(engine)?;
    let layers = image.scan_layers(store_dir, threads)?;
    let mut spec = image.into_spec();
    if let Some(repo_tag) = repo_tag {
        repo_tag.apply(&mut spec);
    }
    let mut load = EngineLoad::start(engine, stored, &spec)?;
    let written = write_image(&mut load, &spec, &layers, threads, cache);
    let (written, stats) = load.end(written)?;
    eprintln!(
        "nix-layers: loaded {} into {}: {} layers sent, {} already present",
        spec.repo_tag(),
        engine.name(),
        stats.sent,
        stats.present
    );
    summary(written, started);
    Ok(())
}

/// The longest `#!` line Linux reads (BINPRM_BUF_SIZE), newline excluded.
const MAX_SHEBANG: usize = 255;

fn stream_script_cmd(io: InputOutput, store_dir: &str) -> Result<()> {
    let mut attrs = read_attrs(io.attrs.as_deref())?;
    // Check everything now, so that a bad image fails at build time, not when run.
    let image = plan_image(&attrs, store_dir)?;
    print_plan_if_debug(&image);
    image.scan_layers(store_dir, Threads::default().count())?;
    // The script's own out path is gone once it is a file elsewhere: fix the tag now.
    attrs.map.insert("tag".into(), Value::String(image.spec.tag.clone()));
    let interpreter = match attrs.get("builder")?.as_deref().and_then(Value::as_str) {
        Some(builder) => builder.to_string(),
        None => std::env::current_exe()
            .context("cannot find this program's path for the script's #! line")?
            .display()
            .to_string(),
    };
    let shebang = format!("#!{interpreter} stream\n");
    if shebang.len() - 1 > MAX_SHEBANG {
        bail!("the #! line `{}` is longer than Linux accepts ({MAX_SHEBANG} bytes)", shebang.trim_end());
    }
    // Preset verb and arguments (copyToRegistry's `push docker://…`): checked now, so
    // that a wrong verb fails the build, not the user's run.
    if let Some(verb) = script_args(&attrs)?.first() {
        let verbs = verbs(&Cli::command());
        if !verbs.contains(verb) {
            bail!("key `scriptArgs`: {verb:?} is not a verb: use one of {}", verbs.join(", "));
        }
    }
    let mut script = shebang.into_bytes();
    script.extend_from_slice(attrs.to_json()?.as_bytes());
    script.push(b'\n');
    let out = out_path(io.out, &attrs)?;
    // `scriptName`: the script is `$out/bin/NAME`, so that `nix run` finds it.
    let target = match attrs.get("scriptName")? {
        None => out,
        Some(value) => {
            let name = value.as_str().ok_or_else(|| anyhow!("key `scriptName`: expected a file name, got {value}"))?;
            if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
                bail!("key `scriptName`: {name:?} is not a file name (the script is written to `<out>/bin/<scriptName>`)");
            }
            let bin = out.join("bin");
            std::fs::create_dir_all(&bin).with_context(|| format!("cannot create `{}`", bin.display()))?;
            bin.join(name)
        }
    };
    write_atomically(&target, &script, 0o555)
}

fn plan_cmd(attrs_file: Option<PathBuf>, json: bool, store_dir: &str) -> Result<()> {
    let attrs = read_attrs(attrs_file.as_deref())?;
    let image = plan_image(&attrs, store_dir)?;
    let text = if json {
        let mut text = serde_json::to_string_pretty(&image.plan.to_json(&image.graph))?;
        text.push('\n');
        text
    } else {
        image.plan.to_table(&image.graph)
    };
    let mut stdout = output::stdout()?;
    stdout.write_all(text.as_bytes())?;
    stdout.flush().context("cannot write to stdout")
}

// --- stream scripts and their verbs -------------------------------------------------

/// Parses the command line, with the stream command's help listing the verbs a stream
/// script takes (every subcommand that reads an image's attrs, so a new one is listed).
fn parse_args() -> Cli {
    let command = Cli::command();
    let verbs = verbs(&command).join(", ");
    let help = format!(
        "A stream script (`streamLayeredImage`'s result) runs `nix-layers stream SCRIPT ARGS…`:\n\
         \x20 ./result                               the image archive to stdout: ./result | docker load\n\
         \x20 ./result -t NAME:TAG                   the same, the image named NAME:TAG\n\
         \x20 ./result push docker://HOST/NAME[:TAG] [--creds USER:PASS] …   to a registry\n\
         \x20 ./result oci oci:DIR[:TAG]             an OCI layout (or oci-archive:FILE[:TAG])\n\
         \x20 ./result load docker|podman            into an engine\n\
         \x20 ./result copy-to DEST                  DEST as skopeo names it (docker://, oci:, docker-daemon:, …)\n\
         \x20 ./result VERB --help                   the options of VERB\n\
         Verbs: {verbs}. Each runs as `nix-layers VERB --attrs SCRIPT ARGS…`.\n\
         A script with `scriptArgs` in its attrs (copyToRegistry, copyToDockerDaemon, …) puts them\n\
         before ARGS: `copy-to-registry --creds USER:PASS`."
    );
    let command = command.mut_subcommand("stream", |stream| stream.after_long_help(help));
    let matches = command.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit())
}

/// Subcommands a stream script takes as verbs: those that read an image's attrs
/// (`--attrs`), except `stream` and `stream-script` themselves and `popularity` (which
/// reads a `graph`, not an image).
fn verbs(command: &clap::Command) -> Vec<String> {
    command
        .get_subcommands()
        .filter(|sub| has_arg(sub, "attrs") && !matches!(sub.get_name(), "stream" | "stream-script" | "popularity"))
        .map(|sub| sub.get_name().to_string())
        .collect()
}

fn has_arg(command: &clap::Command, id: &str) -> bool {
    command.get_arguments().any(|arg| arg.get_id() == id)
}

/// An image name and tag given with `-t`/`--repo-tag`, checked with docker's grammar.
#[derive(Clone, Debug)]
struct RepoTag {
    name: String,
    tag: String,
}

impl std::fmt::Display for RepoTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

impl RepoTag {
    /// The image gets this name and tag (its `RepoTags` and index annotations).
    fn apply(&self, spec: &mut nix_layers::attrs::ImageSpec) {
        spec.name.clone_from(&self.name);
        spec.tag.clone_from(&self.tag);
    }
}

/// `NAME:TAG`: the tag follows the first `:` after the last `/` (a registry port's `:`
/// comes before a `/`).
fn parse_repo_tag(value: &str) -> Result<RepoTag, String> {
    if value.contains('@') {
        return Err(format!("{value:?}: a digest cannot name an image being written; write NAME:TAG"));
    }
    let last_part = value.rfind('/').map_or(0, |i| i + 1);
    let Some(colon) = value[last_part..].find(':').map(|i| last_part + i) else {
        return Err(format!("{value:?} has no tag: write NAME:TAG, e.g. {value}:latest"));
    };
    let (name, tag) = (&value[..colon], &value[colon + 1..]);
    reference::check_name(name).map_err(|why| format!("{value:?}: name {name:?}: {why}"))?;
    reference::check_tag(tag).map_err(|why| format!("{value:?}: tag {tag:?}: {why}"))?;
    Ok(RepoTag { name: name.to_string(), tag: tag.to_string() })
}

/// `scriptArgs` of a stream script: arguments put before the user's when it runs.
fn script_args(attrs: &Attrs) -> Result<Vec<String>> {
    let Some(value) = attrs.get("scriptArgs")? else {
        return Ok(Vec::new());
    };
    let wrong = || anyhow!("key `scriptArgs`: expected a list of strings (arguments put before the user's), got {value}");
    let Value::Array(items) = value.as_ref() else {
        return Err(wrong());
    };
    items.iter().map(|item| item.as_str().map(str::to_string).ok_or_else(wrong)).collect()
}

/// `stream [FILE] [-t NAME:TAG] [VERB ARGS…]`: the archive to stdout, or VERB run on the
/// same attrs.
fn stream_or_verb(
    file: Option<PathBuf>,
    attrs_option: Option<PathBuf>,
    repo_tag: Option<&RepoTag>,
    threads: &Threads,
    cache: &Cache,
    verb: Vec<OsString>,
    store_dir: &str,
) -> Result<()> {
    // With --attrs, a first positional word is the verb, not a file.
    let (file, mut words) = match (file, attrs_option) {
        (Some(word), Some(attrs)) => (Some(attrs), std::iter::once(word.into_os_string()).chain(verb).collect()),
        (file, attrs) => (file.or(attrs), verb),
    };
    let path = attrs::locate(file.as_deref())?;
    let attrs = Attrs::read(&path)?;
    let preset = script_args(&attrs)?;
    words.splice(0..0, preset.into_iter().map(OsString::from));
    if words.is_empty() {
        return stream_cmd(attrs, repo_tag, threads.count(), &cache.open(), store_dir);
    }
    let mut forwarded = Vec::new();
    if let Some(repo_tag) = repo_tag {
        forwarded.push(("repo_tag", "--repo-tag", Some(repo_tag.to_string())));
    }
    if let Some(n) = threads.threads {
        forwarded.push(("threads", "--threads", Some(n.to_string())));
    }
    if cache.no_cache {
        forwarded.push(("no_cache", "--no-cache", None));
    }
    if let Ok(mut slot) = PRELOADED.lock() {
        *slot = Some(attrs);
    }
    run_verb(&words, &path, &forwarded)
}

/// Runs `nix-layers VERB --attrs FILE [FORWARDED…] ARGS…` in this process, parsed as if
/// given on the command line (`words` = VERB ARGS…): any subcommand that reads attrs
/// works, including ones added later. `forwarded`: (clap id, flag, value) of options given
/// before the verb (a flag without a value is a switch).
fn run_verb(words: &[OsString], attrs_file: &Path, forwarded: &[(&str, &str, Option<String>)]) -> Result<()> {
    let command = Cli::command();
    let verbs = verbs(&command);
    let verb = words[0].to_string_lossy();
    let Some(sub) = command.find_subcommand(verb.as_ref()).filter(|_| verbs.iter().any(|v| *v == verb)) else {
        bail!(
            "`{verb}` is not a verb of a stream script: give one of {} (or none, to write the archive to stdout)",
            verbs.join(", ")
        );
    };
    let mut argv: Vec<OsString> = vec!["nix-layers".into(), words[0].clone(), "--attrs".into(), attrs_file.into()];
    for (id, flag, value) in forwarded {
        let given = match value {
            Some(value) => format!("{flag} {value}"),
            None => (*flag).to_string(),
        };
        if !has_arg(sub, id) {
            bail!("{given} was given before `{verb}`, which takes no {flag} (see `nix-layers {verb} --help`)");
        }
        argv.push((*flag).into());
        argv.extend(value.iter().map(OsString::from));
    }
    argv.extend(words[1..].iter().cloned());
    let cli = Cli::try_parse_from(argv).unwrap_or_else(|err| err.exit());
    run(cli)
}

/// `copy-to DEST [OPTIONS…]`: DEST, as skopeo spells it, mapped to our subcommand.
fn copy_to_cmd(dest: &str, attrs_file: Option<PathBuf>, options: Vec<OsString>) -> Result<()> {
    let mut words: Vec<OsString> = copy_to_words(dest)?.into_iter().map(OsString::from).collect();
    words.extend(options);
    let path = attrs::locate(attrs_file.as_deref())?;
    run_verb(&words, &path, &[])
}

fn copy_to_words(dest: &str) -> Result<Vec<String>> {
    if dest.starts_with("docker://") {
        return Ok(vec!["push".into(), dest.into()]);
    }
    if dest.starts_with("oci:") || dest.starts_with("oci-archive:") {
        return Ok(vec!["oci".into(), dest.into()]);
    }
    for (transport, engine) in [("docker-daemon:", "docker"), ("containers-storage:", "podman")] {
        if let Some(name) = dest.strip_prefix(transport) {
            let mut words = vec!["load".to_string(), engine.to_string()];
            if !name.is_empty() {
                words.extend(["--repo-tag".to_string(), name.to_string()]);
            }
            return Ok(words);
        }
    }
    bail!(
        "`{dest}`: copy-to takes docker://HOST[:PORT]/NAME[:TAG] (push), oci:DIR[:TAG] or oci-archive:FILE[:TAG] (oci), \
         docker-daemon:[NAME:TAG] (load docker) or containers-storage:[NAME:TAG] (load podman)"
    )
}
