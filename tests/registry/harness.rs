//! Real parts for the registry tests: Debian's `docker-registry` (distribution 2.8) on a free
//! port of 127.0.0.1 in a temporary directory, killed on drop; a bearer-token server (a
//! thread here, signing with `openssl`); certificates from `openssl`; `htpasswd`.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Fails the test with the Debian package to install when `cmd` is not on PATH.
pub fn require(cmd: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{cmd}` is not installed: the registry tests need the Debian package `{package}` \
         (`apt-get install -y {package}`; tests/run.sh installs it when missing)"
    );
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().expect("local addr").port()
}

/// Runs a command, failing the test with its stderr when it fails.
pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// How the registry authenticates and serves.
pub enum Mode {
    Plain,
    /// htpasswd with one user.
    Basic { user: &'static str, password: &'static str },
    /// Tokens from `realm`, signed by the key of `cert`.
    Token { realm: String, cert: PathBuf },
    /// HTTPS with this certificate and key; with `client_ca`, clients must present a
    /// certificate it verifies.
    Tls { cert: PathBuf, key: PathBuf, client_ca: Option<PathBuf> },
}

pub struct Registry {
    pub dir: tempfile::TempDir,
    pub port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Mutex<Option<Child>>,
}

impl Registry {
    pub fn start(mode: Mode) -> Arc<Registry> {
        require("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let d = dir.path();
        let auth = match &mode {
            Mode::Plain | Mode::Tls { .. } => String::new(),
            Mode::Basic { user, password } => {
                require("htpasswd", "apache2-utils");
                let line = run(Command::new("htpasswd").args(["-Bbn", user, password]));
                fs::write(d.join("htpasswd"), line).expect("write htpasswd");
                format!("auth: {{ htpasswd: {{ realm: r, path: {} }} }}\n", d.join("htpasswd").display())
            }
            Mode::Token { realm, cert } => format!(
                "auth: {{ token: {{ realm: \"{realm}\", service: {SERVICE}, issuer: {ISSUER}, rootcertbundle: {} }} }}\n",
                cert.display()
            ),
        };
        let tls = match &mode {
            Mode::Tls { cert, key, client_ca } => {
                let cas = client_ca.as_ref().map_or(String::new(), |ca| format!(", clientcas: [{}]", ca.display()));
                format!(", tls: {{ certificate: {}, key: {}{cas} }}", cert.display(), key.display())
            }
            _ => String::new(),
        };
        let config = d.join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{ level: info }}\n\
                 storage: {{ filesystem: {{ rootdirectory: {} }}, delete: {{ enabled: true }} }}\n\
                 http: {{ addr: 127.0.0.1:{port}{tls} }}\n{auth}",
                d.join("storage").display()
            ),
        )
        .expect("write config.yml");
        let registry = Registry { port, config, log: d.join("registry.log"), child: Mutex::new(None), dir };
        registry.spawn();
        Arc::new(registry)
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the process (again) and waits until the port answers.
    pub fn spawn(&self) {
        let log = fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("open registry.log");
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("docker-registry exited ({status}) before listening:\n{}", self.log_text());
            }
            assert!(Instant::now() < deadline, "docker-registry did not listen on {} within 10 s:\n{}", self.port, self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        *self.child.lock().unwrap() = Some(child);
    }

    /// Kills the process (SIGKILL: no graceful end, as a crash or a network cut).
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Upload requests in the access log: `"(POST|PATCH|PUT) /v2/…/blobs/uploads/…`.
    pub fn upload_requests(&self) -> usize {
        self.log_text()
            .lines()
            .filter(|line| {
                ["\"POST /v2/", "\"PATCH /v2/", "\"PUT /v2/"].iter().any(|m| {
                    line.find(m).is_some_and(|i| {
                        let path = line[i + 1..].split(' ').nth(1).unwrap_or("");
                        path.contains("/blobs/uploads/")
                    })
                })
            })
            .count()
    }
}

