//! Who we are to a registry: `WWW-Authenticate` challenges, credentials, bearer tokens.
//!
//! A registry says how it wants to be spoken to in the `401` answer to `GET /v2/`:
//! nothing (the ping answers `200`), `Basic realm="…"` (send the user and password on every
//! request), or `Bearer realm="…",service="…"` (ask the token server at `realm` for a
//! token covering the repositories and actions at hand, then send `Authorization: Bearer`).
//!
//! Credentials are looked up once, the first time a challenge asks for them, in the order
//! skopeo and podman use (containers/image `pkg/docker/config`):
//! 1. explicit `USER:PASS` (`--creds`);
//! 2. an explicit auth file (`--authfile`), else `$REGISTRY_AUTH_FILE`: when one of these is
//!    given, it is the only file read;
//! 3. otherwise the first of these files that has an entry for the registry:
//!    `$XDG_RUNTIME_DIR/containers/auth.json` (`/run/containers/$UID/auth.json` when the
//!    variable is unset), `$XDG_CONFIG_HOME/containers/auth.json` (default
//!    `~/.config/containers/auth.json`), `$DOCKER_CONFIG/config.json` (default
//!    `~/.docker/config.json`).
//!
//! In each file the entry is read by the `docker_credential` crate: a `credHelpers` entry for
//! the registry (runs `docker-credential-NAME get`), then `auths` (`auth` base64, or
//! `username`/`password`), then `credsStore`. Entries are keyed by `HOST[:PORT]` (docker's
//! `https://index.docker.io/v1/` spelling is matched for docker.io); per-repository keys
//! (`HOST/NAMESPACE`) that containers also read are not. An identity token (OAuth2 refresh
//! token) is reported as unsupported. The legacy `~/.dockercfg` is not read.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A user name and password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password (or a token used as one).
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    // Never print the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}:***)", self.username)
    }
}

impl Credentials {
    /// Parses `USER:PASS` (skopeo's `--creds`); the password may contain `:`.
    ///
    /// # Errors
    /// No `:`, or an empty user name.
    pub fn parse(user_pass: &str) -> Result<Credentials, String> {
        match user_pass.split_once(':') {
            Some((user, pass)) if !user.is_empty() => {
                Ok(Credentials { username: user.to_string(), password: pass.to_string() })
            }
            _ => Err("credentials must be given as USER:PASS (a non-empty user name, a colon, the password)".into()),
        }
    }

