//! What a daemon needs to know to serve a tree, and where each setting came
//! from. Every setting has a default; the config file (`<root>/ttmd.toml`,
//! or `--config`) overrides defaults; a flag or environment variable
//! replaces the file's value (a list or table too: layers never merge).
//! The settings themselves are one table, [`settings::SETTINGS`]; `main`
//! fills the flag layer from it, [`Config::load`] the rest.

mod cli;
mod codec;
mod describe;
mod file;
pub mod settings;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::core::{Error, Result};
use crate::store::Durability;
use settings::setting;

pub use cli::SettingFlags;
pub use describe::{README_BEGIN, README_END, readme_block};
pub use settings::{Reload, SETTINGS, Setting};

/// The config file's name inside the root.
pub const CONFIG_FILE: &str = "ttmd.toml";

/// Settings of one daemon.
#[derive(Debug, Clone)]
pub struct Config {
    /// The tree served (`$TETRA_DIR`).
    pub root: PathBuf,
    /// The socket path, reported in `Hello` and the lock file.
    pub socket: PathBuf,
    /// Whether writes are synced before they are acknowledged.
    pub durability: Durability,
    /// Size limits on requests.
    pub limits: Limits,
    /// How often an idle followed stream gets a heartbeat.
    pub heartbeat: Duration,
    /// Who may call besides the daemon's own uid.
    pub access: Access,
    /// Modules kept outside the root: name → directory holding its `txns/`.
    pub module_dirs: BTreeMap<String, PathBuf>,
    /// Cluster mode (SPEC §16): etcd endpoints; empty means one host, no
    /// etcd code runs.
    pub cluster: Vec<String>,
    /// This host's id in the cluster; empty means the host name.
    pub host_id: String,
    /// The config file read at start, if any.
    pub config_file: Option<PathBuf>,
    /// Where a reload looks for the config file (the `--config` file, else
    /// `<root>/ttmd.toml`, which may appear after start).
    pub config_path: Option<PathBuf>,
    /// Re-read config, topology and FSMs on SIGHUP (the binary sets this;
    /// in-process daemons in tests leave signals alone).
    pub reload_on_sighup: bool,
    /// How long shutdown waits for in-flight requests and open streams.
    pub shutdown_grace: Duration,
    /// How hooks are run (SPEC §15).
    pub hooks: Hooks,
    /// Where `/metrics` is served over HTTP; `None`: not served.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Where each setting came from, for `--print-config`.
    pub sources: BTreeMap<&'static str, Source>,
    /// The flags and environment given at start, which a reload applies
    /// over the re-read file again.
    pub overrides: Overrides,
}

/// Size limits; each refusal names the limit it hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of a transaction description.
    pub description: usize,
    /// Bytes of a JSON payload (update patch, event data, error text).
    pub payload: usize,
    /// Bytes of one ctx file.
    pub ctx_file: u64,
    /// ctx files in one transaction.
    pub ctx_files: usize,
    /// Open Events/Watch streams, all clients together.
    pub streams_total: usize,
    /// Open Events/Watch streams of one client process.
    pub streams_per_client: usize,
    /// Bytes of one request message (a chunk of a ctx file is one message).
    pub request_bytes: usize,
    /// Bytes of a transaction's `state.json`, which replies carry whole.
    pub state: usize,
    /// Open connections of one peer uid.
    pub connections_per_uid: usize,
    /// Open connections, all peers together.
    pub connections_total: usize,
    /// Seconds a connection with no request and no open stream stays open.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            description: 64 * 1024,
            payload: 1024 * 1024,
            ctx_file: 16 * 1024 * 1024 * 1024,
            ctx_files: 10_000,
            streams_total: 1024,
            streams_per_client: 64,
            request_bytes: 4 * 1024 * 1024,
            state: 1024 * 1024,
            connections_per_uid: 1024,
            connections_total: 4096,
            idle: Duration::from_secs(300),
        }
    }
}

/// How hooks are run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hooks {
    /// Hooks for every module, used where a module's `hooks/` has none of
    /// that name.
    pub dir: Option<PathBuf>,
    /// Hooks running at once.
    pub concurrency: usize,
    /// Hook runs waiting for a slot; past it, events run no hook (logged
    /// and counted).
    pub queue: usize,
    /// How long a hook may run before its process group is killed.
    pub timeout: Duration,
    /// Bytes of a run's stdout and of its stderr kept for the log.
    pub output: usize,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            dir: None,
            concurrency: 4,
            queue: 1000,
            timeout: Duration::from_secs(60),
            output: 16 * 1024,
        }
    }
}

