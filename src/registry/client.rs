//! [`Client`]: the blob and manifest calls a push needs, blocking, shareable between threads.
//!
//! What distribution 2.8 (and the OCI distribution spec) expect, and what we do:
//! - `HEAD /v2/NAME/blobs/DIGEST`: `200` with `Content-Length`, or `404`;
//! - `POST /v2/NAME/blobs/uploads/?mount=DIGEST&from=OTHER`: `201` mounted, or `202` with an
//!   upload opened instead (we delete it: the caller uploads in its own way);
//! - uploads: `POST …/blobs/uploads/` (`202` + `Location`), one `PATCH` with the bytes as a
//!   chunked body (`202` + a new `Location`), `PUT LOCATION&digest=DIGEST` (`201`). Every answer's
//!   `Location` replaces the last (its `_state` changes; a stale one gives `404`), relative or
//!   absolute. The single-request `POST ?digest=` is not used: 2.8 drops its body;
//! - `PUT /v2/NAME/manifests/REF` with the manifest's media type.
//!
//! Failures that may pass (5xx, 429, refused or reset connections, timeouts) are retried with
//! exponential backoff, bounded in count and time ([`Retry`]). A request is only sent again
//! when its body can be: always for the bodiless and in-memory ones, and for uploads only
//! through [`Client::upload_blob_replayable`], which re-opens the reader and starts a new upload.

use super::auth::{self, Credentials, Scheme, Token};
use super::{Error, What};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use ureq::http::{Method, Request, Response};
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};
use ureq::{Agent, Body, SendBody};

/// How failed requests are retried: at most `attempts` tries in all, waiting `first_delay`,
/// then twice as long each time up to `max_delay`, never past `max_elapsed` since the first.
#[derive(Debug, Clone)]
pub struct Retry {
    /// Tries in all, the first included (1 = no retry).
    pub attempts: u32,
    /// The wait before the second try.
    pub first_delay: Duration,
    /// The longest wait between two tries.
    pub max_delay: Duration,
    /// No new try starts this long after the first.
    pub max_elapsed: Duration,
}

impl Default for Retry {
    /// 5 tries, 0.5 s, 1 s, 2 s, 4 s apart, within 2 minutes.
    fn default() -> Retry {
        Retry {
            attempts: 5,
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_elapsed: Duration::from_secs(120),
        }
    }
}

/// How to reach and authenticate to a registry, spelt as podman and skopeo spell it.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `--tls-verify`: require HTTPS with a verified certificate (default). When false, HTTPS
    /// is tried without verification, then plain HTTP.
    pub tls_verify: bool,
    /// `--cert-dir`: `*.crt` files are CA certificates trusted besides the system's; a
    /// `NAME.cert` + `NAME.key` pair is a client certificate. When unset,
    /// `/etc/containers/certs.d/HOST:PORT` and then `/etc/docker/certs.d/HOST:PORT` are used if
    /// they exist, as containers/image does.
    pub cert_dir: Option<PathBuf>,
    /// `--creds USER:PASS`: used as given, no file is read.
    pub creds: Option<Credentials>,
    /// `--authfile FILE`: the only auth file read (see [`super::auth`] for the lookup order).
    pub authfile: Option<PathBuf>,
    /// `--no-creds`: never send credentials, read no auth file.
    pub no_creds: bool,
    /// Retries of failed requests.
    pub retry: Retry,
    /// How long to wait for a TCP (and TLS) connection.
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            tls_verify: true,
            cert_dir: None,
            creds: None,
            authfile: None,
            no_creds: false,
            retry: Retry::default(),
            connect_timeout: Duration::from_secs(15),
        }
    }
}

/// A connection to one registry. `Send + Sync`: share it (e.g. in an `Arc` or by reference
/// from scoped threads) to run requests in parallel; tokens are shared too.
pub struct Client {
    /// `HOST[:PORT]` as the user wrote it: in messages and the auth-file key.
    registry: String,
    /// `https://HOST[:PORT]` or `http://HOST[:PORT]`, as the ping found.
    base: String,
    agent: Agent,
    options: ClientOptions,
    scheme: Mutex<Scheme>,
    /// Credentials, looked up the first time a challenge asks for them.
    creds: Mutex<Option<Option<Credentials>>>,
    /// Bearer tokens by scope set.
    tokens: Mutex<HashMap<String, Token>>,
    /// Held while a token is fetched, so that parallel requests wanting the same token
    /// ask the token server once.
    token_fetch: Mutex<()>,
}

