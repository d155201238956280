//! The registry client against a real registry (Debian's `docker-registry`, distribution
//! 2.8) started here on 127.0.0.1: plain HTTP, htpasswd basic auth, bearer tokens, TLS.
//! Pushed images are checked by `skopeo copy … oci:`, which verifies every digest.
//! Needs `docker-registry`, `apache2-utils` (htpasswd), `openssl` and `skopeo`;
//! tests/run.sh installs them when missing.

#[allow(dead_code)]
#[path = "../cli/fixture.rs"]
mod fixture;
mod harness;
mod push;

use flate2::write::GzEncoder;
use harness::{Mode, Registry, TokenServer};
use nix_layers::registry::auth::Credentials;
use nix_layers::registry::{Client, ClientOptions, Retry};
use sha2::{Digest, Sha256};
use std::io::{Cursor, Read, Write};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

struct Blob {
    digest: String,
    bytes: Vec<u8>,
}

impl Blob {
    fn new(bytes: Vec<u8>) -> Blob {
        Blob { digest: sha256(&bytes), bytes }
    }
}

/// A one-layer OCI image: a gzip'd tar holding `hello.txt` = `text`, its config, its manifest.
struct Image {
    layer: Blob,
    config: Blob,
    manifest: Vec<u8>,
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(b))
}

fn tiny_image(text: &str) -> Image {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(1);
    header.set_cksum();
    tar.append_data(&mut header, "hello.txt", text.as_bytes()).unwrap();
    let tar = tar.into_inner().unwrap();
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let layer = Blob::new(gz.finish().unwrap());
    let config = Blob::new(
        serde_json::json!({
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [sha256(&tar)]},
        })
        .to_string()
        .into_bytes(),
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.digest, "size": config.bytes.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer.digest, "size": layer.bytes.len()}],
    })
    .to_string()
    .into_bytes();
    Image { layer, config, manifest }
}

/// Pushes as `push` will: HEAD each blob, upload the missing ones, the manifest last.
/// Returns how many blobs were uploaded.
fn push(client: &Client, repo: &str, tag: &str, image: &Image) -> Result<usize, nix_layers::registry::Error> {
    let mut uploaded = 0;
    for blob in [&image.layer, &image.config] {
        match client.blob_exists(repo, &blob.digest)? {
            Some(size) => assert_eq!(size, blob.bytes.len() as u64, "HEAD size of {}", blob.digest),
            None => {
                client.upload_blob(repo, &blob.digest, blob.bytes.len() as u64, Cursor::new(&blob.bytes))?;
                uploaded += 1;
            }
        }
    }
    let digest = client.put_manifest(repo, tag, OCI_MANIFEST, &image.manifest)?;
    assert_eq!(digest, sha256(&image.manifest));
    Ok(uploaded)
}

/// `skopeo copy docker://HOST/REPO:TAG oci:DIR` (checks every digest); asserts the layer arrived.
fn skopeo_verify(registry: &Registry, repo: &str, tag: &str, image: &Image, src_args: &[&str]) {
    harness::require("skopeo", "skopeo");
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("oci");
    let mut cmd = Command::new("skopeo");
    cmd.args(["--insecure-policy", "copy", "--quiet"]).args(src_args);
    cmd.arg(format!("docker://{}/{repo}:{tag}", registry.host()));
    cmd.arg(format!("oci:{}:{tag}", dest.display()));
    // No auth file of this machine's user may change what skopeo sends.
    cmd.env("REGISTRY_AUTH_FILE", out.path().join("no-auth.json"));
    harness::run(&mut cmd);
    let blob = dest.join("blobs/sha256").join(image.layer.digest.trim_start_matches("sha256:"));
    assert_eq!(std::fs::read(&blob).unwrap_or_default(), image.layer.bytes, "skopeo's copy of the layer");
}

fn quick_retry() -> Retry {
    Retry {
        attempts: 8,
        first_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(800),
        max_elapsed: Duration::from_secs(15),
    }
}

