//! `includeNixDB`: a Nix database for the closure of `contents`, written into the image,
//! so that `nix-store -qR` and `nix-store --verify --check-contents` work inside it.
//!
//! nixpkgs' `mkDbExtraCommand` registers the closure of `contents` with
//! `nix-store --load-db` and adds a GC root per content; we write the same rows from the
//! closure graph Nix gave us, with SQLite itself (rusqlite, bundled), in the schema Nix
//! 2.x reads (schema version 10). Rows are as `--load-db` writes them: the NAR hash as
//! `sha256:<hex>`, narSize, references (self-references kept, as Nix keeps them), no
//! deriver (the graph has none, and nixpkgs' registration has none either), no
//! signatures, no `ca`, `ultimate` unset; the registration time is the image's `mtime`.
//!
//! Unlike nixpkgs' database, ours is the same to the bit from build to build: paths are
//! inserted in sorted order into a fresh file with a fixed page size and a rollback
//! journal (no WAL), then `VACUUM`ed, so the file's layout depends only on its rows and
//! on the SQLite version (pinned by Cargo.lock).

use crate::store_path::StorePath;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};

/// Where the database goes, relative to the image root.
pub const DB_DIR: &str = "nix/var/nix/db";
/// Where the GC roots of `contents` go, relative to the image root.
pub const GCROOTS_DIR: &str = "nix/var/nix/gcroots/docker";
/// The schema version Nix 2.x (2.4 and later, 2.8 included) writes to `db/schema`, and
/// upgrades older databases to.
pub const SCHEMA_VERSION: &str = "10";

/// The database tables, as Nix 2.x creates them (schema version 10).
const SCHEMA: &str = "
create table ValidPaths (
    id               integer primary key autoincrement not null,
    path             text unique not null,
    hash             text not null,
    registrationTime integer not null,
    deriver          text,
    narSize          integer,
    ultimate         integer,
    sigs             text,
    ca               text
);
create table Refs (
    referrer  integer not null,
    reference integer not null,
    primary key (referrer, reference),
    foreign key (referrer) references ValidPaths(id) on delete cascade,
    foreign key (reference) references ValidPaths(id) on delete restrict
);
create index IndexReferrer on Refs(referrer);
create index IndexReference on Refs(reference);
create trigger DeleteSelfRefs before delete on ValidPaths
  begin
    delete from Refs where referrer = old.id and reference = old.id;
  end;
create table DerivationOutputs (
    drv  integer not null,
    id   text not null,
    path text not null,
    primary key (drv, id),
    foreign key (drv) references ValidPaths(id) on delete cascade
);
create index IndexDerivationOutputs on DerivationOutputs(path);
";

/// One valid path to register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The store path.
    pub path: String,
    /// SHA-256 of its NAR serialisation.
    pub nar_hash: [u8; 32],
    /// Size of its NAR serialisation (0: unknown, stored as NULL as Nix does).
    pub nar_size: u64,
    /// The paths it refers to, itself included if it does, sorted.
    pub references: Vec<String>,
}

/// One path of a closure graph, with the fields the database needs (the graph was
/// checked before, by [`crate::attrs::Attrs::graph`]).
#[derive(Clone, Debug, serde::Deserialize)]
pub struct GraphPath {
    /// The store path.
    pub path: String,
    /// The paths it refers to.
    pub references: Vec<String>,
    /// Size of its NAR serialisation.
    #[serde(rename = "narSize", default)]
    pub nar_size: u64,
    /// Its NAR hash, as Nix wrote it.
    #[serde(rename = "narHash")]
    pub nar_hash: Option<String>,
}

/// What `includeNixDB` adds to the image.
#[derive(Clone, Debug)]
pub struct NixDb {
    /// The closure of `contents`, sorted by path.
    pub paths: Vec<Registration>,
    /// The contents, each getting a GC root.
    pub roots: Vec<StorePath>,
    /// `registrationTime` of every path (seconds since the epoch).
    pub registration_time: i64,
}

/// A file or symlink of the database, relative to the image root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbFile {
    /// A regular file and its bytes.
    File(Vec<u8>),
    /// A symlink and its target.
    Symlink(Vec<u8>),
    /// A directory (one that may stay empty).
    Directory,
}

impl NixDb {
    /// [`NixDb::new`] from `graph_json`, the JSON text of a closure graph.
    ///
    /// # Errors
    /// The text is not a closure graph, or as [`NixDb::new`].
    pub fn from_graph_json(graph_json: &str, roots: &[StorePath], registration_time: i64) -> Result<NixDb> {
        let entries: Vec<GraphPath> =
            serde_json::from_str(graph_json).context("includeNixDB: key `closure` is not a closure graph")?;
        NixDb::new(&entries, roots, registration_time)
    }

