//! Property tests (issue 8 §7): the attrs parser, the graph checks and the tar header
//! writer, on generated input. Case counts stay modest so `cargo test` stays quick.
#![allow(clippy::unwrap_used)]

use nix_layers::attrs::{Attrs, GraphEntry, ImageSpec, MAX_ID};
use nix_layers::graph::Graph;
use nix_layers::tar_header::{self, Header, Kind, Owner};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::io::Read;
use std::path::Path;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-1e9f64..1e9).prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Values for the image keys: mostly plausible, some hostile.
fn image_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        json_value(),
        "[a-z0-9:/@._ -]{0,20}".prop_map(Value::String),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?([Zz]|[+-][0-9]{2}:[0-9]{2})"
            .prop_map(Value::String),
        any::<u64>().prop_map(|n| json!(n)),
    ]
}

const IMAGE_KEYS: [&str; 17] = [
    "name", "imageName", "tag", "created", "mtime", "uid", "gid", "uname", "gname", "config", "contents",
    "maxLayers", "compressor", "includeStorePaths", "customisationLayer", "outputs", "architecture",
];

proptest! {
    #![proptest_config(config(256))]

    /// No byte string makes the parser panic.
    #[test]
    fn attrs_parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = Attrs::parse(bytes, Path::new("fuzz.json"));
    }

    /// Any JSON object parses, and each key reads back as written (`null` as absent).
    #[test]
    fn attrs_keys_round_trip(object in prop::collection::btree_map(".{0,10}", json_value(), 0..8)) {
        let text = serde_json::to_vec(&object).unwrap();
        let attrs = Attrs::parse(text, Path::new("fuzz.json")).unwrap();
        for (key, value) in &object {
            let got = attrs.get(key).unwrap().map(|v| v.into_owned());
            if value.is_null() {
                prop_assert_eq!(got, None);
            } else {
                prop_assert_eq!(got.as_ref(), Some(value));
            }
            prop_assert_eq!(attrs.has(key), !value.is_null());
        }
        // Written again, the same object (keys sorted, as serde_json's map keeps them).
        let again: Map<String, Value> = serde_json::from_str(&attrs.to_json().unwrap()).unwrap();
        let expected: Map<String, Value> = object.clone().into_iter().collect();
        prop_assert_eq!(again, expected);
    }

    /// Any mix of image keys and values: checked or refused, never a panic.
    #[test]
    fn image_spec_never_panics(values in prop::collection::vec((0..IMAGE_KEYS.len(), image_value()), 0..10)) {
        let mut object = Map::new();
        for (key, value) in values {
            object.insert(IMAGE_KEYS[key].to_string(), value);
        }
        let attrs = Attrs::parse(serde_json::to_vec(&object).unwrap(), Path::new("fuzz.json")).unwrap();
        if let Ok(spec) = ImageSpec::from_attrs(&attrs, "/nix/store") {
            // What is accepted is what engines read.
            prop_assert!(spec.uid <= MAX_ID && spec.gid <= MAX_ID);
            prop_assert!(!spec.uname.contains('\0') && !spec.gname.contains('\0'));
            prop_assert!(spec.created.text.ends_with('Z') && spec.created.text.as_bytes()[10] == b'T');
            let repo_tag = spec.repo_tag();
            prop_assert!(!repo_tag.contains(char::is_whitespace) && !repo_tag.contains('@'), "{}", repo_tag);
        }
    }
}

fn node(i: usize) -> String {
    format!("/nix/store/{:032}-n{i}", i)
}

/// A random DAG: `n` nodes, edges from lower to higher numbers, as `(from, to)`.
fn dag() -> impl Strategy<Value = (usize, Vec<(usize, usize)>)> {
    (2usize..30).prop_flat_map(|n| {
        let edge = (0..n - 1).prop_flat_map(move |from| (Just(from), from + 1..n));
        (Just(n), prop::collection::vec(edge, 0..60))
    })
}

fn entries(n: usize, edges: &[(usize, usize)], extra: Option<(usize, String)>) -> Vec<GraphEntry<'static>> {
    (0..n)
        .map(|i| {
            let mut references: Vec<Cow<'static, str>> = vec![Cow::Owned(node(i))];
            references.extend(edges.iter().filter(|e| e.0 == i).map(|e| Cow::Owned(node(e.1))));
            if let Some((at, reference)) = &extra {
                if *at == i {
                    references.push(Cow::Owned(reference.clone()));
                }
            }
            GraphEntry { path: Cow::Owned(node(i)), references, nar_size: i as u64, nar_hash: None }
        })
        .collect()
}

proptest! {
    #![proptest_config(config(128))]

    /// Every DAG is accepted, with a topological order: each node after its referrers.
    #[test]
    fn random_dags_are_accepted((n, edges) in dag()) {
        let graph = Graph::new(&entries(n, &edges, None)).unwrap();
        prop_assert_eq!(graph.len(), n);
        let mut position = vec![usize::MAX; n];
        for (at, &v) in graph.topo_order.iter().enumerate() {
            position[v as usize] = at;
        }
        prop_assert!(position.iter().all(|&p| p != usize::MAX));
        for &(from, to) in &edges {
            prop_assert!(position[from] < position[to]);
        }
    }

    /// A reference to a path not in the graph is refused, naming both paths.
    #[test]
    fn missing_references_are_named((n, edges) in dag(), at in 0usize..30) {
        let at = at % n;
        let missing = "/nix/store/00000000000000000000000000000000-missing".to_string();
        let err = Graph::new(&entries(n, &edges, Some((at, missing.clone())))).err().unwrap().to_string();
        prop_assert!(err.contains(&missing) && err.contains(&node(at)), "{}", err);
    }

    /// An edge back against a DAG's edge closes a cycle: refused, naming its paths.
    #[test]
    fn cycles_are_named((n, mut edges) in dag(), pick in any::<prop::sample::Index>()) {
        if edges.is_empty() {
            edges.push((0, n - 1));
        }
        let (from, to) = edges[pick.index(edges.len())];
        let err = Graph::new(&entries(n, &edges, Some((to, node(from))))).err().unwrap().to_string();
        prop_assert!(err.contains("cycle") && err.contains(&node(from)) && err.contains(&node(to)), "{}", err);
    }
}