fn insecure() -> ClientOptions {
    ClientOptions { tls_verify: false, no_creds: true, retry: quick_retry(), ..ClientOptions::default() }
}

#[test]
fn plain_http_push_skip_mount_and_errors() {
    let registry = Registry::start(Mode::Plain);
    let client = Client::connect(&registry.host(), &insecure()).unwrap();
    assert_eq!(client.base_url(), format!("http://{}", registry.host()));
    let image = tiny_image("plain");

    assert_eq!(push(&client, "t/x", "v1", &image).unwrap(), 2);
    skopeo_verify(&registry, "t/x", "v1", &image, &["--src-tls-verify=false"]);
    // POST, PATCH, PUT for each of the two blobs.
    assert_eq!(registry.upload_requests(), 6, "{}", registry.log_text());

    // A second push of the same blobs uploads nothing: zero upload requests in the log.
    assert_eq!(push(&client, "t/x", "v2", &image).unwrap(), 0);
    assert_eq!(registry.upload_requests(), 6);

    // HEAD in parallel, in order, with a missing blob among them.
    let missing = sha256(b"not there");
    let digests = vec![image.layer.digest.clone(), missing.clone(), image.config.digest.clone()];
    let sizes = client.blobs_exist("t/x", &digests, 2).unwrap();
    assert_eq!(sizes, vec![Some(image.layer.bytes.len() as u64), None, Some(image.config.bytes.len() as u64)]);

    // Mount into another repository: 201, and the blob is there; a missing blob: 202, false.
    assert_eq!(client.blob_exists("t/y", &image.layer.digest).unwrap(), None);
    assert!(client.mount_blob("t/y", &image.layer.digest, "t/x").unwrap());
    assert_eq!(client.blob_exists("t/y", &image.layer.digest).unwrap(), Some(image.layer.bytes.len() as u64));
    assert!(!client.mount_blob("t/y", &missing, "t/x").unwrap());

    let (media_type, bytes) = client.get_manifest("t/x", "v1", &[OCI_MANIFEST]).unwrap();
    assert_eq!((media_type.as_str(), bytes), (OCI_MANIFEST, image.manifest.clone()));

    // Bytes that do not match the digest: the registry's 400 DIGEST_INVALID, named.
    let e = client.upload_blob("t/x", &missing, 3, Cursor::new(b"abc")).unwrap_err().to_string();
    for part in [registry.host().as_str(), "repository t/x", missing.as_str(), "400", "DIGEST_INVALID"] {
        assert!(e.contains(part), "`{part}` not in: {e}");
    }
    // A reader giving fewer bytes than announced.
    let e = client.upload_blob("t/x", &missing, 4, Cursor::new(b"abc")).unwrap_err().to_string();
    assert!(e.contains("gave 3 bytes, but the blob's size is 4"), "{e}");
    // A manifest naming a missing blob: 400 MANIFEST_BLOB_UNKNOWN, named.
    let other = tiny_image("never pushed");
    let e = client.put_manifest("t/x", "bad", OCI_MANIFEST, &other.manifest).unwrap_err().to_string();
    for part in [registry.host().as_str(), "repository t/x, manifest bad", "400", "MANIFEST_BLOB_UNKNOWN", &other.layer.digest] {
        assert!(e.contains(part), "`{part}` not in: {e}");
    }
    // 404 on a missing manifest.
    let e = client.get_manifest("t/x", "nope", &[OCI_MANIFEST]).unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");

    // Plain HTTP while TLS verification is on: refused, saying how to allow it.
    let opts = ClientOptions { retry: quick_retry(), ..ClientOptions::default() };
    let e = Client::connect(&registry.host(), &opts).err().expect("HTTPS to a plain registry").to_string();
    assert!(e.contains(&registry.host()) && e.contains("--tls-verify=false"), "{e}");
}