    /// The closure of `roots` in `entries` (a closure graph as Nix writes it), checked.
    ///
    /// # Errors
    /// A root or reference that is not in the graph, an entry without a usable `narHash`.
    pub fn new(entries: &[GraphPath], roots: &[StorePath], registration_time: i64) -> Result<NixDb> {
        let by_path: BTreeMap<&str, &GraphPath> = entries.iter().map(|e| (e.path.as_str(), e)).collect();
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&str> = Vec::new();
        for root in roots {
            if !by_path.contains_key(root.as_str()) {
                bail!("includeNixDB: `contents` entry `{root}` is not in the closure graph (key `closure`)");
            }
            todo.push(root.as_str());
        }
        while let Some(path) = todo.pop() {
            if !seen.insert(path) {
                continue;
            }
            let entry = by_path[path];
            for reference in &entry.references {
                if !by_path.contains_key(reference.as_str()) {
                    bail!("includeNixDB: `{path}` refers to `{reference}`, which is not in the closure graph");
                }
                todo.push(reference);
            }
        }
        let paths: Vec<Registration> = seen
            .into_iter()
            .map(|path| {
                let entry = by_path[path];
                let hash = entry
                    .nar_hash
                    .as_deref()
                    .ok_or_else(|| anyhow!("includeNixDB: `{path}` has no `narHash` in the closure graph"))?;
                let nar_hash = parse_sha256(hash).with_context(|| format!("includeNixDB: `narHash` of `{path}`"))?;
                let references: BTreeSet<String> = entry.references.iter().cloned().collect();
                Ok(Registration { path: path.to_string(), nar_hash, nar_size: entry.nar_size, references: references.into_iter().collect() })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut roots: Vec<StorePath> = roots.to_vec();
        roots.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        roots.dedup_by(|a, b| a.as_str() == b.as_str());
        Ok(NixDb { paths, roots, registration_time })
    }

    /// The files to add under the image root, sorted by name: `nix/var/nix/db/db.sqlite`,
    /// `nix/var/nix/db/schema`, the directory `nix/var/nix/gcroots/docker` and in it one
    /// symlink per content, named as the content. (Other directories are implied by the
    /// names.)
    ///
    /// # Errors
    /// SQLite fails, or the temporary directory it writes in cannot be used.
    pub fn files(&self) -> Result<Vec<(String, DbFile)>> {
        let mut files = vec![
            (format!("{DB_DIR}/db.sqlite"), DbFile::File(self.sqlite()?)),
            (format!("{DB_DIR}/schema"), DbFile::File(SCHEMA_VERSION.as_bytes().to_vec())),
            (GCROOTS_DIR.to_string(), DbFile::Directory),
        ];
        for root in &self.roots {
            files.push((format!("{GCROOTS_DIR}/{}", root.base_name()), DbFile::Symlink(root.as_str().as_bytes().to_vec())));
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(files)
    }

    /// The database file's bytes.
    ///
    /// # Errors
    /// SQLite fails, or the temporary directory cannot be used.
    pub fn sqlite(&self) -> Result<Vec<u8>> {
        let dir = tempfile::Builder::new()
            .prefix("nix-layers-db")
            .tempdir()
            .context("includeNixDB: cannot create a temporary directory for the database (is $TMPDIR writable?)")?;
        let file = dir.path().join("db.sqlite");
        self.write_sqlite(&file).context("includeNixDB: cannot write the Nix database")?;
        let bytes = std::fs::read(&file).with_context(|| format!("includeNixDB: cannot read `{}`", file.display()))?;
        // Nothing but the database may be left: a journal would mean it was not closed.
        let leftovers: Vec<String> = std::fs::read_dir(dir.path())?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name != "db.sqlite")
            .collect();
        if !leftovers.is_empty() {
            bail!("includeNixDB: internal error: SQLite left {} behind", leftovers.join(", "));
        }
        Ok(bytes)
    }

    fn write_sqlite(&self, file: &std::path::Path) -> rusqlite::Result<()> {
        let mut db = rusqlite::Connection::open(file)?;
        // Set before the first table: the file's layout then depends only on the rows.
        db.execute_batch(
            "pragma page_size = 4096; pragma journal_mode = delete; pragma auto_vacuum = none; \
             pragma encoding = 'UTF-8'; pragma foreign_keys = on;",
        )?;
        let tx = db.transaction()?;
        tx.execute_batch(SCHEMA)?;
        let mut ids = BTreeMap::new();
        {
            let mut insert = tx.prepare(
                "insert into ValidPaths (path, hash, registrationTime, deriver, narSize, ultimate, sigs, ca) \
                 values (?1, ?2, ?3, null, ?4, null, null, null)",
            )?;
            for (i, reg) in self.paths.iter().enumerate() {
                let size = (reg.nar_size != 0).then_some(reg.nar_size as i64);
                insert.execute(rusqlite::params![reg.path, format!("sha256:{}", crate::layer::hex(&reg.nar_hash)), self.registration_time, size])?;
                ids.insert(reg.path.as_str(), i as i64 + 1);
            }
            let mut refer = tx.prepare("insert into Refs (referrer, reference) values (?1, ?2)")?;
            for reg in &self.paths {
                for reference in &reg.references {
                    refer.execute([ids[reg.path.as_str()], ids[reference.as_str()]])?;
                }
            }
        }
        tx.commit()?;
        db.execute_batch("vacuum;")?;
        db.close().map_err(|(_, e)| e)
    }
}

/// The 32 bytes of a SHA-256 as Nix writes it: `sha256:<nix-base32>` (graphs from
/// exportReferencesGraph), `sha256:<hex>` (the database) or SRI `sha256-<base64>`
/// (`nix path-info --json`).
///
/// # Errors
/// Any other form, a wrong length or a bad digit.
pub fn parse_sha256(text: &str) -> Result<[u8; 32]> {
    let bad = || anyhow!("{text:?} is not a SHA-256 as Nix writes it (`sha256:<nix32>`, `sha256:<hex>` or `sha256-<base64>`)");
    if let Some(digest) = text.strip_prefix("sha256:") {
        match digest.len() {
            52 => from_nix32(digest).ok_or_else(bad),
            64 => from_hex(digest).ok_or_else(bad),
            _ => Err(bad()),
        }
    } else if let Some(b64) = text.strip_prefix("sha256-") {
        from_base64(b64).ok_or_else(bad)
    } else {
        Err(bad())
    }
}

/// Nix's base-32 alphabet (no e, o, u, t).
const NIX32: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Nix's base 32: the last character holds the lowest 5 bits of the first byte, and so
/// on (digit `n` from the end is bits `5n..5n+5` of the hash, read little-endian).
fn from_nix32(text: &str) -> Option<[u8; 32]> {
    let mut hash = [0u8; 32];
    for (n, c) in text.bytes().rev().enumerate() {
        let digit = NIX32.iter().position(|&d| d == c)? as u16;
        let (i, j) = (n * 5 / 8, n * 5 % 8);
        let bits = digit << j;
        hash[i] |= bits as u8;
        match hash.get_mut(i + 1) {
            Some(next) => *next |= (bits >> 8) as u8,
            None if bits >> 8 != 0 => return None, // more than 256 bits
            None => {}
        }
    }
    Some(hash)
}

fn from_hex(text: &str) -> Option<[u8; 32]> {
    let mut hash = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        hash[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(hash)
}

/// Standard base64 with padding, exactly 32 bytes.
fn from_base64(text: &str) -> Option<[u8; 32]> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let body = text.strip_suffix('=')?; // 32 bytes: 43 digits and one `=`
    if body.len() != 43 {
        return None;
    }
    let mut bits: u32 = 0;
    let mut count = 0;
    let mut out = Vec::with_capacity(33);
    for c in body.bytes() {
        bits = (bits << 6) | ALPHABET.iter().position(|&a| a == c)? as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    if bits != 0 {
        return None; // non-zero leftover bits: not a canonical encoding
    }
    out.try_into().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    // `nix-store -q --hash` (nix32) and the hash column Nix 2.8 wrote for the same path
    // (hex); SRI from `nix hash to-sri`.
    const NIX32: &str = "sha256:0m54h46i7lwk20d2vihhq0fq7ns5ypg44viy8bxxnfqpz3y9a10x";
    const HEX: &str = "sha256:1d0495fcf8173bdbfb423e6e42def545db831dc010c62d1a1093d3130d81a454";
    const SRI: &str = "sha256-HQSV/PgXO9v7Qj5uQt71RduDHcAQxi0aEJPTEw2BpFQ=";

    #[test]
    fn hashes_convert_as_nix_converts_them() {
        let hex = parse_sha256(HEX).unwrap();
        assert_eq!(format!("sha256:{}", crate::layer::hex(&hex)), HEX);
        assert_eq!(parse_sha256(NIX32).unwrap(), hex);
        assert_eq!(parse_sha256(SRI).unwrap(), hex);
        let other = parse_sha256("sha256:0avaxmxp0lpmp2zdh0savkrp1qc8jmy5zgdkipllxmy4l7qqyxkn").unwrap();
        assert_eq!(crate::layer::hex(&other), "76768ff1a1c4d74ee98db3bd5f7c9588e170f3dc4a03d8beb8f552707bed6a2b");
    }

    #[test]
    fn malformed_hashes_are_refused() {
        for bad in [
            "md5:0m54h46i7lwk20d2vihhq0fq7ns5ypg44viy8bxxnfqpz3y9a10x",
            "sha256:em54h46i7lwk20d2vihhq0fq7ns5ypg44viy8bxxnfqpz3y9a10x", // `e` is not a nix32 digit
            "sha256:zm54h46i7lwk20d2vihhq0fq7ns5ypg44viy8bxxnfqpz3y9a10x", // more than 256 bits
            "sha256:1d04",
            "sha256-HQSV/PgXO9v7Qj5uQt71RduDHcAQxi0aEJPTEw2BpFQ",
            "sha256-HQSV/PgXO9v7Qj5uQt71RduDHcAQxi0aEJPTEw2BpFR=",
        ] {
            let error = parse_sha256(bad).unwrap_err().to_string();
            assert!(error.contains(bad), "{error}");
        }
    }

    fn entry(path: &str, refs: &[&str], hash: &str) -> GraphPath {
        GraphPath {
            path: path.into(),
            references: refs.iter().map(|r| r.to_string()).collect(),
            nar_size: 120,
            nar_hash: Some(hash.into()),
        }
    }

    const A: &str = "/nix/store/0l1v2mjy9ivhn9njfz2szzh7whr0vj02-a";
    const B: &str = "/nix/store/1bcsgxk5am7ssf49z1va863ibc1z98c7-b";
    const C: &str = "/nix/store/3y0acbyz5lhxgrzag4cr05yphcxdhrc4-c";
    const OTHER: &str = "/nix/store/ap5lw0pk87zllpr8psdiqgxx50yqpp1h-other";

    fn graph() -> Vec<GraphPath> {
        vec![entry(A, &[A, B], NIX32), entry(B, &[C], HEX), entry(C, &[], SRI), entry(OTHER, &[C], NIX32)]
    }

    fn db() -> NixDb {
        let roots = [StorePath::parse("/nix/store", A).unwrap()];
        NixDb::new(&graph(), &roots, 1).unwrap()
    }

    #[test]
    fn the_closure_of_contents_is_registered_and_nothing_else() {
        let db = db();
        let paths: Vec<&str> = db.paths.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, [A, B, C]);
        assert_eq!(db.paths[0].references, [A, B]);
    }

    /// id, path, hash, registrationTime, deriver, narSize, ultimate, sigs, ca.
    type Row = (i64, String, String, i64, Option<String>, Option<i64>, Option<i64>, Option<String>, Option<String>);

    #[test]
    fn the_database_holds_nixs_rows() {
        let bytes = db().sqlite().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("db.sqlite");
        std::fs::write(&file, &bytes).unwrap();
        let conn = rusqlite::Connection::open(&file).unwrap();
        let rows: Vec<Row> = conn
            .prepare("select id, path, hash, registrationTime, deriver, narSize, ultimate, sigs, ca from ValidPaths order by id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0], (1, A.to_string(), HEX.to_string(), 1, None, Some(120), None, None, None));
        assert_eq!(rows[2].1, C);
        let refs: Vec<(i64, i64)> = conn
            .prepare("select referrer, reference from Refs order by referrer, reference")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(refs, [(1, 1), (1, 2), (2, 3)]);
        let mode: String = conn.query_row("pragma journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "delete");
        // The file says "rollback journal" (1, 1), not WAL (2, 2), in bytes 18 and 19.
        assert_eq!(&bytes[18..20], &[1, 1]);
        assert_eq!(u16::from_be_bytes([bytes[16], bytes[17]]), 4096);
    }

    #[test]
    fn two_databases_of_the_same_closure_are_identical() {
        let first = db().files().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100)); // a clock would show
        let second = db().files().unwrap();
        assert_eq!(first, second);
        let names: Vec<&str> = first.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "nix/var/nix/db/db.sqlite",
                "nix/var/nix/db/schema",
                "nix/var/nix/gcroots/docker",
                "nix/var/nix/gcroots/docker/0l1v2mjy9ivhn9njfz2szzh7whr0vj02-a"
            ]
        );
        assert_eq!(first[1].1, DbFile::File(b"10".to_vec()));
        assert_eq!(first[3].1, DbFile::Symlink(A.as_bytes().to_vec()));
    }

    #[test]
    fn a_content_outside_the_graph_or_a_missing_hash_is_named() {
        let roots = [StorePath::parse("/nix/store", "/nix/store/hb014h5v14z69nwg0fkg2is8gq40ilfc-leaf").unwrap()];
        let error = NixDb::new(&graph(), &roots, 1).unwrap_err().to_string();
        assert!(error.contains("hb014h5v14z69nwg0fkg2is8gq40ilfc-leaf") && error.contains("not in the closure graph"), "{error}");
        let mut entries = graph();
        entries[2].nar_hash = None;
        let roots = [StorePath::parse("/nix/store", A).unwrap()];
        let error = NixDb::new(&entries, &roots, 1).unwrap_err().to_string();
        assert!(error.contains(C) && error.contains("narHash"), "{error}");
    }
}