/// A name of 1–300 bytes: path components of ASCII and non-ASCII letters.
fn entry_name() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec("[a-zA-Z0-9._+-]{1,40}|[éü日本ß]{1,10}", 1..12).prop_map(|parts| {
        let mut name = parts.join("/").into_bytes();
        name.truncate(300);
        // A component cut in the middle of a character is still a valid byte string.
        while name.last() == Some(&b'/') {
            name.pop();
        }
        name
    })
}

/// The value of a PAX record `key` of the entry, if any.
fn pax<R: Read>(entry: &mut tar::Entry<'_, R>, key: &str) -> Option<String> {
    let records = entry.pax_extensions().ok()??;
    for record in records.flatten() {
        if record.key().ok()? == key {
            return Some(record.value().ok()?.to_string());
        }
    }
    None
}

proptest! {
    #![proptest_config(config(256))]

    /// Any entry we write reads back through the `tar` crate (an independent reader)
    /// with the same name, kind, mode, size, data, link target, ids, names and mtime.
    #[test]
    fn tar_headers_round_trip(
        name in entry_name(),
        kind in prop_oneof![Just(Kind::File), Just(Kind::Directory), Just(Kind::Symlink)],
        mode in 0u32..0o7777,
        size in 0u64..3000,
        link in entry_name(),
        uid in prop_oneof![0..=MAX_ID, Just(MAX_ID), Just(0o7777777), Just(0o7777777 + 1)],
        gid in prop_oneof![0..=MAX_ID, Just(MAX_ID)],
        uname in "[a-z_][a-z0-9_-]{0,40}",
        gname in "[a-z_][a-z0-9_-]{0,40}",
        mtime in prop_oneof![0i64..=253_402_300_799, Just(0o77777777777), Just(0o77777777777 + 1)],
    ) {
        let owner = Owner { uid, gid, uname, gname, mtime };
        let mut name = name;
        if kind == Kind::Directory {
            name.push(b'/');
        }
        let size = if kind == Kind::File { size } else { 0 };
        let link: &[u8] = if kind == Kind::Symlink { &link } else { b"" };
        let header = Header { name: &name, kind, mode, size, link, owner: &owner };
        let mut bytes = Vec::new();
        header.write_to(&mut bytes).unwrap();
        prop_assert_eq!(bytes.len() as u64, header.encoded_len());
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        bytes.extend_from_slice(&data);
        bytes.extend_from_slice(&tar_header::ZEROS[..tar_header::padding(size)]);
        bytes.extend_from_slice(&[0; 1024]);

        let mut archive = tar::Archive::new(&bytes[..]);
        let mut read = archive.entries().unwrap();
        let mut entry = read.next().unwrap().unwrap();
        prop_assert_eq!(&entry.path_bytes()[..], &name[..]);
        let expected_kind = match kind {
            Kind::File => tar::EntryType::Regular,
            Kind::Directory => tar::EntryType::Directory,
            Kind::Symlink => tar::EntryType::Symlink,
        };
        prop_assert_eq!(entry.header().entry_type(), expected_kind);
        prop_assert_eq!(entry.header().mode().unwrap(), mode);
        prop_assert_eq!(entry.size(), size);
        if kind == Kind::Symlink {
            prop_assert_eq!(&entry.link_name_bytes().unwrap()[..], link);
        }
        let read_uid = pax(&mut entry, "uid").map_or_else(|| entry.header().uid().unwrap(), |v| v.parse().unwrap());
        let read_gid = pax(&mut entry, "gid").map_or_else(|| entry.header().gid().unwrap(), |v| v.parse().unwrap());
        let read_mtime = pax(&mut entry, "mtime").map_or_else(|| entry.header().mtime().unwrap(), |v| v.parse().unwrap());
        prop_assert_eq!((read_uid, read_gid, read_mtime), (uid, gid, mtime as u64));
        let read_uname = pax(&mut entry, "uname").unwrap_or_else(|| entry.header().username().unwrap().unwrap().to_string());
        prop_assert_eq!(read_uname, owner.uname.clone());
        let mut got = Vec::new();
        entry.read_to_end(&mut got).unwrap();
        prop_assert_eq!(got, data);
        drop(entry);
        prop_assert!(read.next().is_none());
    }
}

/// Before 1970 (years 0000–1969 are valid `mtime`s), the time travels in a PAX record
/// with a minus sign, which Go's archive/tar reads; the ustar field holds 0.
#[test]
fn negative_mtimes_go_in_a_pax_record() {
    let owner = Owner { uid: 0, gid: 0, uname: "root".into(), gname: "root".into(), mtime: -62_167_219_200 };
    let header = Header { name: b"f", kind: Kind::File, mode: 0o444, size: 0, link: b"", owner: &owner };
    let mut bytes = Vec::new();
    header.write_to(&mut bytes).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains(" mtime=-62167219200\n"), "{text}");
}