/// A request body that can be sent again (the bodiless and in-memory ones).
#[derive(Clone, Copy)]
enum Payload<'a> {
    None,
    Bytes(&'a [u8]),
}

/// Counts down the tries and time a [`Retry`] allows.
struct Backoff<'a> {
    retry: &'a Retry,
    start: Instant,
    tries: u32,
}

impl<'a> Backoff<'a> {
    fn new(retry: &'a Retry) -> Backoff<'a> {
        Backoff { retry, start: Instant::now(), tries: 1 }
    }
    /// Sleeps before the next try and says true, or says false when the budget is spent.
    fn wait(&mut self) -> bool {
        if self.tries >= self.retry.attempts {
            return false;
        }
        let factor = 1u32.checked_shl(self.tries - 1).unwrap_or(u32::MAX);
        let delay = self.retry.first_delay.saturating_mul(factor).min(self.retry.max_delay);
        if self.start.elapsed() + delay > self.retry.max_elapsed {
            return false;
        }
        std::thread::sleep(delay);
        self.tries += 1;
        true
    }
}

impl Client {
    /// Connects to `registry` (`HOST[:PORT]`, e.g. [`super::Reference::api_host`]): reads the
    /// TLS options, then pings `GET /v2/` to learn the protocol and how to authenticate.
    ///
    /// # Errors
    /// Unreadable certificate files, an unreachable registry (after retries), an answer that is
    /// neither `200` nor a `401` challenge we understand.
    pub fn connect(registry: &str, options: &ClientOptions) -> Result<Client, Error> {
        let other = |what: &str, message: String| Error::Other { registry: registry.to_string(), what: what.into(), message };
        let tls = tls_config(registry, options).map_err(|m| other("TLS options", m))?;
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(format!("nix-layers/{}", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(options.connect_timeout))
            // A registry that accepts a connection and then says nothing must not hang a
            // push: the answer to a request (even after a multi-GB PATCH, which the
            // registry hashes as it arrives) comes within minutes, and a stall is retried.
            .timeout_recv_response(Some(std::time::Duration::from_secs(300)))
            .timeout_recv_body(Some(std::time::Duration::from_secs(300)))
            .tls_config(tls)
            .build()
            .into();
        let mut client = Client {
            registry: registry.to_string(),
            base: format!("https://{registry}"),
            agent,
            options: options.clone(),
            scheme: Mutex::new(Scheme::None),
            creds: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
            token_fetch: Mutex::new(()),
        };
        let scheme = client.ping()?;
        *client.scheme.get_mut().unwrap_or_else(|p| p.into_inner()) = scheme;
        Ok(client)
    }

    /// `HOST[:PORT]`, as given to [`Client::connect`].
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// `https://HOST[:PORT]` or `http://HOST[:PORT]`: the protocol the ping settled on.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET /v2/` over HTTPS, then (with `tls_verify` off) plain HTTP; sets `base`.
    fn ping(&mut self) -> Result<Scheme, Error> {
        let what = What("GET /v2/ (API version check)".into());
        let mut backoff = Backoff::new(&self.options.retry);
        loop {
            let mut result = self.send(Method::GET, &format!("https://{}/v2/", self.registry), &[], None, Payload::None);
            if let Err(e) = &result {
                if self.options.tls_verify {
                    if !super::transport_is_retryable(e) {
                        let message = format!(
                            "{e} (over HTTPS; for a plain-HTTP or self-signed registry, turn TLS verification \
                             off (--tls-verify=false) or give the CA in --cert-dir)"
                        );
                        return Err(Error::Other { registry: self.registry.clone(), what: what.0, message });
                    }
                } else {
                    let http = self.send(Method::GET, &format!("http://{}/v2/", self.registry), &[], None, Payload::None);
                    if http.is_ok() {
                        self.base = format!("http://{}", self.registry);
                        result = http;
                    }
                }
            }
            let error = match result {
                Ok(resp) if resp.status().as_u16() == 200 => return Ok(Scheme::None),
                Ok(resp) if resp.status().as_u16() == 401 => {
                    let challenges = www_authenticate(&resp);
                    return Scheme::from_challenges(&challenges).ok_or_else(|| Error::Other {
                        registry: self.registry.clone(),
                        what: what.0.clone(),
                        message: format!(
                            "401 without a Basic or Bearer challenge (WWW-Authenticate: {:?})",
                            resp.headers().get("www-authenticate")
                        ),
                    });
                }
                Ok(resp) => status_error(&self.registry, &what, resp),
                Err(source) => Error::Transport { registry: self.registry.clone(), what: what.0.clone(), source },
            };
            if !(error.is_retryable() && backoff.wait()) {
                return Err(error);
            }
        }
    }

    /// One HTTP exchange, no retry, no authentication logic.
    fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        authorization: Option<&str>,
        payload: Payload<'_>,
    ) -> Result<Response<Body>, ureq::Error> {
        let request = build_request(method, url, headers, authorization)?;
        match payload {
            Payload::None => self.agent.run(request.body(())?),
            Payload::Bytes(b) => self.agent.run(request.body(b)?),
        }
    }

