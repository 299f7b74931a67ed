//! A private PostgreSQL server for the tests: Debian's `postgresql` package
//! (`bash tests/setup.sh` installs it), a cluster made by `initdb` in a
//! temporary folder and started by `pg_ctl` on a free 127.0.0.1 port, once
//! per test binary. Each caller gets a database of its own. The server is
//! stopped (and its folder removed) when the test binary exits: a watcher
//! process waits for this process to end, even if it panics or is killed.

use super::port;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

pub struct Cluster {
    pub port: u16,
    pub dir: PathBuf,
    pub bin: PathBuf,
    /// Outlives this process on purpose: it stops the server after us.
    pub watcher: std::process::Child,
}

/// The folder with `initdb` and `pg_ctl` (the newest installed version).
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").is_file() && p.join("pg_ctl").is_file())
        .collect();
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run `bash tests/setup.sh`")
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command run as the `postgres` user when we are root (PostgreSQL refuses
/// to run as root), else as ourselves.
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn start() -> Cluster {
    let bin = bin_dir();
    let dir = std::env::temp_dir().join(format!(
        "flowc-pg-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir).expect("create the cluster folder");
    if is_root() {
        let ok = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chown of {} to postgres failed", dir.display());
    }
    let data = dir.join("data");
    let out = as_server_user(&bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["-A", "trust", "-U", "postgres", "--no-sync"])
        .output()
        .expect("initdb starts");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = dir.join("log");
    let mut port = 0;
    for attempt in 1..=port::ATTEMPTS {
        port = port::unused();
        let out = as_server_user(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300",
                dir.display()
            ))
            .args(["-w", "start"])
            .stdout(Stdio::null())
            .output()
            .expect("pg_ctl starts");
        if out.status.success() {
            break;
        }
        let server_log = std::fs::read_to_string(&log).unwrap_or_default();
        // Another process took the port since it was chosen: choose again.
        assert!(
            port::was_taken(&server_log) && attempt < port::ATTEMPTS,
            "pg_ctl start failed: {}\n{server_log}",
            String::from_utf8_lossy(&out.stderr),
        );
        let _ = std::fs::remove_file(&log);
    }
    // Stops the server when this process ends, however it ends. The watcher
    // runs as us (only we may signal our own process); `pg_ctl` as the
    // server's user.
    let watcher = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {run_as}{pg_ctl} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
        pid = std::process::id(),
        run_as = if is_root() { "runuser -u postgres -- " } else { "" },
        pg_ctl = bin.join("pg_ctl").display(),
        data = data.display(),
        dir = dir.display()
    );
    let watcher = Command::new("sh")
        .args(["-c", &watcher])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the watcher starts");
    Cluster {
        port,
        dir,
        bin,
        watcher,
    }
}

pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(start)
}

/// A fresh, empty database on the shared cluster: its `postgres://` URL.
pub fn database(name: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let c = cluster();
    let db = format!(
        "{}_{}",
        name.replace(|ch: char| !ch.is_ascii_alphanumeric(), "_"),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
    .to_lowercase();
    let mut admin = postgres::Client::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            c.port
        ),
        postgres::NoTls,
    )
    .expect("connect to the test cluster");
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .expect("create a test database");
    format!("postgres://postgres@127.0.0.1:{}/{db}", c.port)
}