impl Registry {
    /// Cross-repository mounts that succeeded: `POST …/blobs/uploads/?…mount=…` answered `201`.
    pub fn mount_requests(&self) -> usize {
        self.log_text().lines().filter(|l| l.contains("\"POST /v2/") && l.contains("mount=") && l.contains("\" 201 ")).count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

pub const SERVICE: &str = "test-registry";
pub const ISSUER: &str = "test-issuer";

/// A self-signed certificate (not a CA: rustls refuses a CA certificate as a server's).
/// RSA when `rsa` (token signing needs RS256), else P-256 (faster).
pub fn self_signed(dir: &Path, name: &str, rsa: bool) -> (PathBuf, PathBuf) {
    require("openssl", "openssl");
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-x509", "-nodes", "-days", "30", "-subj", "/CN=127.0.0.1"]);
    if rsa {
        cmd.args(["-newkey", "rsa:2048"]);
    } else {
        cmd.args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]);
    }
    cmd.args(["-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"]);
    cmd.arg("-keyout").arg(&key).arg("-out").arg(&cert);
    run(&mut cmd);
    (cert, key)
}

/// A token server as distribution's token spec describes: `GET /token?service=&scope=…`
/// with Basic credentials (all requested actions) or none (`pull` only); a wrong password
/// gets `401`. Tokens are RS256 JWTs whose `x5c` holds the signing certificate.
pub struct TokenServer {
    pub port: u16,
    /// The `scope` parameters of every token request, one list per request.
    pub requests: Arc<Mutex<Vec<Vec<String>>>>,
    stop: Arc<AtomicBool>,
}

impl TokenServer {
    pub fn start(cert: &Path, key: &Path, user: &str, password: &str) -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token server");
        let port = listener.local_addr().expect("addr").port();
        let der = run(Command::new("openssl").args(["x509", "-outform", "DER", "-in"]).arg(cert));
        let x5c = base64(&der, false);
        let expected = format!("Basic {}", base64(format!("{user}:{password}").as_bytes(), false));
        let key = key.to_path_buf();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, stopping) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(stream) = stream {
                    let _ = serve_token(stream, &key, &x5c, &expected, &reqs);
                }
            }
        });
        TokenServer { port, requests, stop }
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes the accept loop
    }
}

fn serve_token(
    stream: TcpStream,
    key: &Path,
    x5c: &str,
    expected_auth: &str,
    requests: &Mutex<Vec<Vec<String>>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_string());
            }
        }
    }
    let target = request_line.split(' ').nth(1).unwrap_or("");
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let scopes: Vec<String> =
        query.split('&').filter_map(|kv| kv.strip_prefix("scope=")).map(percent_decode).collect();
    requests.lock().unwrap().push(scopes.clone());
    let mut stream = stream;
    let authenticated = match &authorization {
        None => false,
        Some(a) if a == expected_auth => true,
        Some(_) => {
            let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"wrong user name or password"}]}"#;
            return write!(stream, "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
    };
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            let actions: Vec<&str> = actions.split(',').filter(|a| authenticated || *a == "pull").collect();
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions}))
        })
        .collect();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": ISSUER, "aud": SERVICE, "sub": if authenticated { "user" } else { "" },
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", scopes.join(" ")),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        base64(header.to_string().as_bytes(), true),
        base64(claims.to_string().as_bytes(), true)
    );
    let mut openssl = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    openssl.stdin.take().expect("stdin").write_all(signing_input.as_bytes())?;
    let mut signature = Vec::new();
    openssl.stdout.take().expect("stdout").read_to_end(&mut signature)?;
    openssl.wait()?;
    let token = format!("{signing_input}.{}", base64(&signature, true));
    let body = serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Base64, standard with padding or URL-safe without (JWT).
pub fn base64(data: &[u8], url: bool) -> String {
    let alphabet: &[u8] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else if !url {
                out.push('=');
            }
        }
    }
    out
}