    /// The `Authorization` header for a request needing `scopes`, fetching a token if needed.
    fn authorization(&self, what: &What, scopes: &[String]) -> Result<Option<String>, Error> {
        let scheme = self.scheme.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match scheme {
            Scheme::None => Ok(None),
            Scheme::Basic => Ok(self.credentials()?.map(|c| c.basic_header())),
            Scheme::Bearer { realm, service } => {
                let key = scopes.join(" ");
                let cached = || {
                    let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
                    tokens.get(&key).filter(|t| t.expires > Instant::now()).map(|t| format!("Bearer {}", t.value))
                };
                if let Some(header) = cached() {
                    return Ok(Some(header));
                }
                let _fetching = self.token_fetch.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(header) = cached() {
                    return Ok(Some(header)); // another thread fetched it meanwhile
                }
                let token = self.fetch_token(what, &realm, service.as_deref(), scopes)?;
                let header = format!("Bearer {}", token.value);
                self.tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(key, token);
                Ok(Some(header))
            }
        }
    }

    /// `GET realm?service=…&scope=…`, with Basic credentials when we have some.
    fn fetch_token(&self, what: &What, realm: &str, service: Option<&str>, scopes: &[String]) -> Result<Token, Error> {
        let creds = self.credentials()?;
        let basic = creds.as_ref().map(Credentials::basic_header);
        let url = auth::token_url(realm, service, scopes);
        let token_what = What(format!("{what}: token from {realm}"));
        let mut backoff = Backoff::new(&self.options.retry);
        loop {
            let error = match self.send(Method::GET, &url, &[], basic.as_deref(), Payload::None) {
                Ok(mut resp) if resp.status().as_u16() == 200 => {
                    let body = resp.body_mut().read_to_vec().map_err(|source| Error::Transport {
                        registry: self.registry.clone(),
                        what: token_what.0.clone(),
                        source,
                    })?;
                    return auth::parse_token_response(&body, Instant::now()).map_err(|message| Error::Other {
                        registry: self.registry.clone(),
                        what: token_what.0.clone(),
                        message,
                    });
                }
                Ok(resp) => status_error(&self.registry, &token_what, resp),
                Err(source) => Error::Transport { registry: self.registry.clone(), what: token_what.0.clone(), source },
            };
            if !(error.is_retryable() && backoff.wait()) {
                return Err(error);
            }
        }
    }

    /// The credentials to use, looked up once (see [`super::auth`] for the order).
    fn credentials(&self) -> Result<Option<Credentials>, Error> {
        let mut slot = self.creds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let found = if self.options.no_creds {
            None
        } else if let Some(c) = &self.options.creds {
            Some(c.clone())
        } else {
            auth::lookup_credentials_env(&self.registry, self.options.authfile.as_deref()).map_err(|message| {
                Error::Other { registry: self.registry.clone(), what: "credentials".into(), message }
            })?
        };
        *slot = Some(found.clone());
        Ok(found)
    }

