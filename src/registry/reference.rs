//! `docker://HOST[:PORT]/NAME[:TAG][@DIGEST]`: where an image goes.
//!
//! The grammar is docker's reference grammar (distribution/reference), with one
//! restriction: the first path component must name the registry host, i.e. be `localhost`,
//! contain a `.` or a `:PORT`, or be a bracketed IPv6 address. Docker's shorthand
//! (`ubuntu`, `library/ubuntu` meaning `docker.io/library/ubuntu`) is not supported:
//! such a reference is an error that asks for the host. `docker.io/NAME` itself is
//! accepted and talks to `registry-1.docker.io`, as docker does.

use crate::reference;
use std::fmt;


/// A parsed `docker://` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `HOST[:PORT]` as written (the key for credentials, and the host to talk to).
    pub registry: String,
    /// The repository name inside the registry, e.g. `t/x`.
    pub repository: String,
    /// The tag, if one was given (`:TAG`).
    pub tag: Option<String>,
    /// The manifest digest, if one was given (`@sha256:…`).
    pub digest: Option<String>,
}

/// Why a reference does not parse; the message names the part at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference `{input}`: {reason}")]
pub struct ReferenceError {
    /// The reference as given.
    pub input: String,
    /// What is wrong, naming the part.
    pub reason: String,
}