#[test]
fn basic_auth_explicit_creds_auth_file_and_wrong_password() {
    let registry = Registry::start(Mode::Basic { user: "user", password: "pw" });
    let image = tiny_image("basic");
    let creds = ClientOptions { creds: Some(Credentials::parse("user:pw").unwrap()), ..insecure() };
    let creds = ClientOptions { no_creds: false, ..creds };
    let client = Client::connect(&registry.host(), &creds).unwrap();
    assert_eq!(push(&client, "t/x", "v1", &image).unwrap(), 2);
    skopeo_verify(&registry, "t/x", "v1", &image, &["--src-tls-verify=false", "--src-creds", "user:pw"]);

    // The same credentials from an auth file as `skopeo login --authfile` writes it.
    let authfile = registry.dir.path().join("auth.json");
    let entry = harness::base64(b"user:pw", false);
    std::fs::write(&authfile, format!(r#"{{"auths":{{"{}":{{"auth":"{entry}"}}}}}}"#, registry.host())).unwrap();
    let from_file = ClientOptions { authfile: Some(authfile), no_creds: false, ..insecure() };
    let client = Client::connect(&registry.host(), &from_file).unwrap();
    assert_eq!(push(&client, "t/z", "v1", &tiny_image("basic 2")).unwrap(), 2);

    // A wrong password: 401, naming the registry, repository and blob.
    let wrong = ClientOptions { creds: Some(Credentials::parse("user:nope").unwrap()), no_creds: false, ..insecure() };
    let client = Client::connect(&registry.host(), &wrong).unwrap();
    let e = push(&client, "t/x", "v1", &image).unwrap_err();
    assert_eq!(e.status(), Some(401));
    let e = e.to_string();
    for part in [registry.host().as_str(), "repository t/x", image.layer.digest.as_str(), "401"] {
        assert!(e.contains(part), "`{part}` not in: {e}");
    }
    // No credentials at all: 401 too.
    let client = Client::connect(&registry.host(), &insecure()).unwrap();
    assert_eq!(client.blob_exists("t/x", &image.layer.digest).unwrap_err().status(), Some(401));
}

#[test]
fn bearer_token_scopes_mount_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = harness::self_signed(dir.path(), "token", true);
    let tokens = TokenServer::start(&cert, &key, "user", "pw");
    let registry = Registry::start(Mode::Token { realm: tokens.realm(), cert });
    let image = tiny_image("bearer");
    let opts = ClientOptions { creds: Some(Credentials::parse("user:pw").unwrap()), no_creds: false, ..insecure() };
    let client = Client::connect(&registry.host(), &opts).unwrap();
    assert_eq!(push(&client, "t/x", "v1", &image).unwrap(), 2);
    skopeo_verify(&registry, "t/x", "v1", &image, &["--src-tls-verify=false", "--src-creds", "user:pw"]);
    {
        let requests = tokens.requests.lock().unwrap();
        assert!(requests.contains(&vec!["repository:t/x:pull,push".to_string()]), "{requests:?}");
    }

    // A mount asks one token for both repositories: push on the target, pull on the source.
    assert!(client.mount_blob("t/y", &image.layer.digest, "t/x").unwrap());
    let requests = tokens.requests.lock().unwrap().clone();
    assert!(
        requests.contains(&vec!["repository:t/y:pull,push".to_string(), "repository:t/x:pull".to_string()]),
        "{requests:?}"
    );
    assert_eq!(client.blob_exists("t/y", &image.layer.digest).unwrap(), Some(image.layer.bytes.len() as u64));
    // Tokens are reused: a second push asks no new one.
    let before = tokens.requests.lock().unwrap().len();
    assert_eq!(push(&client, "t/x", "v2", &image).unwrap(), 0);
    assert_eq!(tokens.requests.lock().unwrap().len(), before);

    // Parallel HEADs of a new client share one token: one token request.
    let fresh = Client::connect(&registry.host(), &opts).unwrap();
    let before = tokens.requests.lock().unwrap().len();
    let digests = vec![image.layer.digest.clone(), image.config.digest.clone(), sha256(b"x"), sha256(b"y")];
    let sizes = fresh.blobs_exist("t/x", &digests, 4).unwrap();
    assert_eq!(sizes.iter().filter(|s| s.is_some()).count(), 2);
    assert_eq!(tokens.requests.lock().unwrap().len(), before + 1);

    // Anonymous: the token grants pull only, so the upload is refused (401), named.
    let anonymous = Client::connect(&registry.host(), &insecure()).unwrap();
    assert_eq!(anonymous.blob_exists("t/x", &image.layer.digest).unwrap(), Some(image.layer.bytes.len() as u64));
    let other = tiny_image("bearer 2");
    let e = push(&anonymous, "t/x", "v3", &other).unwrap_err().to_string();
    for part in [registry.host().as_str(), "repository t/x", other.layer.digest.as_str(), "401"] {
        assert!(e.contains(part), "`{part}` not in: {e}");
    }
    // A wrong password: the token server's 401, named.
    let wrong = ClientOptions { creds: Some(Credentials::parse("user:nope").unwrap()), no_creds: false, ..insecure() };
    let client = Client::connect(&registry.host(), &wrong).unwrap();
    let e = client.blob_exists("t/x", &image.layer.digest).unwrap_err();
    assert_eq!(e.status(), Some(401));
    let e = e.to_string();
    for part in [registry.host().as_str(), "repository t/x", "token from http://127.0.0.1", "wrong user name or password"] {
        assert!(e.contains(part), "`{part}` not in: {e}");
    }
}

#[test]
fn tls_with_cert_dir_and_without() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = harness::self_signed(dir.path(), "tls", false);
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::copy(&cert, certs.join("ca.crt")).unwrap();
    let registry = Registry::start(Mode::Tls { cert, key, client_ca: None });
    let image = tiny_image("tls");

    // Verified against the cert dir's CA.
    let opts = ClientOptions { tls_verify: true, cert_dir: Some(certs.clone()), ..insecure() };
    let client = Client::connect(&registry.host(), &opts).unwrap();
    assert_eq!(client.base_url(), format!("https://{}", registry.host()));
    assert_eq!(push(&client, "t/x", "v1", &image).unwrap(), 2);
    skopeo_verify(&registry, "t/x", "v1", &image, &["--src-cert-dir", certs.to_str().unwrap()]);

    // Without the CA: the certificate is refused, and the error names the registry.
    let opts = ClientOptions { tls_verify: true, ..insecure() };
    let e = Client::connect(&registry.host(), &opts).err().expect("unknown CA").to_string();
    assert!(e.contains(&registry.host()) && e.contains("--cert-dir"), "{e}");
    // Verification off: HTTPS still, unverified.
    let client = Client::connect(&registry.host(), &insecure()).unwrap();
    assert_eq!(client.base_url(), format!("https://{}", registry.host()));
    assert_eq!(client.blob_exists("t/x", &image.layer.digest).unwrap(), Some(image.layer.bytes.len() as u64));
}