    /// After a `401`: adopt the challenge it carries and forget the tokens for `scopes`.
    fn reauthenticate(&self, resp: &Response<Body>, scopes: &[String]) {
        if let Some(scheme) = Scheme::from_challenges(&www_authenticate(resp)) {
            *self.scheme.lock().unwrap_or_else(|p| p.into_inner()) = scheme;
        }
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).remove(&scopes.join(" "));
    }

    /// A request with a replayable body: authenticated (once more after a `401`), retried
    /// with backoff on failures that may pass. Returns whatever status came last.
    // The arguments are the request's parts; a struct for them would only rename them.
    #[allow(clippy::too_many_arguments)]
    fn request(
        &self,
        what: &What,
        scopes: &[String],
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        payload: Payload<'_>,
        backoff: &mut Backoff<'_>,
    ) -> Result<Response<Body>, Error> {
        let mut reauthenticated = false;
        loop {
            let authorization = self.authorization(what, scopes)?;
            let error = match self.send(method.clone(), url, headers, authorization.as_deref(), payload) {
                Ok(resp) if resp.status().as_u16() == 401 && !reauthenticated => {
                    reauthenticated = true;
                    self.reauthenticate(&resp, scopes);
                    continue;
                }
                Ok(resp) if resp.status().is_server_error() || resp.status().as_u16() == 429 => {
                    status_error(&self.registry, what, resp)
                }
                Ok(resp) => return Ok(resp),
                Err(source) => Error::Transport { registry: self.registry.clone(), what: what.0.clone(), source },
            };
            if !(error.is_retryable() && backoff.wait()) {
                return Err(error);
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{path}", self.base)
    }

    /// `HEAD` a blob: its size if `repo` has it, `None` if not.
    ///
    /// # Errors
    /// Any answer but `200`/`404` (after retries), or no answer.
    pub fn blob_exists(&self, repo: &str, digest: &str) -> Result<Option<u64>, Error> {
        let what = What::blob(repo, digest);
        let mut backoff = Backoff::new(&self.options.retry);
        let url = self.url(&format!("{repo}/blobs/{digest}"));
        let resp = self.request(&what, &pull(repo), Method::HEAD, &url, &[], Payload::None, &mut backoff)?;
        match resp.status().as_u16() {
            200 => {
                let size = header(&resp, "content-length").and_then(|v| v.parse::<u64>().ok());
                size.map(Some).ok_or_else(|| Error::Other {
                    registry: self.registry.clone(),
                    what: what.0,
                    message: "200 to HEAD without a Content-Length".into(),
                })
            }
            404 => Ok(None),
            _ => Err(status_error(&self.registry, &what, resp)),
        }
    }

    /// [`Client::blob_exists`] for many blobs, at most `parallel` requests at a time.
    /// The answers are in the order of `digests`.
    ///
    /// # Errors
    /// The first error any request met.
    pub fn blobs_exist(&self, repo: &str, digests: &[String], parallel: usize) -> Result<Vec<Option<u64>>, Error> {
        let next = AtomicUsize::new(0);
        // One slot per digest, filled by whichever thread asks.
        type Slot = Option<Result<Option<u64>, Error>>;
        let results: Mutex<Vec<Slot>> = Mutex::new(digests.iter().map(|_| None).collect());
        std::thread::scope(|s| {
            for _ in 0..parallel.clamp(1, digests.len().max(1)) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(digest) = digests.get(i) else { break };
                    let r = self.blob_exists(repo, digest);
                    let failed = r.is_err();
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
                    if failed {
                        // Stop handing out work; the others finish what they hold.
                        next.store(digests.len(), Ordering::Relaxed);
                    }
                });
            }
        });
        let mut out = Vec::with_capacity(digests.len());
        for r in results.into_inner().unwrap_or_else(|p| p.into_inner()) {
            match r {
                Some(r) => out.push(r?),
                // Not asked because an earlier one failed; that error comes first.
                None => continue,
            }
        }
        Ok(out)
    }

    /// Mounts `digest` from repository `from` into `repo` (same registry): true if the
    /// registry did (`201`), false if it opened an upload instead (`202`: `from` lacks the
    /// blob or we may not read it); that upload is deleted.
    ///
    /// # Errors
    /// Any other answer (after retries), or no answer.
    pub fn mount_blob(&self, repo: &str, digest: &str, from: &str) -> Result<bool, Error> {
        let what = What(format!("{}, mounted from repository {from}", What::blob(repo, digest)));
        let scopes = [push(repo), pull(from)].concat();
        let url = self.url(&format!(
            "{repo}/blobs/uploads/?mount={}&from={}",
            auth::percent_encode(digest),
            auth::percent_encode(from)
        ));
        let mut backoff = Backoff::new(&self.options.retry);
        let resp = self.request(&what, &scopes, Method::POST, &url, &[], Payload::Bytes(&[]), &mut backoff)?;
        match resp.status().as_u16() {
            201 => Ok(true),
            202 => {
                // Best effort: an abandoned upload is garbage-collected by the registry anyway.
                if let Some(location) = header(&resp, "location") {
                    let url = resolve(&url, &location);
                    let _ = self.request(&what, &scopes, Method::DELETE, &url, &[], Payload::None, &mut Backoff::new(&NO_RETRY));
                }
                Ok(false)
            }
            _ => Err(status_error(&self.registry, &what, resp)),
        }
    }

    /// Uploads a blob read once from `reader`: `POST`, one chunked `PATCH`, `PUT ?digest=`.
    /// A failure while the bytes stream is final (the reader cannot be read again); use
    /// [`Client::upload_blob_replayable`] to retry those too.
    ///
    /// # Errors
    /// The reader fails or gives other than `size` bytes, the registry refuses (e.g. `400
    /// DIGEST_INVALID` when the bytes do not match `digest`), or does not answer.
    pub fn upload_blob(&self, repo: &str, digest: &str, size: u64, reader: impl Read) -> Result<(), Error> {
        let mut reader = Some(reader);
        let mut open = || reader.take().ok_or_else(|| io::Error::other("the blob's reader cannot be read twice"));
        self.upload(repo, digest, size, &mut open, false)
    }

    /// Uploads a blob, calling `open` for its bytes at each try: a failed upload (5xx, reset,
    /// timeout, also while the bytes stream) is started again from the `POST`, within the
    /// [`Retry`] budget. Before a new try, a `HEAD` checks whether the last one landed.
    ///
    /// # Errors
    /// As [`Client::upload_blob`], once the retries are spent; `open` failing.
    pub fn upload_blob_replayable<R: Read>(
        &self,
        repo: &str,
        digest: &str,
        size: u64,
        mut open: impl FnMut() -> io::Result<R>,
    ) -> Result<(), Error> {
        self.upload(repo, digest, size, &mut open, true)
    }

    fn upload<R: Read>(
        &self,
        repo: &str,
        digest: &str,
        size: u64,
        open: &mut dyn FnMut() -> io::Result<R>,
        replayable: bool,
    ) -> Result<(), Error> {
        let what = What::blob(repo, digest);
        let mut backoff = Backoff::new(&self.options.retry);
        let mut reauthenticated = false;
        loop {
            let error = match self.upload_once(&what, repo, digest, size, open, &mut backoff) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if !replayable {
                return Err(error);
            }
            let again = if error.status() == Some(401) && !reauthenticated {
                // The token expired while the bytes streamed: a new one, a new upload.
                reauthenticated = true;
                self.tokens.lock().unwrap_or_else(|p| p.into_inner()).clear();
                true
            } else {
                error.is_retryable() && backoff.wait()
            };
            if !again {
                return Err(error);
            }
            // The last try may have landed with its answer lost.
            if let Ok(Some(_)) = self.blob_exists(repo, digest) {
                return Ok(());
            }
        }
    }

    fn upload_once<R: Read>(
        &self,
        what: &What,
        repo: &str,
        digest: &str,
        size: u64,
        open: &mut dyn FnMut() -> io::Result<R>,
        backoff: &mut Backoff<'_>,
    ) -> Result<(), Error> {
        let scopes = push(repo);
        let other = |message: String| Error::Other { registry: self.registry.clone(), what: what.0.clone(), message };
        let start_url = self.url(&format!("{repo}/blobs/uploads/"));
        let resp = self.request(what, &scopes, Method::POST, &start_url, &[], Payload::Bytes(&[]), backoff)?;
        let mut location = expect_location(&self.registry, what, resp, 202, &start_url)?;

        // The bytes, streamed as one chunked PATCH. The reader's own errors are told apart
        // from the connection's: they are not the registry's fault and not worth a retry.
        let reader = open().map_err(|e| other(format!("cannot open the blob's bytes: {e}")))?;
        let mut counted = CountingReader { inner: reader, count: 0, error: None };
        let authorization = self.authorization(what, &scopes)?;
        let sent = build_request(Method::PATCH, &location, &[("Content-Type", "application/octet-stream")], authorization.as_deref())
            .and_then(|r| r.body(SendBody::from_reader(&mut counted)).map_err(ureq::Error::from))
            .and_then(|r| self.agent.run(r));
        if let Some(e) = counted.error.take() {
            self.cancel(what, &scopes, &location);
            return Err(other(format!("reading the blob's bytes failed after {} bytes: {e}", counted.count)));
        }
        let resp = match sent {
            Ok(resp) => resp,
            Err(source) => return Err(Error::Transport { registry: self.registry.clone(), what: what.0.clone(), source }),
        };
        if resp.status().as_u16() == 401 {
            self.reauthenticate(&resp, &scopes);
        }
        location = expect_location(&self.registry, what, resp, 202, &location)?;
        if counted.count != size {
            self.cancel(what, &scopes, &location);
            return Err(other(format!("the reader gave {} bytes, but the blob's size is {size}", counted.count)));
        }

        let sep = if location.contains('?') { '&' } else { '?' };
        let put_url = format!("{location}{sep}digest={}", auth::percent_encode(digest));
        let headers = [("Content-Type", "application/octet-stream")];
        let resp = self.request(what, &scopes, Method::PUT, &put_url, &headers, Payload::Bytes(&[]), backoff)?;
        match resp.status().as_u16() {
            201 | 204 => Ok(()),
            _ => Err(status_error(&self.registry, what, resp)),
        }
    }

    /// Deletes an open upload, ignoring failures (the registry expires abandoned ones).
    fn cancel(&self, what: &What, scopes: &[String], location: &str) {
        let _ = self.request(what, scopes, Method::DELETE, location, &[], Payload::None, &mut Backoff::new(&NO_RETRY));
    }

    /// `PUT` a manifest under `reference` (a tag or its digest); returns its digest
    /// (`sha256:` of `bytes`), checked against the registry's `Docker-Content-Digest`.
    ///
    /// # Errors
    /// The registry refuses it (e.g. `400 MANIFEST_BLOB_UNKNOWN` when a blob is missing),
    /// or does not answer.
    pub fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) -> Result<String, Error> {
        let what = What::manifest(repo, reference);
        let digest = format!("sha256:{:x}", Sha256::digest(bytes));
        let url = self.url(&format!("{repo}/manifests/{reference}"));
        let mut backoff = Backoff::new(&self.options.retry);
        let headers = [("Content-Type", media_type)];
        let resp = self.request(&what, &push(repo), Method::PUT, &url, &headers, Payload::Bytes(bytes), &mut backoff)?;
        match resp.status().as_u16() {
            200 | 201 | 204 => match header(&resp, "docker-content-digest") {
                Some(theirs) if theirs != digest => Err(Error::Other {
                    registry: self.registry.clone(),
                    what: what.0,
                    message: format!("the registry stored it as {theirs}, but its bytes are {digest}"),
                }),
                _ => Ok(digest),
            },
            _ => Err(status_error(&self.registry, &what, resp)),
        }
    }

    /// `GET` a manifest (a tag or digest), accepting `media_types`: its media type and bytes.
    ///
    /// # Errors
    /// Not found, refused, or no answer.
    pub fn get_manifest(&self, repo: &str, reference: &str, media_types: &[&str]) -> Result<(String, Vec<u8>), Error> {
        let what = What::manifest(repo, reference);
        let url = self.url(&format!("{repo}/manifests/{reference}"));
        let accept = media_types.join(", ");
        let mut backoff = Backoff::new(&self.options.retry);
        let mut resp = self.request(&what, &pull(repo), Method::GET, &url, &[("Accept", &accept)], Payload::None, &mut backoff)?;
        if resp.status().as_u16() != 200 {
            return Err(status_error(&self.registry, &what, resp));
        }
        let media_type = header(&resp, "content-type").unwrap_or_default();
        let body = resp
            .body_mut()
            .read_to_vec()
            .map_err(|source| Error::Transport { registry: self.registry.clone(), what: what.0.clone(), source })?;
        Ok((media_type, body))
    }
}

