//! Real etcd members on loopback for the cluster tests (SPEC §16).
//!
//! [`EtcdCluster::start`] launches `n` members of a fresh cluster on free
//! loopback ports with private data directories in a temporary directory,
//! and waits until every member is healthy. Members can be crashed
//! ([`EtcdCluster::kill9`]), stopped and started again; everything is
//! killed when the cluster is dropped. Ask [`EtcdCluster::need`] first: it
//! skips outside CI (and fails under CI) when `etcd` is not installed.

use std::fs;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::{CTL_TIMEOUT, Need, Out, STALL, clean_command, run, signal, wait_progressing};

/// One member: its ports, data directory and process.
#[derive(Debug)]
struct Member {
    name: String,
    client: u16,
    peer: u16,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A real etcd cluster on loopback, killed on drop.
#[derive(Debug)]
pub struct EtcdCluster {
    tmp: tempfile::TempDir,
    members: Vec<Member>,
}

impl EtcdCluster {
    /// The `etcd` and `etcdctl` binaries (`.ci/run` installs them with
    /// `apt-get install etcd-server etcd-client`).
    pub fn need() -> Need {
        if !crate::on_path("etcd") {
            return Need::tool("etcd", "etcd-server");
        }
        Need::tool("etcdctl", "etcd-client")
    }

    /// Starts a fresh cluster of `n` members and waits until all are
    /// healthy (guarded by their logs' progress, not by total time).
    #[track_caller]
    pub fn start(n: usize) -> EtcdCluster {
        let tmp = tempfile::Builder::new()
            .prefix("ttm-etcd-")
            .tempdir()
            .expect("temp dir");
        let ports = free_ports(2 * n);
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: ports[2 * i],
                peer: ports[2 * i + 1],
                data: tmp.path().join(format!("m{i}.etcd")),
                log: tmp.path().join(format!("m{i}.log")),
                child: None,
            })
            .collect();
        let mut cluster = EtcdCluster { tmp, members };
        for i in 0..n {
            cluster.spawn(i);
        }
        cluster.wait_healthy();
        cluster
    }

    /// The temporary directory holding the members' data and logs.
    pub fn dir(&self) -> &std::path::Path {
        self.tmp.path()
    }

    /// Every member's client URL, comma-separated (for `--cluster`).
    pub fn endpoints(&self) -> String {
        (0..self.members.len())
            .map(|i| self.endpoint(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client)
    }

    /// How many members the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True for a cluster without members (never, from `start`).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// SIGKILL member `i` (a crash); its data directory stays.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM member `i` and wait for it to exit.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            signal(child.id(), "TERM");
            if crate::wait_timeout(&mut child, crate::STOP_TIMEOUT).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Starts member `i` again (from its data directory) and waits until
    /// every running member is healthy.
    #[track_caller]
    pub fn start_member(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        self.spawn(i);
        self.wait_healthy();
    }

    /// Starts the members `ids` again together (a cluster whose quorum
    /// needs more than one of them) and waits until every running member
    /// is healthy.
    #[track_caller]
    pub fn start_members(&mut self, ids: &[usize]) {
        for &i in ids {
            assert!(self.members[i].child.is_none(), "member {i} is running");
            self.spawn(i);
        }
        self.wait_healthy();
    }

    /// The pid of member `i`, when running (for SIGSTOP/SIGCONT).
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// The index of the current leader, as the running members report it.
    pub fn leader(&self) -> Option<usize> {
        let running: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].child.is_some())
            .collect();
        let endpoints: Vec<String> = running.iter().map(|&i| self.endpoint(i)).collect();
        let out = self.etcdctl_at(&endpoints.join(","), &["endpoint", "status", "-w", "json"]);
        let statuses: Value = serde_json::from_str(&out.stdout).ok()?;
        let statuses = statuses.as_array()?;
        let leader = statuses
            .iter()
            .find_map(|s| s["Status"]["leader"].as_u64())?;
        statuses.iter().zip(&running).find_map(|(s, &i)| {
            (s["Status"]["header"]["member_id"].as_u64() == Some(leader)).then_some(i)
        })
    }

    /// Runs `etcdctl args…` against every member.
    pub fn etcdctl(&self, args: &[&str]) -> Out {
        self.etcdctl_at(&self.endpoints(), args)
    }

    /// Runs `etcdctl args…` against `endpoints`.
    pub fn etcdctl_at(&self, endpoints: &str, args: &[&str]) -> Out {
        let mut cmd = clean_command("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .arg("--command-timeout=5s")
            .args(args);
        run(cmd, None, CTL_TIMEOUT)
    }

    /// Everything the members logged, for failure messages.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let log = fs::read_to_string(&m.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {} ---\n{}", m.name, tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn spawn(&mut self, i: usize) {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect();
        // One token for the whole cluster: members with different tokens
        // form different clusters and never elect a leader.
        let token = format!("ttm-{}", self.members[0].client);
        let m = &self.members[i];
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("etcd log file");
        let client = format!("http://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let mut cmd = Command::new("etcd");
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &token])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .env_remove("ETCD_NAME")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd.spawn().expect("spawn etcd");
        self.members[i].child = Some(child);
    }

    /// Waits until every running member answers `endpoint health`; fails
    /// once the number of healthy members stood still for [`STALL`] (a
    /// cluster that cannot form, however busy its logs), or a member
    /// exited.
    #[track_caller]
    fn wait_healthy(&mut self) {
        let running: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].child.is_some())
            .collect();
        let healthy = std::cell::Cell::new(0u64);
        let mut tries = 0u64;
        wait_progressing(
            "etcd cluster start",
            STALL,
            || healthy.get(),
            || {
                for &i in &running {
                    let exited = self.members[i].child.as_mut().map(|c| c.try_wait());
                    if let Some(Ok(Some(status))) = exited {
                        panic!("etcd member {i} exited ({status}):\n{}", self.logs());
                    }
                }
                tries += 1;
                if tries % 20 != 1 {
                    return None;
                }
                let up = running
                    .iter()
                    .filter(|&&i| {
                        let out = self.etcdctl_at(&self.endpoint(i), &["endpoint", "health"]);
                        out.code() == 0
                    })
                    .count() as u64;
                healthy.set(healthy.get().max(up));
                (up == running.len() as u64).then_some(())
            },
        );
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill9(i);
        }
    }
}

/// `n` distinct free loopback ports (bound at once, then released).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}