/// 4 MiB of bytes that do not compress, and a reader over them that calls `at_half` once
/// when half of them are read.
fn big_blob() -> Blob {
    let mut bytes = Vec::with_capacity(4 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while bytes.len() < 4 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    Blob::new(bytes)
}

struct HookReader<'a, F: FnMut()> {
    inner: Cursor<&'a [u8]>,
    at_half: Option<F>,
}

impl<F: FnMut()> Read for HookReader<'_, F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let half = self.inner.get_ref().len() as u64 / 2;
        if self.inner.position() >= half {
            if let Some(mut f) = self.at_half.take() {
                f();
            }
        }
        let max = buf.len().min(64 << 10);
        self.inner.read(&mut buf[..max])
    }
}

#[test]
fn registry_stopped_mid_upload_fails_then_completes_after_restart() {
    let registry = Registry::start(Mode::Plain);
    let client = Client::connect(&registry.host(), &insecure()).unwrap();
    let blob = big_blob();
    let size = blob.bytes.len() as u64;
    let stopper = registry.clone();
    let reader = HookReader { inner: Cursor::new(&blob.bytes[..]), at_half: Some(move || stopper.stop()) };
    let e = client.upload_blob("t/big", &blob.digest, size, reader).unwrap_err().to_string();
    assert!(e.contains(&registry.host()) && e.contains("repository t/big") && e.contains(&blob.digest), "{e}");

    // While it is down, connecting fails after bounded retries, naming the registry.
    let once = ClientOptions { retry: Retry { attempts: 2, ..quick_retry() }, ..insecure() };
    let started = std::time::Instant::now();
    let e = Client::connect(&registry.host(), &once).err().expect("registry down").to_string();
    assert!(e.contains(&registry.host()) && e.contains("GET /v2/"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));

    registry.spawn();
    assert_eq!(client.blob_exists("t/big", &blob.digest).unwrap(), None);
    client.upload_blob("t/big", &blob.digest, size, Cursor::new(&blob.bytes)).unwrap();
    assert_eq!(client.blob_exists("t/big", &blob.digest).unwrap(), Some(size));
}

