//! A 3-node Garage cluster (the real S3-compatible engine) on loopback ports,
//! replication factor 3, made with Garage's own CLI (`garage -c CFG ...`):
//! nodes connected, layout assigned and applied, a bucket and a key allowed
//! on it. scripts/lib/deps.sh `ensure_garage` installs the binary and exports
//! OXINVR_GARAGE; without it (and not at the cached path) [`Garage::binary`]
//! says so loudly and the test skips.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

pub const REGION: &str = "garage";
pub const BUCKET: &str = "oxinvr-test";
/// Imported keys: "GK" + 24 hex digits, and 64 hex digits.
pub const ACCESS_KEY: &str = "GK0123456789abcdef01234567";
pub const SECRET_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

pub struct Node {
    pub config: PathBuf,
    pub s3_port: u16,
    child: Option<Child>,
    log: PathBuf,
}

pub struct Garage {
    bin: PathBuf,
    pub nodes: Vec<Node>,
}

fn run(bin: &Path, cfg: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(bin).arg("-c").arg(cfg).args(args).output().map_err(|e| format!("garage: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("garage {args:?}: {}: {text}", out.status))
    }
}

/// Wall-clock epoch ms (request signing and time filters).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The garage binary, or None with a loud SKIPPED line naming `test`.
pub fn garage_or_skip(test: &str) -> Option<PathBuf> {
    let bin = Garage::binary();
    if bin.is_none() {
        eprintln!(
            "\n*** SKIPPED {test}: no garage binary (OXINVR_GARAGE unset, none in the tool cache); \
             run `source scripts/lib/deps.sh && ensure_garage` ***\n"
        );
    }
    bin
}

/// Retries `f` for up to `limit` (the cluster settles for a few seconds).
fn retry<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let deadline = Instant::now() + limit;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => return Err(format!("{what}: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

impl Garage {
    /// The garage binary: OXINVR_GARAGE, else ensure_garage's cached path. None: not installed.
    pub fn binary() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("OXINVR_GARAGE") {
            return Some(PathBuf::from(p));
        }
        let cached = super::tool_cache().join("garage-2.3.0/bin/garage");
        cached.is_file().then_some(cached)
    }

    /// Starts three nodes under `dir` and makes the bucket and the key. A
    /// cluster that does not form (a port free_port() found was taken before a
    /// node bound it, by another test) is stopped and made again on new ports.
    pub fn start(bin: PathBuf, dir: &Path) -> Garage {
        let mut errors = Vec::new();
        for attempt in 0..3 {
            match Garage::try_start(bin.clone(), &dir.join(format!("cluster{attempt}"))) {
                Ok(g) => return g,
                Err(e) => {
                    eprintln!("garage: the cluster did not form ({e}); again on new ports");
                    errors.push(e);
                }
            }
        }
        panic!("a 3-node Garage cluster did not form in 3 attempts: {errors:?}");
    }

    fn try_start(bin: PathBuf, dir: &Path) -> Result<Garage, String> {
        let secret: String = (0..32).map(|_| format!("{:02x}", rand_byte())).collect();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let d = dir.join(format!("garage{i}"));
            std::fs::create_dir_all(&d).expect("garage dir");
            let (rpc, s3, admin) = (free_port(), free_port(), free_port());
            let cfg = d.join("garage.toml");
            std::fs::write(
                &cfg,
                format!(
                    "bootstrap_peers = []\nmetadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
                     replication_factor = 3\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                     rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
                     [s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                     root_domain = \".s3.garage.localhost\"\n[admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
                    d = d.display()
                ),
            )
            .expect("garage config");
            nodes.push(Node { config: cfg, s3_port: s3, child: None, log: d.join("garage.log") });
        }
        let mut g = Garage { bin, nodes };
        for i in 0..3 {
            g.start_node(i);
        }
        let ids: Vec<String> = (0..3)
            .map(|i| {
                let out = retry(Duration::from_secs(30), "garage node id", || {
                    run(&g.bin, &g.nodes[i].config, &["node", "id", "-q"])
                })?;
                out.lines().find(|l| l.contains('@')).map(|l| l.trim().to_string()).ok_or(format!("node id: {out}"))
            })
            .collect::<Result<_, String>>()?;
        // Written into every node's config so a node (or the whole cluster) started
        // again finds the others, as a real deployment's config says.
        let peers: Vec<String> = ids.iter().map(|i| format!("\"{i}\"")).collect();
        for n in &g.nodes {
            let text = std::fs::read_to_string(&n.config).expect("garage config");
            let text = text.replacen("bootstrap_peers = []", &format!("bootstrap_peers = [{}]", peers.join(", ")), 1);
            std::fs::write(&n.config, text).expect("garage config");
        }
        for id in &ids[1..] {
            retry(Duration::from_secs(30), "garage node connect", || g.cli(&["node", "connect", id]))?;
        }
        for id in &ids {
            let short = id.split('@').next().expect("id");
            retry(Duration::from_secs(30), "garage layout assign", || {
                g.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", short])
            })?;
        }
        retry(Duration::from_secs(30), "garage layout apply", || g.cli(&["layout", "apply", "--version", "1"]))?;
        retry(Duration::from_secs(30), "garage bucket create", || g.cli(&["bucket", "create", BUCKET]))?;
        retry(Duration::from_secs(30), "garage key import", || {
            g.cli(&["key", "import", "--yes", "-n", "oxinvr", ACCESS_KEY, SECRET_KEY])
        })?;
        retry(Duration::from_secs(30), "garage bucket allow", || {
            g.cli(&["bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", ACCESS_KEY])
        })?;
        // A node that could not bind its S3 or admin port has exited while the others
        // formed the cluster: that is not the 3-node cluster the tests want.
        for (i, n) in g.nodes.iter_mut().enumerate() {
            let alive = n.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)));
            let s3 = std::net::TcpStream::connect(("127.0.0.1", n.s3_port)).is_ok();
            if !alive || !s3 {
                return Err(format!("node {i}: running {alive}, S3 port {} answering {s3}", n.s3_port));
            }
        }
        Ok(g)
    }

    /// A CLI command through node 0 (or the first running one).
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let i = self.nodes.iter().position(|n| n.child.is_some()).unwrap_or(0);
        run(&self.bin, &self.nodes[i].config, args)
    }

    pub fn start_node(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&n.log).expect("garage log");
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&n.config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start garage");
        n.child = Some(child);
    }

    /// SIGKILL of node `i`.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether every running node sees every node up (`garage status` lists none as failed).
    pub fn all_up(&self) -> bool {
        self.nodes.iter().filter(|n| n.child.is_some()).count() == self.nodes.len()
            && self.nodes.iter().all(|n| {
                run(&self.bin, &n.config, &["status"]).is_ok_and(|s| !s.to_ascii_lowercase().contains("failed nodes"))
            })
    }

    /// The S3 endpoint of node `i`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].s3_port)
    }

    /// An S3 client of node `i` (OxiNVR's own, signed; a separate process would do no better).
    pub fn bucket(&self, i: usize) -> oxinvr::replicate::s3::Bucket {
        oxinvr::replicate::s3::Bucket::new(
            url::Url::parse(&self.endpoint(i)).expect("url"),
            BUCKET.into(),
            REGION.into(),
            oxinvr::replicate::sigv4::Credentials::new(ACCESS_KEY.into(), SECRET_KEY.into()),
            None,
        )
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
    }
}

fn rand_byte() -> u8 {
    let mut b = [0u8; 1];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b[0]
}
