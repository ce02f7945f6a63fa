//! A one-node Slurm cluster on localhost for the tests: its own munge key and socket, a
//! generated `slurm.conf` (no cgroups, no accounting, every directory in a temporary folder,
//! free ports), and munged, slurmctld and slurmd in the foreground as children of the test, so
//! that nothing clashes with a system Slurm and dropping the guard stops all of it, on a failed
//! assert too. Works in a container without systemd: the daemons run as root, as the test does.

use std::fs;
use std::io::Read as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Set (to anything) where Slurm must be installed: `.ci/run` sets it after installing
/// slurm-wlm and munge, so the test fails there instead of skipping.
pub const REQUIRE_SLURM: &str = "ADVLENS_REQUIRE_SLURM";

/// The programs the cluster needs, with the Debian package each comes from.
const PROGRAMS: [(&str, &str); 8] = [
    ("munged", "munge"),
    ("slurmctld", "slurmctld"),
    ("slurmd", "slurmd"),
    ("sbatch", "slurm-client"),
    ("scontrol", "slurm-client"),
    ("scancel", "slurm-client"),
    ("sinfo", "slurm-client"),
    ("squeue", "slurm-client"),
];

/// How long the daemons get to come up, and to stop after SIGTERM.
const DAEMON_WAIT: Duration = Duration::from_secs(30);

/// A daemon the cluster started, in the foreground.
struct Daemon {
    name: &'static str,
    child: Child,
}

/// A running one-node cluster; dropping it cancels the jobs it submitted and stops its daemons.
pub struct LocalSlurm {
    dir: TempDir,
    conf: PathBuf,
    /// Where sbatch and the other clients live, put first on the scripts' PATH.
    client_dir: PathBuf,
    daemons: Vec<Daemon>,
    jobs: Vec<String>,
}

/// `name` on PATH or in the sbin folders a non-login root shell may not have on PATH.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A TCP port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn mkdir(path: &Path, mode: u32) {
    fs::create_dir_all(path).unwrap();
    // Set explicitly: munged refuses group- or world-writable folders whatever the umask.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A random 1024-byte munge key, readable by its owner only.
fn write_munge_key(path: &Path) {
    let mut key = vec![0u8; 1024];
    fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut key)
        .unwrap();
    fs::write(path, &key).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o400)).unwrap();
}

/// This machine as slurmd sees it (`slurmd -C`: its name, CPUs, sockets, cores and memory), so
/// the configured node matches the hardware and is not drained.
fn node_line(slurmd: &Path) -> String {
    let out = Command::new(slurmd).arg("-C").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("NodeName="))
        .unwrap_or_else(|| panic!("slurmd -C printed no NodeName line: {text}"));
    line.trim().to_string()
}

fn node_name(line: &str) -> &str {
    line.split_whitespace()
        .next()
        .and_then(|w| w.strip_prefix("NodeName="))
        .unwrap()
}

/// The whole configuration: one node at 127.0.0.1, CPUs shared between jobs, the simplest
/// process tracking, no cgroup, task or accounting plugins.
fn slurm_conf(dir: &Path, node: &str, socket: &Path) -> String {
    let d = dir.display();
    let name = node_name(node);
    format!(
        "ClusterName=advlenstest
SlurmctldHost={name}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=socket={socket}
CredType=cred/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/run/slurmctld.pid
SlurmdPidFile={d}/run/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmdParameters=config_overrides
{node} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
",
        ctld_port = free_port(),
        d_port = free_port(),
        socket = socket.display(),
    )
}

/// Why the cluster cannot start here: programs not installed, or not running as root (the
/// configuration runs every daemon and job as root).
fn missing() -> Option<String> {
    let missing: Vec<String> = PROGRAMS
        .iter()
        .filter(|(p, _)| find_program(p).is_none())
        .map(|(p, pkg)| format!("{p} ({pkg})"))
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "{} not installed (apt install slurm-wlm munge)",
            missing.join(", ")
        ));
    }
    let uid = fs::metadata("/proc/self").map(|m| m.uid()).ok();
    (uid != Some(0)).then(|| "not running as root".to_string())
}

