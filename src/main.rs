//! The `nix-layers` command: argument parsing and dispatch only.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use nix_layers::archive::{write_image, Written};
use nix_layers::attrs::{self, Attrs, Compressor};
use nix_layers::cache::LayerCache;
use nix_layers::compress::Compressed;
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
use nix_layers::registry::auth::Credentials;
use nix_layers::registry::{Client, ClientOptions, Reference};
use nix_layers::store_path::store_dir_from_env;
use nix_layers::workers;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
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
    /// Write the uncompressed image archive to stdout (`nix-layers stream | docker load`).
    Stream {
        /// The attrs file (same as --attrs; this is how a stream script runs itself).
        file: Option<PathBuf>,
        /// The attrs file.
        #[arg(long, value_name = "FILE", conflicts_with = "file")]
        attrs: Option<PathBuf>,
        #[command(flatten)]
        threads: Threads,
        #[command(flatten)]
        cache: Cache,
    },
    /// Write the image as an OCI layout: `oci:DIR[:TAG]` (a directory, added to if it
    /// exists) or `oci-archive:FILE[:TAG]` (a tar of one). TAG defaults to the image's tag.
    Oci {
        /// `oci:DIR[:TAG]` or `oci-archive:FILE[:TAG]`.
        dest: String,
        /// The attrs file.
        #[arg(long, value_name = "FILE")]
        attrs: Option<PathBuf>,
        /// Compression of each layer blob.
        #[arg(long, value_name = "FORMAT", default_value = "gzip", value_parser = ["gzip", "zstd", "none"])]
        compression_format: String,
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
        /// Compression of each layer blob.
        #[arg(long, value_name = "FORMAT", default_value = "gzip", value_parser = ["gzip", "zstd", "none"])]
        compression_format: String,
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
    let cli = Cli::parse();
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
        Command::Stream { file, attrs, threads, cache } => stream_cmd(file.or(attrs), threads.count(), &cache.open(), &store_dir),
        Command::Oci { dest, attrs, compression_format, threads, cache } => {
            oci_cmd(&dest, attrs, &compression_format, threads.count(), &cache.open(), &store_dir)
        }
        Command::Push { dest, attrs, compression_format, creds, authfile, tls_verify, cert_dir, threads, cache } => {
            let options = ClientOptions {
                tls_verify,
                cert_dir,
                creds: creds.map(|c| Credentials::parse(&c).map_err(|e| anyhow!("--creds: {e}"))).transpose()?,
                authfile,
                ..ClientOptions::default()
            };
            push_cmd(&dest, attrs, compressor(&compression_format), &options, threads.count(), &cache.open(), &store_dir)
        }
        Command::Load { engine, attrs, threads, cache } => load_cmd(&engine, attrs, threads.count(), &cache.open(), &store_dir),
        Command::StreamScript { io } => stream_script_cmd(io, &store_dir),
        Command::Layers { file, key, layering, max_layers, pipeline, ignore } => {
            layers_cmd(&file, &key, &layering, max_layers, pipeline.as_deref(), ignore.as_deref())
        }
        Command::Plan { json, attrs } => plan_cmd(attrs, json, &store_dir),
    }
}

fn read_attrs(explicit: Option<&Path>) -> Result<Attrs> {
    Attrs::read(&attrs::locate(explicit)?)
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
    let mut out = Compressed::new(file.writer(), spec.compressor, threads)?;
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

fn stream_cmd(file: Option<PathBuf>, threads: usize, cache: &LayerCache, store_dir: &str) -> Result<()> {
    let started = Instant::now();
    let mut stdout = output::stdout()?;
    let attrs = read_attrs(file.as_deref())?;
    let image = plan_image(&attrs, store_dir)?;
    drop(attrs); // the plan has what is needed; the raw closure JSON can go
    let layers = image.scan_layers(store_dir, threads)?;
    let spec = image.into_spec();
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
    compression: &str,
    threads: usize,
    cache: &LayerCache,
    store_dir: &str,
) -> Result<()> {
    let started = Instant::now();
    let (target, tag) = OciTarget::parse(dest)?;
    let compressor = compressor(compression);
    let attrs = read_attrs(attrs_file.as_deref())?;
    let image = plan_image(&attrs, store_dir)?;
    drop(attrs); // the plan has what is needed; the raw closure JSON can go
    let layers = image.scan_layers(store_dir, threads)?;
    let spec = image.into_spec();
    let tag = tag.unwrap_or_else(|| spec.tag.clone());
    let mut destination: Box<dyn Destination> = match &target {
        OciTarget::Dir(dir) => Box::new(OciLayout::open(dir, &tag, compressor, threads, cache.clone())?),
        OciTarget::Archive(file) => Box::new(OciArchive::create(file, &tag, compressor, threads, cache.clone())?),
    };
    let written = write_image(destination.as_mut(), &spec, &layers, threads, cache)?;
    summary(written, started);
    Ok(())
}

/// `--compression-format` (clap has checked the value).
fn compressor(format: &str) -> Compressor {
    match format {
        "zstd" => Compressor::Zstd,
        "none" => Compressor::None,
        _ => Compressor::Gz,
    }
}

fn push_cmd(
    dest: &str,
    attrs_file: Option<PathBuf>,
    compressor: Compressor,
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
    let mut push = RegistryPush::new(client, &reference.repository, &tag, compressor, threads, layers.len())?;
    let written = write_image(&mut push, &spec, &layers, threads, cache)?;
    let stats = push.stats();
    eprintln!(
        "nix-layers: pushed {}/{}:{tag}@{}: {} uploaded, {} already present, {} sent",
        reference.registry,
        reference.repository,
        push.manifest_digest().unwrap_or("?"),
        stats.uploaded,
        stats.present,
        human_size(stats.bytes_sent)
    );
    summary(written, started);
    Ok(())
}

fn load_cmd(engine: &str, attrs_file: Option<PathBuf>, threads: usize, cache: &LayerCache, store_dir: &str) -> Result<()> {
    let started = Instant::now();
    let engine = Engine::from_name(engine)?;
    let attrs = read_attrs(attrs_file.as_deref())?;
    let image = plan_image(&attrs, store_dir)?;
    drop(attrs); // the plan has what is needed; the raw closure JSON can go
    // Ask the engine first: a daemon that is down fails before the store is scanned.
    let stored = engine_load::query(engine)?;
    let layers = image.scan_layers(store_dir, threads)?;
    let spec = image.into_spec();
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
    let mut script = shebang.into_bytes();
    script.extend_from_slice(attrs.to_json()?.as_bytes());
    script.push(b'\n');
    write_atomically(&out_path(io.out, &attrs)?, &script, 0o555)
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