/// No retry (for best-effort clean-ups).
const NO_RETRY: Retry =
    Retry { attempts: 1, first_delay: Duration::ZERO, max_delay: Duration::ZERO, max_elapsed: Duration::ZERO };

fn pull(repo: &str) -> Vec<String> {
    vec![format!("repository:{repo}:pull")]
}

fn push(repo: &str) -> Vec<String> {
    vec![format!("repository:{repo}:pull,push")]
}

fn build_request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    authorization: Option<&str>,
) -> Result<ureq::http::request::Builder, ureq::Error> {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    if let Some(a) = authorization {
        builder = builder.header("Authorization", a);
    }
    Ok(builder)
}

fn header(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn www_authenticate(resp: &Response<Body>) -> Vec<auth::Challenge> {
    resp.headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(auth::parse_challenges)
        .collect()
}

/// The `Location` of a `status` answer, resolved against the request's URL.
fn expect_location(registry: &str, what: &What, resp: Response<Body>, status: u16, request_url: &str) -> Result<String, Error> {
    if resp.status().as_u16() != status {
        return Err(status_error(registry, what, resp));
    }
    header(&resp, "location").map(|l| resolve(request_url, &l)).ok_or_else(|| Error::Other {
        registry: registry.to_string(),
        what: what.0.clone(),
        message: format!("{status} without a Location header"),
    })
}

/// Resolves a `Location`: absolute URLs as they are, `/path` against the request's origin,
/// anything else against the request's directory.
pub(crate) fn resolve(request_url: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_string();
    }
    let after_scheme = request_url.find("://").map_or(0, |i| i + 3);
    let origin_end = request_url[after_scheme..].find('/').map_or(request_url.len(), |i| after_scheme + i);
    if location.starts_with('/') {
        return format!("{}{location}", &request_url[..origin_end]);
    }
    let path = request_url.split(['?', '#']).next().unwrap_or(request_url);
    let dir_end = path.rfind('/').filter(|&i| i >= origin_end).map_or(path.len(), |i| i + 1);
    let mut base = path[..dir_end].to_string();
    if !base.ends_with('/') {
        base.push('/');
    }
    format!("{base}{location}")
}