/// Peers allowed besides the daemon's own uid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Further uids.
    pub uids: Vec<u32>,
    /// Groups (numeric gids): a peer whose primary or supplementary group
    /// is one of these may call.
    pub gids: Vec<u32>,
    /// Groups by name, resolved into `gids` from /etc/group when loaded.
    pub groups: Vec<String>,
    /// Whether uid 0 may call a daemon running as another user.
    pub allow_root: bool,
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(&'static str),
    Flag,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(v) => write!(f, "env {v}"),
            Source::Flag => write!(f, "flag"),
        }
    }
}

/// Values given on the command line or in the environment, which beat the
/// config file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--config`: the file to read instead of `<root>/ttmd.toml`.
    pub config_file: Option<PathBuf>,
    /// (setting key, value as text, where it came from); of a key given
    /// twice, the last wins.
    pub settings: Vec<(&'static str, String, Source)>,
}

impl Config {
    /// A config with defaults for everything but the tree and socket (what
    /// in-process daemons in tests use).
    pub fn new(root: PathBuf, socket: PathBuf) -> Config {
        Config {
            root,
            socket,
            durability: Durability::default(),
            limits: Limits::default(),
            heartbeat: Duration::from_secs(10),
            access: Access::default(),
            module_dirs: BTreeMap::new(),
            cluster: Vec::new(),
            host_id: String::new(),
            config_file: None,
            config_path: None,
            reload_on_sighup: false,
            shutdown_grace: Duration::from_secs(10),
            hooks: Hooks::default(),
            metrics_listen: None,
            sources: BTreeMap::new(),
            overrides: Overrides::default(),
        }
    }

    /// Builds the effective config for `root`: defaults, then the config
    /// file (`overrides.config_file`, else `<root>/ttmd.toml` if present),
    /// then flags/environment.
    pub fn load(root: PathBuf, overrides: &Overrides) -> Result<Config> {
        let explicit = overrides.config_file.is_some();
        let path = overrides
            .config_file
            .clone()
            .unwrap_or_else(|| root.join(CONFIG_FILE));
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => Some(file::parse(&text, &path)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => None,
            Err(e) => return Err(Error::io("reading config file", &path, e)),
        };
        Config::assemble(root, path, file, overrides)
    }

    /// Each setting from the last layer that has it: `overrides`, else
    /// `file` (read from `path`), else the default. Applying only the
    /// winner is what makes a flag replace the file's value, lists too.
    fn assemble(
        root: PathBuf,
        path: PathBuf,
        file: Option<file::Values>,
        overrides: &Overrides,
    ) -> Result<Config> {
        if let Some((key, ..)) = overrides
            .settings
            .iter()
            .find(|(k, ..)| setting(k).is_none())
        {
            return Err(Error::invalid(format!("unknown setting {key}")));
        }
        let socket = ttm_proto::paths::default_socket(&root);
        let mut c = Config::new(root, socket);
        c.config_path = Some(path.clone());
        c.config_file = file.is_some().then(|| path.clone());
        c.overrides = overrides.clone();
        let file = file.unwrap_or_default();
        for s in SETTINGS {
            let given = overrides.settings.iter().rev().find(|(k, ..)| *k == s.key);
            if let Some((_, text, source)) = given {
                (s.ops.text)(&mut c, text)
                    .map_err(|m| Error::invalid(format!("{} from {source}: {m}", s.key)))?;
                c.sources.insert(s.key, source.clone());
            } else if let Some(value) = file.get(s.key) {
                (s.ops.toml)(&mut c, value)
                    .map_err(|m| file::corrupt(&path, &format!("{}: {m}", s.key)))?;
                c.sources.insert(s.key, Source::File(path.clone()));
            }
        }
        Ok(c)
    }

    /// This host's id: `host_id`, else the host name (SPEC §16), which
    /// also names the holder's host in "busy" answers (SPEC §13).
    pub fn host_id(&self) -> String {
        if !self.host_id.is_empty() {
            return self.host_id.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into())
    }