#[test]
fn replayable_upload_retries_through_a_restart() {
    let registry = Registry::start(Mode::Plain);
    let client = Client::connect(&registry.host(), &insecure()).unwrap();
    let blob = big_blob();
    let size = blob.bytes.len() as u64;
    let opens = AtomicUsize::new(0);
    let restarter = registry.clone();
    // Joined below, so no registry is started after the test ends.
    let restart: std::sync::Mutex<Option<std::thread::JoinHandle<()>>> = Default::default();
    client
        .upload_blob_replayable("t/big", &blob.digest, size, || {
            let first = opens.fetch_add(1, Ordering::SeqCst) == 0;
            let registry = restarter.clone();
            // The first try loses the registry halfway; it is back 300 ms later.
            let restart = &restart;
            let hook = move || {
                if first {
                    registry.stop();
                    let registry = registry.clone();
                    *restart.lock().unwrap() = Some(std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_millis(300));
                        registry.spawn();
                    }));
                }
            };
            Ok(HookReader { inner: Cursor::new(&blob.bytes[..]), at_half: Some(hook) })
        })
        .unwrap();
    restart.lock().unwrap().take().expect("the registry was stopped").join().unwrap();
    assert_eq!(opens.load(Ordering::SeqCst), 2);
    assert_eq!(client.blob_exists("t/big", &blob.digest).unwrap(), Some(size));
}

#[test]
fn missing_tools_are_named_with_their_package() {
    let e = std::panic::catch_unwind(|| harness::require("no-such-tool-xyz", "some-package")).unwrap_err();
    let message = e.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("apt-get install -y some-package"), "{message}");
}

#[test]
fn tls_client_certificate_from_cert_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = harness::self_signed(dir.path(), "server", false);
    let (client_cert, client_key) = harness::self_signed(dir.path(), "client", false);
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::copy(&cert, certs.join("ca.crt")).unwrap();
    let registry = Registry::start(Mode::Tls { cert, key, client_ca: Some(client_cert.clone()) });

    // Without a client certificate the handshake fails, and the error names the registry.
    let opts = ClientOptions { tls_verify: true, cert_dir: Some(certs.clone()), ..insecure() };
    let e = Client::connect(&registry.host(), &opts).err().expect("no client certificate").to_string();
    assert!(e.contains(&registry.host()), "{e}");

    // With `NAME.cert` + `NAME.key` in the cert dir it is presented and accepted.
    std::fs::copy(&client_cert, certs.join("client.cert")).unwrap();
    std::fs::copy(&client_key, certs.join("client.key")).unwrap();
    let client = Client::connect(&registry.host(), &opts).unwrap();
    assert_eq!(push(&client, "t/x", "v1", &tiny_image("client cert")).unwrap(), 2);

    // A key without its certificate is an error naming both files.
    std::fs::rename(certs.join("client.cert"), certs.join("other.txt")).unwrap();
    let e = Client::connect(&registry.host(), &opts).err().expect("key alone").to_string();
    assert!(e.contains("client.key") && e.contains("client.cert"), "{e}");
}