/// Whether the cluster can start; if not, the test skips with a note, or fails where
/// [`REQUIRE_SLURM`] is set.
fn available() -> bool {
    let Some(why) = missing() else {
        return true;
    };
    assert!(
        std::env::var_os(REQUIRE_SLURM).is_none(),
        "{why}, although {REQUIRE_SLURM} is set"
    );
    super::common::skip_note(&format!("skipped: the one-node Slurm cluster: {why}"));
    false
}

impl LocalSlurm {
    /// Starts munged, slurmctld and slurmd and waits until the node is idle; `None` (after a
    /// note) when Slurm is not installed.
    pub fn start() -> Option<Self> {
        if !available() {
            return None;
        }
        let program = |p: &str| find_program(p).unwrap();
        let dir = tempfile::Builder::new()
            .prefix("advlens-slurm-")
            // Short, fixed parent: slurmd's step sockets live in the spool folder and a Unix
            // socket path has at most 107 bytes.
            .tempdir_in("/tmp")
            .unwrap();
        let root = dir.path().to_path_buf();
        // munged wants every folder above its socket searchable by everyone.
        mkdir(&root, 0o755);
        for sub in ["run", "log", "state", "spool", "etc"] {
            mkdir(&root.join(sub), 0o755);
        }
        mkdir(&root.join("munge"), 0o700);
        let key = root.join("munge/munge.key");
        write_munge_key(&key);
        let socket = root.join("run/munge.sock");
        let conf = root.join("etc/slurm.conf");
        let node = node_line(&program("slurmd"));
        fs::write(&conf, slurm_conf(&root, &node, &socket)).unwrap();
        let client_dir = program("sbatch").parent().unwrap().to_path_buf();
        let mut cluster = Self {
            dir,
            conf,
            client_dir,
            daemons: Vec::new(),
            jobs: Vec::new(),
        };
        let flag = |name: &str, path: &Path| format!("--{name}={}", path.display());
        let mut munged = Command::new(program("munged"));
        munged.arg("--foreground").args([
            flag("socket", &socket),
            flag("key-file", &key),
            flag("pid-file", &root.join("run/munged.pid")),
            flag("log-file", &root.join("log/munged.log")),
            flag("seed-file", &root.join("munge/seed")),
        ]);
        cluster.spawn("munged", munged);
        cluster.wait_until("munged's socket", || socket.exists());
        for daemon in ["slurmctld", "slurmd"] {
            let mut cmd = Command::new(program(daemon));
            cmd.arg("-D");
            cluster.spawn(daemon, cmd);
        }
        let mut sinfo = cluster.client("sinfo");
        sinfo.args(["-h", "-o", "%T"]);
        cluster.wait_until("the node to be idle", || {
            let out = sinfo.output();
            out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "idle")
        });
        Some(cluster)
    }

    /// The temporary folder everything lives in (free for the test's own files too).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A Slurm client (`sbatch`, `scontrol`, ...) talking to this cluster.
    pub fn client(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.client_dir.join(name));
        cmd.env("SLURM_CONF", &self.conf);
        cmd
    }

    /// A command whose Slurm clients (found on PATH) talk to this cluster.
    pub fn with_env(&self, mut cmd: Command) -> Command {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let dirs = std::iter::once(self.client_dir.clone()).chain(std::env::split_paths(&path));
        cmd.env("SLURM_CONF", &self.conf)
            .env("PATH", std::env::join_paths(dirs).unwrap());
        cmd
    }

    /// Remembers a submitted job so that dropping the cluster cancels it if it still runs.
    pub fn track(&mut self, job: &str) {
        self.jobs.push(job.to_string());
    }

    /// The job's state (`PENDING`, `RUNNING`, `COMPLETED`, `FAILED`, `CANCELLED`, ...), or
    /// `None` when scontrol does not know it.
    pub fn job_state(&self, job: &str) -> Option<String> {
        let out = self
            .client("scontrol")
            .args(["show", "job", "-o", job])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .find_map(|w| w.strip_prefix("JobState="))
            .map(str::to_string)
    }

    /// Waits until the job leaves the queue and returns its final state (`TIMEOUT` when it had
    /// not after `limit`).
    pub fn wait_for_job(&self, job: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            let state = self.job_state(job).unwrap_or_else(|| "UNKNOWN".into());
            if !matches!(
                state.as_str(),
                "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING" | "REQUEUED" | "RESIZING"
            ) {
                return state;
            }
            if start.elapsed() > limit {
                return "TIMEOUT".into();
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// What the daemons printed, then the jobs' logs (`*/logs/*.log` in [`Self::dir`], where
    /// scripts/slurm-eval.sh puts them), for a failure message.
    pub fn logs(&self) -> String {
        let mut paths: Vec<PathBuf> = ["slurmctld.out", "slurmd.out", "munged.out"]
            .iter()
            .map(|name| self.dir().join("log").join(name))
            .collect();
        let mut jobs: Vec<PathBuf> = fs::read_dir(self.dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|out| fs::read_dir(out.path().join("logs")).ok())
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        jobs.sort();
        paths.extend(jobs);
        let mut text = String::new();
        for path in paths {
            let body = fs::read_to_string(&path).unwrap_or_else(|e| format!("({e})"));
            text.push_str(&format!("==== {} ====\n{body}\n", path.display()));
        }
        text
    }

    fn spawn(&mut self, name: &'static str, mut cmd: Command) {
        let log = fs::File::create(self.dir().join(format!("log/{name}.out"))).unwrap();
        let child = cmd
            .env("SLURM_CONF", &self.conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        self.daemons.push(Daemon { name, child });
    }

    /// Polls `ready` until it holds; fails with the logs when a daemon died or time ran out.
    fn wait_until(&mut self, what: &str, mut ready: impl FnMut() -> bool) {
        let start = Instant::now();
        while !ready() {
            for d in &mut self.daemons {
                if let Ok(Some(status)) = d.child.try_wait() {
                    // Drop prints the logs.
                    panic!("{} exited ({status})", d.name);
                }
            }
            assert!(
                start.elapsed() < DAEMON_WAIT,
                "waited {DAEMON_WAIT:?} for {what}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Sends SIGTERM through the shell's `kill` (no libc binding needed).
fn terminate(child: &Child) -> std::io::Result<Output> {
    Command::new("sh")
        .args(["-c", "kill -TERM \"$1\"", "sh", &child.id().to_string()])
        .output()
}

impl Drop for LocalSlurm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            super::common::skip_note(&self.logs());
        }
        if !self.jobs.is_empty() {
            // Cancelled jobs end through slurmd: wait for them to leave the queue before stopping
            // it, so no job step outlives the cluster.
            let _ = self.client("scancel").args(&self.jobs).output();
            let mut squeue = self.client("squeue");
            squeue.args(["-h", "-j", &self.jobs.join(",")]);
            let start = Instant::now();
            while squeue.output().is_ok_and(|o| !o.stdout.is_empty())
                && start.elapsed() < DAEMON_WAIT
            {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        // slurmd first, munged last: the Slurm daemons authenticate through it while stopping.
        while let Some(mut d) = self.daemons.pop() {
            let _ = terminate(&d.child);
            let start = Instant::now();
            while matches!(d.child.try_wait(), Ok(None)) && start.elapsed() < DAEMON_WAIT {
                std::thread::sleep(Duration::from_millis(100));
            }
            if matches!(d.child.try_wait(), Ok(None)) {
                let _ = d.child.kill();
                let _ = d.child.wait();
            }
        }
    }
}