    /// Sets one setting from text, as a flag or environment variable gives
    /// it. Lists are comma-separated; modules are `name=dir,name=dir`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let s = setting(key).ok_or_else(|| format!("unknown setting {key}"))?;
        (s.ops.text)(self, value)
    }

    /// Re-reads the config file for a reload: returns the new config with
    /// the [`Reload::Live`] settings taken from the file and then, as at
    /// start, from the flags and environment; and a line for each other
    /// setting that changed, which needs a restart.
    pub fn reloaded(&self) -> Result<(Config, Vec<String>)> {
        let Some(path) = self.config_path.as_ref() else {
            return Ok((self.clone(), Vec::new()));
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.config_file.is_none() => {
                return Ok((self.clone(), Vec::new()));
            }
            Err(e) => return Err(Error::io("reading config file", path, e)),
        };
        let file = file::parse(&text, path)?;
        let fresh = Config::assemble(self.root.clone(), path.clone(), Some(file), &self.overrides)?;
        let mut next = self.clone();
        next.config_file = Some(path.clone());
        let mut notes = Vec::new();
        for s in SETTINGS.iter().filter(|s| !(s.ops.same)(&fresh, self)) {
            match s.reload {
                Reload::Live => {
                    (s.ops.copy)(&mut next, &fresh);
                    match fresh.sources.get(s.key) {
                        Some(source) => next.sources.insert(s.key, source.clone()),
                        None => next.sources.remove(s.key),
                    };
                }
                Reload::Restart => notes.push(format!(
                    "{} changed in {}; it takes effect at restart",
                    s.key,
                    path.display()
                )),
            }
        }
        Ok((next, notes))
    }
}

/// The gid of group `name`, from /etc/group (local groups only: the units
/// create their group there).
fn group_id(name: &str) -> Result<u32, String> {
    let groups = std::fs::read_to_string("/etc/group")
        .map_err(|e| format!("cannot read /etc/group to find group {name:?}: {e}"))?;
    groups
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.nth(1)?))
        })
        .find(|(n, _)| *n == name)
        .and_then(|(_, gid)| gid.parse().ok())
        .ok_or_else(|| format!("no group {name:?} in /etc/group; create it or use a numeric gid"))
}