    /// The value of an `Authorization: Basic …` header.
    pub fn basic_header(&self) -> String {
        format!("Basic {}", base64(format!("{}:{}", self.username, self.password).as_bytes()))
    }
}

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="…"`.
    Basic {
        /// The realm (informative only).
        realm: String,
    },
    /// `Bearer realm="…",service="…",scope="…"`.
    Bearer {
        /// The token server's URL.
        realm: String,
        /// The `service` to ask the token for, if the registry named one.
        service: Option<String>,
        /// The scope the failed request needed, if the registry named one.
        scope: Option<String>,
        /// The `error` parameter (`insufficient_scope`, `invalid_token`), if any.
        error: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header value into its challenges (RFC 7235: a header may
/// hold several, and quoted values may hold commas, spaces and `\`-escapes). Schemes other
/// than Basic and Bearer are skipped.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    let mut scheme: Option<String> = None;
    let mut params: HashMap<String, String> = HashMap::new();
    let flush = |scheme: &mut Option<String>, params: &mut HashMap<String, String>, out: &mut Vec<Challenge>| {
        if let Some(s) = scheme.take() {
            let mut params = std::mem::take(params);
            let realm = params.remove("realm").unwrap_or_default();
            match s.to_ascii_lowercase().as_str() {
                "basic" => out.push(Challenge::Basic { realm }),
                "bearer" => out.push(Challenge::Bearer {
                    realm,
                    service: params.remove("service"),
                    scope: params.remove("scope"),
                    error: params.remove("error"),
                }),
                _ => {}
            }
        }
        params.clear();
    };
    let chars: Vec<char> = header.chars().collect();
    let mut i = 0;
    let skip = |i: &mut usize, pred: &dyn Fn(char) -> bool| {
        while *i < chars.len() && pred(chars[*i]) {
            *i += 1;
        }
    };
    while i < chars.len() {
        skip(&mut i, &|c| c == ' ' || c == '\t' || c == ',');
        let start = i;
        skip(&mut i, &|c| !matches!(c, ' ' | '\t' | ',' | '='));
        let token: String = chars[start..i].iter().collect();
        if token.is_empty() {
            break;
        }
        skip(&mut i, &|c| c == ' ' || c == '\t');
        if i < chars.len() && chars[i] == '=' {
            // `name=value` or `name="quoted, value"`: a parameter of the current challenge.
            i += 1;
            skip(&mut i, &|c| c == ' ' || c == '\t');
            let mut value = String::new();
            if i < chars.len() && chars[i] == '"' {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        i += 1;
                    }
                    value.push(chars[i]);
                    i += 1;
                }
                i += 1; // the closing quote
            } else {
                let start = i;
                skip(&mut i, &|c| c != ',' && c != ' ' && c != '\t');
                value = chars[start..i].iter().collect();
            }
            params.insert(token.to_ascii_lowercase(), value);
        } else {
            // A new scheme name starts a new challenge.
            flush(&mut scheme, &mut params, &mut out);
            scheme = Some(token);
        }
    }
    flush(&mut scheme, &mut params, &mut out);
    out
}

/// What the registry asked for, as learnt from its last `401`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// No authentication (the ping answered `200`).
    None,
    /// Basic: credentials on every request.
    Basic,
    /// Bearer: tokens from `realm`.
    Bearer {
        /// Token server URL.
        realm: String,
        /// `service` parameter.
        service: Option<String>,
    },
}

impl Scheme {
    /// The scheme a `401`'s challenges ask for (Bearer preferred), if any we speak.
    pub(crate) fn from_challenges(challenges: &[Challenge]) -> Option<Scheme> {
        let bearer = challenges.iter().find_map(|c| match c {
            Challenge::Bearer { realm, service, .. } if !realm.is_empty() => {
                Some(Scheme::Bearer { realm: realm.clone(), service: service.clone() })
            }
            _ => None,
        });
        bearer.or_else(|| challenges.iter().find(|c| matches!(c, Challenge::Basic { .. })).map(|_| Scheme::Basic))
    }
}

/// A bearer token and when to stop using it.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub(crate) value: String,
    pub(crate) expires: Instant,
}

/// The token server's answer (distribution's token spec: `token`, or OAuth2's `access_token`).
#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// Reads a token server answer; `expires_in` defaults to 60 s as the spec says, and a token
/// is dropped 10 s before it expires so it never dies in flight.
pub(crate) fn parse_token_response(body: &[u8], now: Instant) -> Result<Token, String> {
    let r: TokenResponse =
        serde_json::from_slice(body).map_err(|e| format!("the token server's answer is not the expected JSON: {e}"))?;
    let value = r
        .token
        .or(r.access_token)
        .filter(|t| !t.is_empty())
        .ok_or("the token server's answer has neither `token` nor `access_token`")?;
    let life = Duration::from_secs(r.expires_in.unwrap_or(60).max(60));
    Ok(Token { value, expires: now + life - Duration::from_secs(10) })
}

/// The token server URL for `scopes`: `realm?service=S&scope=A&scope=B`.
pub(crate) fn token_url(realm: &str, service: Option<&str>, scopes: &[String]) -> String {
    let mut url = realm.to_string();
    let mut sep = if realm.contains('?') { '&' } else { '?' };
    if let Some(service) = service {
        url.push(sep);
        url.push_str("service=");
        url.push_str(&percent_encode(service));
        sep = '&';
    }
    for scope in scopes {
        url.push(sep);
        url.push_str("scope=");
        url.push_str(&percent_encode(scope));
        sep = '&';
    }
    url
}

/// Percent-encodes all but RFC 3986's unreserved characters.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Standard base64 with padding (for `Authorization: Basic`).
pub(crate) fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The auth files to read for credentials, in order (see the module docs), given how to
/// read an environment variable and the user's uid. `explicit` is `--authfile`.
pub fn auth_file_candidates(
    explicit: Option<&Path>,
    env: &dyn Fn(&str) -> Option<OsString>,
    uid: u32,
) -> Vec<PathBuf> {
    let set = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(path) = explicit.map(Path::to_path_buf).or_else(|| set("REGISTRY_AUTH_FILE")) {
        return vec![path];
    }
    let home = set("HOME");
    let mut paths = Vec::new();
    paths.push(match set("XDG_RUNTIME_DIR") {
        Some(dir) => dir.join("containers/auth.json"),
        None => PathBuf::from(format!("/run/containers/{uid}/auth.json")),
    });
    if let Some(dir) = set("XDG_CONFIG_HOME").or_else(|| home.as_ref().map(|h| h.join(".config"))) {
        paths.push(dir.join("containers/auth.json"));
    }
    if let Some(dir) = set("DOCKER_CONFIG").or_else(|| home.as_ref().map(|h| h.join(".docker"))) {
        paths.push(dir.join("config.json"));
    }
    paths
}

/// The key an auth file uses for a registry: `HOST[:PORT]`, with docker's own spelling for
/// Docker Hub (`docker_credential` matches `index.docker.io` against it).
fn auth_key(registry: &str) -> &str {
    if registry == "docker.io" { "index.docker.io" } else { registry }
}

/// Looks up credentials for `registry` (`HOST[:PORT]`) in `files`, in order: the first file
/// with an entry for the registry wins. Files that do not exist are skipped.
///
/// # Errors
/// A file that exists but cannot be read or parsed, a credential helper that fails, or an
/// identity token (unsupported); each names the file.
pub fn lookup_credentials(registry: &str, files: &[PathBuf]) -> Result<Option<Credentials>, String> {
    use docker_credential::{CredentialRetrievalError as E, DockerCredential};
    for path in files {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("cannot read auth file `{}`: {e}", path.display())),
        };
        match docker_credential::get_credential_from_reader(BufReader::new(file), auth_key(registry)) {
            Ok(DockerCredential::UsernamePassword(username, password)) => {
                return Ok(Some(Credentials { username, password }))
            }
            Ok(DockerCredential::IdentityToken(_)) => {
                return Err(format!(
                    "auth file `{}` holds an identity token for {registry}, which nix-layers does not support; \
                     log in with a user name and password, or pass USER:PASS",
                    path.display()
                ))
            }
            Err(E::NoCredentialConfigured) => continue,
            Err(e @ E::HelperFailure { .. }) if e.to_string().contains("credentials not found") => continue,
            Err(e) => return Err(format!("auth file `{}`, entry for {registry}: {e}", path.display())),
        }
    }
    Ok(None)
}

/// `lookup_credentials` over the files of the current environment and user.
///
/// # Errors
/// As [`lookup_credentials`].
pub fn lookup_credentials_env(registry: &str, explicit_authfile: Option<&Path>) -> Result<Option<Credentials>, String> {
    use std::os::unix::fs::MetadataExt;
    // The uid without libc: /proc/self belongs to the process's (effective) user.
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0);
    let files = auth_file_candidates(explicit_authfile, &|name| std::env::var_os(name), uid);
    lookup_credentials(registry, &files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_basic_bearer_quoted_and_several() {
        assert_eq!(parse_challenges(r#"Basic realm="r""#), vec![Challenge::Basic { realm: "r".into() }]);
        let h = r#"Bearer realm="http://127.0.0.1:5003/token",service="S",scope="repository:t/x:pull,push""#;
        assert_eq!(
            parse_challenges(h),
            vec![Challenge::Bearer {
                realm: "http://127.0.0.1:5003/token".into(),
                service: Some("S".into()),
                scope: Some("repository:t/x:pull,push".into()),
                error: None,
            }]
        );
        // Several challenges in one header, unquoted and escaped values, odd spacing and case.
        let h = r#"Negotiate, bearer realm=https://a/t , service = "a \"b\", c",error="insufficient_scope", Basic realm="x, y""#;
        assert_eq!(
            parse_challenges(h),
            vec![
                Challenge::Bearer {
                    realm: "https://a/t".into(),
                    service: Some(r#"a "b", c"#.into()),
                    scope: None,
                    error: Some("insufficient_scope".into()),
                },
                Challenge::Basic { realm: "x, y".into() },
            ]
        );
        assert_eq!(Scheme::from_challenges(&parse_challenges(h)), Some(Scheme::Bearer { realm: "https://a/t".into(), service: Some(r#"a "b", c"#.into()) }));
        assert_eq!(Scheme::from_challenges(&parse_challenges("Negotiate")), None);
        assert!(parse_challenges("").is_empty());
    }

    #[test]
    fn token_responses_and_urls() {
        let now = Instant::now();
        let t = parse_token_response(br#"{"token":"A","access_token":"B","expires_in":300}"#, now).unwrap();
        assert_eq!(t.value, "A");
        assert_eq!(t.expires, now + Duration::from_secs(290));
        let t = parse_token_response(br#"{"access_token":"B"}"#, now).unwrap();
        assert_eq!((t.value.as_str(), t.expires), ("B", now + Duration::from_secs(50)));
        assert!(parse_token_response(br#"{"expires_in":3}"#, now).unwrap_err().contains("neither"));
        assert!(parse_token_response(b"<html>", now).unwrap_err().contains("not the expected JSON"));
        assert_eq!(
            token_url("http://h/token", Some("S 1"), &["repository:t/x:pull,push".into(), "repository:a:pull".into()]),
            "http://h/token?service=S%201&scope=repository%3At%2Fx%3Apull%2Cpush&scope=repository%3Aa%3Apull"
        );
        assert_eq!(token_url("http://h/t?a=1", None, &["s".into()]), "http://h/t?a=1&scope=s");
    }

    #[test]
    fn credentials_and_base64() {
        let c = Credentials::parse("user:p:w").unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("user", "p:w"));
        assert!(Credentials::parse("user").is_err());
        assert!(Credentials::parse(":pw").is_err());
        assert_eq!(format!("{c:?}"), "Credentials(user:***)");
        assert_eq!(Credentials::parse("user:pw").unwrap().basic_header(), "Basic dXNlcjpwdw==");
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }

    #[test]
    fn auth_file_order_follows_containers() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| OsString::from(v))
        };
        let p = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
        let home = env(&[("HOME", "/h")]);
        assert_eq!(
            auth_file_candidates(None, &home, 1000),
            p(&["/run/containers/1000/auth.json", "/h/.config/containers/auth.json", "/h/.docker/config.json"])
        );
        let all = env(&[("HOME", "/h"), ("XDG_RUNTIME_DIR", "/run/user/1"), ("XDG_CONFIG_HOME", "/c"), ("DOCKER_CONFIG", "/d")]);
        assert_eq!(
            auth_file_candidates(None, &all, 1),
            p(&["/run/user/1/containers/auth.json", "/c/containers/auth.json", "/d/config.json"])
        );
        // An explicit file, or REGISTRY_AUTH_FILE, is the only one read.
        assert_eq!(auth_file_candidates(Some(Path::new("/a.json")), &all, 1), p(&["/a.json"]));
        let reg = env(&[("HOME", "/h"), ("REGISTRY_AUTH_FILE", "/r.json")]);
        assert_eq!(auth_file_candidates(None, &reg, 1), p(&["/r.json"]));
        assert_eq!(auth_file_candidates(Some(Path::new("/a.json")), &reg, 1), p(&["/a.json"]));
    }

    #[test]
    fn lookup_reads_the_first_file_with_an_entry() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.json");
        let b = dir.path().join("b.json");
        let bad = dir.path().join("bad.json");
        std::fs::write(&a, r#"{"auths":{"other:1":{"auth":"eDp5"}}}"#).unwrap();
        std::fs::write(&b, r#"{"auths":{"127.0.0.1:5001":{"auth":"dXNlcjpwdw=="}}}"#).unwrap();
        std::fs::write(&bad, "{").unwrap();
        let missing = dir.path().join("missing.json");
        let found = lookup_credentials("127.0.0.1:5001", &[missing.clone(), a.clone(), b.clone(), bad.clone()]).unwrap();
        assert_eq!(found, Some(Credentials { username: "user".into(), password: "pw".into() }));
        assert_eq!(lookup_credentials("127.0.0.1:5001", &[missing, a]).unwrap(), None);
        let e = lookup_credentials("127.0.0.1:5001", &[bad]).unwrap_err();
        assert!(e.contains("bad.json"), "{e}");
        let hub = dir.path().join("hub.json");
        std::fs::write(&hub, r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwdw=="}}}"#).unwrap();
        assert!(lookup_credentials("docker.io", &[hub]).unwrap().is_some());
    }
}