/// An error from an answer: its status and the registry's JSON `errors` (code, message).
fn status_error(registry: &str, what: &What, mut resp: Response<Body>) -> Error {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        code: String,
        #[serde(default)]
        message: String,
        /// Often the digest at fault (`MANIFEST_BLOB_UNKNOWN`), sometimes an object.
        #[serde(default)]
        detail: serde_json::Value,
    }
    let status = resp.status().as_u16();
    let body = resp.body_mut().with_config().limit(64 * 1024).read_to_vec().unwrap_or_default();
    let errors = serde_json::from_slice::<Errors>(&body)
        .map(|e| {
            e.errors
                .into_iter()
                .map(|e| match e.detail {
                    serde_json::Value::String(d) if !d.is_empty() => (e.code, format!("{} ({d})", e.message)),
                    _ => (e.code, e.message),
                })
                .collect()
        })
        .unwrap_or_default();
    Error::Status { registry: registry.to_string(), what: what.0.clone(), status, errors }
}

/// Counts the bytes read and keeps the reader's own error.
struct CountingReader<R> {
    inner: R,
    count: u64,
    error: Option<io::Error>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.count += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.error = Some(e);
                Err(copy)
            }
        }
    }
}

/// The TLS settings: verification on or off, and the cert dir's CAs and client pair.
fn tls_config(registry: &str, options: &ClientOptions) -> Result<TlsConfig, String> {
    let mut builder = TlsConfig::builder().disable_verification(!options.tls_verify);
    let dir = match &options.cert_dir {
        Some(d) => Some(d.clone()),
        None => ["/etc/containers/certs.d", "/etc/docker/certs.d"]
            .iter()
            .map(|d| Path::new(d).join(registry))
            .find(|d| d.is_dir()),
    };
    let Some(dir) = dir else { return Ok(builder.build()) };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot read the cert dir `{}`: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    let ext = |p: &Path, x: &str| p.extension().is_some_and(|e| e == x);
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read `{}`: {e}", p.display()));
    let mut cas: Vec<Certificate<'static>> = Vec::new();
    let mut client: Option<ClientCert> = None;
    for path in &entries {
        if ext(path, "crt") {
            let certs = pem_certificates(&read(path)?).map_err(|e| format!("`{}`: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("`{}` holds no PEM certificate", path.display()));
            }
            cas.extend(certs);
        } else if ext(path, "cert") {
            let key_path = path.with_extension("key");
            if !key_path.exists() {
                return Err(format!("client certificate `{}` has no key `{}`", path.display(), key_path.display()));
            }
            let chain = pem_certificates(&read(path)?).map_err(|e| format!("`{}`: {e}", path.display()))?;
            let key = PrivateKey::from_pem(&read(&key_path)?).map_err(|e| format!("`{}`: {e}", key_path.display()))?;
            client = Some(ClientCert::new_with_certs(&chain, key));
        } else if ext(path, "key") && !path.with_extension("cert").exists() {
            return Err(format!("client key `{}` has no certificate `{}`", path.display(), path.with_extension("cert").display()));
        }
    }
    if !cas.is_empty() {
        // Trusted besides the system's roots, as containers/image does.
        let system = std::env::var_os("SSL_CERT_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
        if let Ok(pem) = std::fs::read(&system) {
            cas.extend(pem_certificates(&pem).unwrap_or_default());
        }
        builder = builder.root_certs(RootCerts::new_with_certs(&cas));
    }
    if client.is_some() {
        builder = builder.client_cert(client);
    }
    Ok(builder.build())
}

fn pem_certificates(pem: &[u8]) -> Result<Vec<Certificate<'static>>, ureq::Error> {
    let mut out = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        if let PemItem::Certificate(c) = item? {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_relative_and_absolute() {
        let req = "http://h:5000/v2/t/x/blobs/uploads/";
        assert_eq!(resolve(req, "http://o:1/v2/a?b=c"), "http://o:1/v2/a?b=c");
        assert_eq!(resolve(req, "/v2/t/x/blobs/uploads/u?_state=s"), "http://h:5000/v2/t/x/blobs/uploads/u?_state=s");
        assert_eq!(resolve(req, "u?_state=s"), "http://h:5000/v2/t/x/blobs/uploads/u?_state=s");
        assert_eq!(resolve("http://h:5000/v2/t/x/blobs/uploads/u1?_state=a", "u2?_state=b"), "http://h:5000/v2/t/x/blobs/uploads/u2?_state=b");
        assert_eq!(resolve("https://h", "/v2/x"), "https://h/v2/x");
    }

    #[test]
    fn backoff_is_bounded_in_tries_and_time() {
        let retry = Retry { attempts: 3, first_delay: Duration::from_millis(1), max_delay: Duration::from_millis(2), max_elapsed: Duration::from_secs(5) };
        let mut b = Backoff::new(&retry);
        assert!(b.wait());
        assert!(b.wait());
        assert!(!b.wait());
        let retry = Retry { attempts: 10, first_delay: Duration::from_secs(10), max_delay: Duration::from_secs(10), max_elapsed: Duration::from_secs(1) };
        assert!(!Backoff::new(&retry).wait());
    }

    #[test]
    fn client_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Client>();
    }

    #[test]
    fn status_errors_name_everything() {
        let e = Error::Status {
            registry: "127.0.0.1:5000".into(),
            what: What::blob("t/x", "sha256:ab").0,
            status: 400,
            errors: vec![("DIGEST_INVALID".into(), "provided digest did not match uploaded content".into())],
        };
        assert_eq!(
            e.to_string(),
            "registry 127.0.0.1:5000: repository t/x, blob sha256:ab: 400 Bad Request: DIGEST_INVALID: provided digest did not match uploaded content"
        );
        assert!(!e.is_retryable());
    }
}