/// `fsync`, `strict` or `none`.
pub fn parse_durability(text: &str) -> Result<Durability, String> {
    match text {
        "fsync" => Ok(Durability::Fsync),
        "strict" => Ok(Durability::Strict),
        "none" => Ok(Durability::None),
        other => Err(format!(
            "durability must be \"fsync\", \"strict\" or \"none\", not {other:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: Option<&str>, overrides: Overrides) -> Result<Config> {
        let tmp = tempfile::tempdir().unwrap();
        if let Some(t) = text {
            std::fs::write(tmp.path().join(CONFIG_FILE), t).unwrap();
        }
        Config::load(tmp.path().to_path_buf(), &overrides)
    }

    #[test]
    fn layers_defaults_file_flags() {
        let c = load(None, Overrides::default()).unwrap();
        assert_eq!(c.durability, Durability::Fsync);
        assert!(c.config_file.is_none());

        let text = "durability = \"none\"\nheartbeat_secs = 3\n[limits]\ndescription = 10\n\
                    [access]\nuids = [1001]\n[modules]\nrag = \"/srv/rag\"\n";
        let c = load(Some(text), Overrides::default()).unwrap();
        assert_eq!(c.durability, Durability::None);
        assert_eq!(c.heartbeat, Duration::from_secs(3));
        assert_eq!(c.limits.description, 10);
        assert_eq!(c.limits.payload, Limits::default().payload);
        assert_eq!(c.access.uids, [1001]);
        assert_eq!(c.module_dirs["rag"], PathBuf::from("/srv/rag"));
        assert!(matches!(c.sources["durability"], Source::File(_)));

        let flags = Overrides {
            settings: vec![("durability", "fsync".into(), Source::Flag)],
            ..Default::default()
        };
        let c = load(Some(text), flags).unwrap();
        assert_eq!(c.durability, Durability::Fsync);
        assert_eq!(c.sources["durability"], Source::Flag);
        assert!(c.describe().contains("durability") && c.describe().contains("(flag)"));
    }

    #[test]
    fn a_reload_keeps_flags_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::write(root.join(CONFIG_FILE), "[limits]\npayload = 100\n").unwrap();
        let flags = Overrides {
            settings: vec![
                ("limits.payload", "10".into(), Source::Flag),
                ("access.uids", "4242".into(), Source::Env("TTM_ALLOW_UIDS")),
            ],
            ..Default::default()
        };
        let c = Config::load(root.clone(), &flags).unwrap();
        assert_eq!(
            (c.limits.payload, c.access.uids.as_slice()),
            (10, &[4242][..])
        );
        std::fs::write(
            root.join(CONFIG_FILE),
            "heartbeat_secs = 4\n[limits]\npayload = 200\ndescription = 7\n",
        )
        .unwrap();
        let (next, notes) = c.reloaded().unwrap();
        assert_eq!(next.limits.payload, 10, "the flag lost to the file");
        assert_eq!(next.access.uids, [4242], "the environment lost to the file");
        assert_eq!(next.limits.description, 7);
        assert_eq!(next.heartbeat, Duration::from_secs(4));
        assert!(notes.is_empty(), "{notes:?}");
    }

    /// Every layer replaces the one under it, lists and tables too: before
    /// this, `--allow-uids` replaced the file's uids but `--allow-gids`
    /// added to the file's gids.
    #[test]
    fn flags_replace_the_files_lists() {
        let text = "[access]\nuids = [1]\ngids = [2]\ngroups = [\"root\"]\n\
                    [modules]\na = \"/a\"\n";
        let flags = Overrides {
            settings: vec![
                ("access.uids", "5".into(), Source::Flag),
                ("access.gids", "6".into(), Source::Env("TTM_ALLOW_GIDS")),
                ("modules", "b=/b".into(), Source::Flag),
            ],
            ..Default::default()
        };
        let c = load(Some(text), flags).unwrap();
        assert_eq!(c.access.uids, [5]);
        assert_eq!(c.access.gids, [6, 0], "the file's groups still count");
        assert_eq!(c.access.groups, ["root"]);
        assert_eq!(c.module_dirs.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(c.sources["access.gids"], Source::Env("TTM_ALLOW_GIDS"));
        assert!(matches!(c.sources["access.groups"], Source::File(_)));
    }

    #[test]
    fn a_reload_keeps_restart_settings_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let c = Config::load(root.clone(), &Overrides::default()).unwrap();
        let text = "durability = \"none\"\nshutdown_grace_secs = 3\nheartbeat_secs = 2\n";
        std::fs::write(root.join(CONFIG_FILE), text).unwrap();
        let (next, notes) = c.reloaded().unwrap();
        assert_eq!(next.durability, Durability::Fsync);
        assert_eq!(next.shutdown_grace, Duration::from_secs(10));
        assert_eq!(next.heartbeat, Duration::from_secs(2));
        assert!(matches!(next.sources["heartbeat_secs"], Source::File(_)));
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].starts_with("durability changed in"), "{notes:?}");
        assert!(
            notes[1].starts_with("shutdown_grace_secs changed"),
            "{notes:?}"
        );
    }

    #[test]
    fn flag_texts_parse() {
        let mut c = Config::new("/r".into(), "/s".into());
        c.set("access.uids", "1,2, 3").unwrap();
        c.set("modules", "rag=/srv/rag,deploy=/d").unwrap();
        c.set("limits.payload", "10").unwrap();
        c.set("durability", "strict").unwrap();
        assert_eq!(c.durability, Durability::Strict);
        assert!(c.set("durability", "sometimes").is_err());
        assert_eq!(c.access.uids, [1, 2, 3]);
        assert_eq!(c.module_dirs.len(), 2);
        assert_eq!(c.limits.payload, 10);
        assert!(c.set("limits.payload", "ten").is_err());
        assert!(c.set("modules", "../x=/a").is_err());
        assert!(c.set("bogus", "1").is_err());
        c.set("access.groups", "root").unwrap();
        assert!(c.access.gids.contains(&0));
        assert!(c.set("access.groups", "no-such-group-here").is_err());
    }

    #[test]
    fn bad_files_name_themselves() {
        for bad in [
            "durability = 3",
            "durability = \"sometimes\"",
            "nonsense = 1",
            "[modules]\n\"../x\" = \"/a\"",
            "x =",
        ] {
            let err = load(Some(bad), Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(CONFIG_FILE), "{bad}: {err}");
        }
    }
}