impl Reference {
    /// Parses `docker://HOST[:PORT]/NAME[:TAG][@DIGEST]`. The `docker://` prefix is required
    /// (it is the transport name skopeo and podman use).
    ///
    /// # Errors
    /// A missing prefix, host, or name; a bad host, port, name component, tag or digest.
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        let err = |reason: String| ReferenceError { input: input.to_string(), reason };
        let rest = input.strip_prefix("docker://").ok_or_else(|| {
            err("expected docker://HOST[:PORT]/NAME[:TAG] (the `docker://` transport prefix is missing)".into())
        })?;
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| err(format!("`{rest}` has no repository name after the registry host (expected HOST[:PORT]/NAME)")))?;
        if !looks_like_host(host) {
            return Err(err(format!(
                "`{host}` is not a registry host: the first component must be `localhost`, contain a `.`, or a `:PORT` \
                 (docker.io shorthand names are not supported; write docker.io/{rest})"
            )));
        }
        check_host(host).map_err(err)?;

        // `@DIGEST` first (a digest contains `:`), then `:TAG` after the last `/`.
        let (path, digest) = match path.split_once('@') {
            Some((p, d)) => {
                check_digest(d).map_err(err)?;
                (p, Some(d.to_string()))
            }
            None => (path, None),
        };
        let last_slash = path.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match path[last_slash..].find(':') {
            Some(i) => {
                let (name, tag) = path.split_at(last_slash + i);
                let tag = &tag[1..];
                check_tag(tag).map_err(err)?;
                (name, Some(tag.to_string()))
            }
            None => (path, None),
        };
        check_name(name).map_err(err)?;
        Ok(Reference { registry: host.to_string(), repository: name.to_string(), tag, digest })
    }

    /// The `HOST[:PORT]` to send requests to: the registry as written, except docker's
    /// `docker.io`, whose API lives at `registry-1.docker.io`.
    pub fn api_host(&self) -> &str {
        if self.registry == "docker.io" { "registry-1.docker.io" } else { &self.registry }
    }

    /// What a manifest is stored under: the digest if given, else the tag, else `latest`.
    pub fn manifest_reference(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "docker://{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// Docker's rule for telling a registry host from a first name component.
fn looks_like_host(first: &str) -> bool {
    first == "localhost" || first.contains('.') || first.contains(':') || first.starts_with('[')
}

/// The name grammar is the one image names are checked with ([`crate::reference`]).
fn check_host(host: &str) -> Result<(), String> {
    reference::check_host(host)?;
    // The grammar takes any digits as a port; a connection needs a real one.
    match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(':') && port.bytes().all(|c| c.is_ascii_digit()) => {
            match port.parse::<u16>() {
                Ok(p) if p > 0 => Ok(()),
                _ => Err(format!("registry host `{host}`: port `{port}` is not a number from 1 to 65535")),
            }
        }
        _ => Ok(()),
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.len() > reference::NAME_MAX {
        return Err(format!("the repository name is {} characters long (at most {})", name.len(), reference::NAME_MAX));
    }
    reference::check_path(name)
}

fn check_tag(tag: &str) -> Result<(), String> {
    reference::check_tag(tag)
}

/// `ALGORITHM:HEX`; sha256 and sha512 are checked for their exact length.
pub(crate) fn check_digest(digest: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("digest `{digest}`: {why}"));
    let Some((alg, hex)) = digest.split_once(':') else {
        return bad("expected ALGORITHM:HEX, e.g. sha256:<64 hex digits>");
    };
    let hex_len = match alg {
        "sha256" => 64,
        "sha512" => 128,
        _ => return bad("the algorithm must be sha256 or sha512"),
    };
    if hex.len() != hex_len || !hex.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
        return bad(&format!("expected {hex_len} lowercase hex digits after `{alg}:`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }
    fn err(s: &str) -> String {
        Reference::parse(s).expect_err(s).to_string()
    }

    #[test]
    fn parses_host_port_name_tag_digest() {
        let r = ok("docker://127.0.0.1:5000/t/x:v1");
        assert_eq!((r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()), ("127.0.0.1:5000", "t/x", Some("v1")));
        assert_eq!(r.manifest_reference(), "v1");
        let r = ok("docker://localhost/app");
        assert_eq!((r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()), ("localhost", "app", None));
        assert_eq!(r.manifest_reference(), "latest");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ok(&format!("docker://registry.example.com/a/b-c__d.e:t@{d}"));
        assert_eq!((r.repository.as_str(), r.tag.as_deref(), r.digest.as_deref()), ("a/b-c__d.e", Some("t"), Some(d.as_str())));
        assert_eq!(r.manifest_reference(), d);
        let r = ok("docker://[::1]:5000/x");
        assert_eq!(r.registry, "[::1]:5000");
        assert_eq!(ok("docker://docker.io/library/busybox").api_host(), "registry-1.docker.io");
        assert_eq!(ok("docker://h.io/x:1").to_string(), "docker://h.io/x:1");
    }

    #[test]
    fn errors_name_the_part_at_fault() {
        assert!(err("127.0.0.1:5000/x").contains("`docker://` transport prefix is missing"));
        assert!(err("docker://127.0.0.1:5000").contains("no repository name"));
        assert!(err("docker://library/busybox").contains("`library` is not a registry host"));
        assert!(err("docker://h:99999/x").contains("port `99999`"));
        assert!(err("docker://h:/x").contains("port \"\""), "{}", err("docker://h:/x"));
        assert!(err("docker://-h.io/x").contains("\"-h.io\""), "{}", err("docker://-h.io/x"));
        assert!(err("docker://h.io/Upper").contains("\"Upper\""));
        assert!(err("docker://h.io/a//b").contains("empty part"));
        assert!(err("docker://h.io/a-/b").contains("\"a-\""));
        assert!(err("docker://h.io/a___b").contains("\"a___b\""));
        assert!(err("docker://h.io/x:").contains("tag is empty"));
        assert!(err("docker://h.io/x:.t").contains("tag must start"));
        assert!(err(&format!("docker://h.io/x:{}", "t".repeat(129))).contains("129 characters"));
        assert!(err("docker://h.io/x@sha256:abc").contains("digest `sha256:abc`"));
        assert!(err("docker://h.io/x@md5:abc").contains("sha256 or sha512"));
        assert!(err(&format!("docker://h.io/{}", "a".repeat(256))).contains("256 characters"));
    }
}
