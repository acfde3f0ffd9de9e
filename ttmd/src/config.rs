//! What a daemon needs to know to serve a tree, and where each setting came
//! from. Every setting has a default; the config file (`<root>/ttmd.toml`,
//! or `--config`) overrides defaults; flags and environment variables
//! override the file. `main` fills the flag layer, [`Config::load`] the rest.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::core::{Error, Result, id};
use crate::store::Durability;

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
    /// Where each setting came from, for `--print-config`.
    pub sources: BTreeMap<&'static str, Source>,
    /// The flags and environment given at start, which a reload applies
    /// over the re-read file again.
    pub overrides: Overrides,
}

/// Size limits; each refusal names the limit it hit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
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
        }
    }
}

/// Peers allowed besides the daemon's own uid.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
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

/// The config file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    socket: Option<PathBuf>,
    durability: Option<String>,
    heartbeat_secs: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    limits: Option<Limits>,
    access: Option<Access>,
    modules: Option<BTreeMap<String, PathBuf>>,
}

/// Values given on the command line or in the environment, which beat the
/// config file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--config`: the file to read instead of `<root>/ttmd.toml`.
    pub config_file: Option<PathBuf>,
    /// (setting, value as text, where it came from), applied in order; keys
    /// are those of [`Config::set`].
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
            config_file: None,
            config_path: None,
            reload_on_sighup: false,
            shutdown_grace: Duration::from_secs(10),
            sources: BTreeMap::new(),
            overrides: Overrides::default(),
        }
    }

    /// Builds the effective config for `root`: defaults, then the config
    /// file (`overrides.config_file`, else `<root>/ttmd.toml` if present),
    /// then flags/environment.
    pub fn load(root: PathBuf, overrides: &Overrides) -> Result<Config> {
        let explicit = overrides.config_file.clone();
        let path = explicit.clone().unwrap_or_else(|| root.join(CONFIG_FILE));
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => Some(parse_file(&text, &path)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => None,
            Err(e) => return Err(Error::io("reading config file", &path, e)),
        };
        Config::assemble(root, path, file, overrides)
    }

    /// Defaults, then `file` (read from `path`), then `overrides`.
    fn assemble(
        root: PathBuf,
        path: PathBuf,
        file: Option<File>,
        overrides: &Overrides,
    ) -> Result<Config> {
        let socket = ttm_proto::paths::default_socket(&root);
        let mut c = Config::new(root, socket);
        c.config_path = Some(path.clone());
        c.overrides = overrides.clone();
        if let Some(f) = file {
            c.config_file = Some(path.clone());
            c.apply_file(f, &Source::File(path))?;
        }
        for (key, value, source) in &overrides.settings {
            c.set(key, value)
                .map_err(|m| Error::invalid(format!("{key} from {source}: {m}")))?;
            c.sources.insert(key, source.clone());
        }
        Ok(c)
    }

    /// Sets one setting from text, as a flag or environment variable gives
    /// it. Lists are comma-separated; modules are `name=dir,name=dir`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        fn num<T: std::str::FromStr>(v: &str) -> Result<T, String> {
            v.trim()
                .parse()
                .map_err(|_| format!("{v:?} is not a number"))
        }
        fn list(v: &str) -> Result<Vec<u32>, String> {
            v.split(',')
                .filter(|x| !x.trim().is_empty())
                .map(num)
                .collect()
        }
        match key {
            "socket" => self.socket = PathBuf::from(value),
            "durability" => self.durability = parse_durability(value)?,
            "heartbeat_secs" => self.heartbeat = Duration::from_secs(num::<u64>(value)?.max(1)),
            "shutdown_grace_secs" => self.shutdown_grace = Duration::from_secs(num(value)?),
            "limits.description" => self.limits.description = num(value)?,
            "limits.payload" => self.limits.payload = num(value)?,
            "limits.ctx_file" => self.limits.ctx_file = num(value)?,
            "limits.ctx_files" => self.limits.ctx_files = num(value)?,
            "limits.streams_total" => self.limits.streams_total = num(value)?,
            "limits.streams_per_client" => self.limits.streams_per_client = num(value)?,
            "limits.request_bytes" => self.limits.request_bytes = num(value)?,
            "access.uids" => self.access.uids = list(value)?,
            "access.gids" => self.access.gids.extend(list(value)?),
            "access.groups" => {
                for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    self.access.gids.push(group_id(name)?);
                    self.access.groups.push(name.to_string());
                }
            }
            "access.allow_root" => {
                self.access.allow_root = matches!(value, "1" | "true" | "yes");
            }
            "modules" => {
                for pair in value.split(',').filter(|p| !p.trim().is_empty()) {
                    let (name, dir) = pair
                        .split_once('=')
                        .ok_or_else(|| format!("{pair:?} is not NAME=DIR"))?;
                    id::validate_module(name.trim()).map_err(|e| e.to_string())?;
                    self.module_dirs
                        .insert(name.trim().to_string(), PathBuf::from(dir.trim()));
                }
            }
            other => return Err(format!("unknown setting {other}")),
        }
        Ok(())
    }

    fn apply_file(&mut self, f: File, src: &Source) -> Result<()> {
        let from_file = |c: &mut Config, key: &'static str| {
            c.sources.insert(key, src.clone());
        };
        if let Some(s) = f.socket {
            self.socket = s;
            from_file(self, "socket");
        }
        if let Some(d) = f.durability {
            self.durability = parse_durability(&d).map_err(|m| self.file_error(src, m))?;
            from_file(self, "durability");
        }
        if let Some(h) = f.heartbeat_secs {
            self.heartbeat = Duration::from_secs(h.max(1));
            from_file(self, "heartbeat_secs");
        }
        if let Some(g) = f.shutdown_grace_secs {
            self.shutdown_grace = Duration::from_secs(g);
            from_file(self, "shutdown_grace_secs");
        }
        if let Some(l) = f.limits {
            self.limits = l;
            from_file(self, "limits");
        }
        if let Some(mut a) = f.access {
            for name in std::mem::take(&mut a.groups) {
                let gid = group_id(&name).map_err(|m| self.file_error(src, m))?;
                a.gids.push(gid);
                a.groups.push(name);
            }
            self.access = a;
            from_file(self, "access");
        }
        if let Some(m) = f.modules {
            for name in m.keys() {
                id::validate_module(name).map_err(|e| self.file_error(src, e.to_string()))?;
            }
            self.module_dirs = m;
            from_file(self, "modules");
        }
        Ok(())
    }

    fn file_error(&self, src: &Source, message: String) -> Error {
        match src {
            Source::File(path) => Error::Corrupt {
                path: path.clone(),
                message,
            },
            _ => Error::invalid(message),
        }
    }

    /// Re-reads the config file for a reload: returns the new config with
    /// the settings that can change while running (limits, access,
    /// heartbeat, shutdown grace) taken from the file and then, as at
    /// start, from the flags and environment; and a line for each setting
    /// that changed but needs a restart.
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
        let file = parse_file(&text, path)?;
        let fresh = Config::assemble(self.root.clone(), path.clone(), Some(file), &self.overrides)?;
        let mut next = self.clone();
        next.config_file = Some(path.clone());
        next.limits = fresh.limits;
        next.access = fresh.access;
        next.heartbeat = fresh.heartbeat;
        next.shutdown_grace = fresh.shutdown_grace;
        let mut notes = Vec::new();
        let fixed = [
            (
                "socket",
                fresh.sources.contains_key("socket") && fresh.socket != self.socket,
            ),
            (
                "durability",
                fresh.sources.contains_key("durability") && fresh.durability != self.durability,
            ),
            ("modules", fresh.module_dirs != self.module_dirs),
        ];
        for (key, changed) in fixed {
            if changed {
                notes.push(format!(
                    "{key} changed in {}; it takes effect at restart",
                    path.display()
                ));
            }
        }
        Ok((next, notes))
    }

    /// The effective settings and where each came from, one per line.
    pub fn describe(&self) -> String {
        let src = |k: &str| {
            self.sources
                .get(k)
                .map(ToString::to_string)
                .unwrap_or_else(|| "default".into())
        };
        let mut out = String::new();
        let mut line = |k: &str, v: String, s: String| {
            let _ = writeln!(out, "{k:<20} {v:<44} ({s})");
        };
        line("root", self.root.display().to_string(), src("root"));
        line("socket", self.socket.display().to_string(), src("socket"));
        line(
            "durability",
            format!("{:?}", self.durability).to_lowercase(),
            src("durability"),
        );
        line(
            "heartbeat_secs",
            self.heartbeat.as_secs().to_string(),
            src("heartbeat_secs"),
        );
        line(
            "shutdown_grace_secs",
            self.shutdown_grace.as_secs().to_string(),
            src("shutdown_grace_secs"),
        );
        let either = |a: &str, b: &str| {
            if self.sources.contains_key(a) {
                src(a)
            } else {
                src(b)
            }
        };
        line(
            "limits.description",
            self.limits.description.to_string(),
            either("limits.description", "limits"),
        );
        line(
            "limits.payload",
            self.limits.payload.to_string(),
            either("limits.payload", "limits"),
        );
        line(
            "limits.ctx_file",
            self.limits.ctx_file.to_string(),
            either("limits.ctx_file", "limits"),
        );
        for (key, value) in [
            ("limits.ctx_files", self.limits.ctx_files),
            ("limits.streams_total", self.limits.streams_total),
            ("limits.streams_per_client", self.limits.streams_per_client),
            ("limits.request_bytes", self.limits.request_bytes),
        ] {
            line(key, value.to_string(), either(key, "limits"));
        }
        line(
            "access.uids",
            format!("{:?}", self.access.uids),
            either("access.uids", "access"),
        );
        line(
            "access.gids",
            format!("{:?}", self.access.gids),
            either("access.gids", "access"),
        );
        line(
            "access.groups",
            format!("{:?}", self.access.groups),
            either("access.groups", "access"),
        );
        line(
            "access.allow_root",
            self.access.allow_root.to_string(),
            either("access.allow_root", "access"),
        );
        for (name, dir) in &self.module_dirs {
            line(
                &format!("modules.{name}"),
                dir.display().to_string(),
                src("modules"),
            );
        }
        line(
            "config_file",
            self.config_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(none)".into()),
            "".into(),
        );
        out
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

fn parse_file(text: &str, path: &Path) -> Result<File> {
    toml::from_str(text).map_err(|e| Error::Corrupt {
        path: path.to_path_buf(),
        message: format!("invalid config: {}", e.to_string().trim()),
    })
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
