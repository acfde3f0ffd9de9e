//! The one table of ttmd's settings. Each row is the whole truth about one
//! setting: its `ttmd.toml` key (also its `--print-config` name), flag,
//! environment variable, `--help` text, whether a reload re-reads it, and
//! its README line. The command line ([`super::SettingFlags`]), the file
//! reader, `--print-config`, the reload and the README block are all
//! driven from here, so a setting cannot be known to one and not another.
//!
//! Adding a setting: add the field to [`Config`] (with its default in
//! `Config::new`), then a row below naming the field in `field!`.

use super::Config;
use super::codec::{
    Bounded, Codec, Dirs, Durable, HostId, Ids, Listen, Names, Num, OptPath, Path, Secs, Yes,
};

/// What a SIGHUP reload does with a setting changed in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The daemon reads the new value on every use.
    Live,
    /// The daemon keeps the value it started with and says so.
    Restart,
}

/// One setting.
#[derive(Debug)]
pub struct Setting {
    /// The key in `ttmd.toml`, dotted for keys under a `[section]`.
    pub key: &'static str,
    /// The long flag, without `--`.
    pub flag: &'static str,
    pub env: &'static str,
    pub value_name: &'static str,
    /// `--help` text.
    pub help: &'static str,
    pub reload: Reload,
    /// The value shown in the README's sample file (TOML), or for a table
    /// setting the sample entry.
    pub example: &'static str,
    /// Said after the flag and variable in the README sample.
    pub note: &'static str,
    pub(super) ops: Ops,
}

/// What to do with the field a row sets; `field!` writes these.
#[derive(Debug)]
pub(super) struct Ops {
    pub text: fn(&mut Config, &str) -> Result<(), String>,
    pub toml: fn(&mut Config, &toml::Value) -> Result<(), String>,
    pub lines: fn(&Config, &str) -> Vec<(String, String)>,
    pub copy: fn(&mut Config, &Config),
    pub same: fn(&Config, &Config) -> bool,
    pub table: bool,
}

/// The [`Ops`] of the field at `path` in [`Config`], read with `codec`.
macro_rules! field {
    ($codec:ty => $($path:ident).+) => {
        Ops {
            text: |c, v| {
                c.$($path).+ = <$codec>::text(v)?;
                Ok(())
            },
            toml: |c, v| {
                c.$($path).+ = <$codec>::toml(v)?;
                Ok(())
            },
            lines: |c, key| <$codec>::lines(key, &c.$($path).+),
            copy: |to, from| to.$($path).+ = from.$($path).+.clone(),
            same: |a, b| a.$($path).+ == b.$($path).+,
            table: <$codec>::TABLE,
        }
    };
}

/// Groups are kept by name and also resolved into `access.gids`, which is
/// what the access check reads; that is why `access.groups` must come after
/// `access.gids` in the table (a test holds it there).
const GROUPS: Ops = Ops {
    text: |c, v| add_groups(c, Names::text(v)?),
    toml: |c, v| add_groups(c, Names::toml(v)?),
    ..field!(Names => access.groups)
};

fn add_groups(c: &mut Config, names: Vec<String>) -> Result<(), String> {
    for name in &names {
        let gid = super::group_id(name)?;
        if !c.access.gids.contains(&gid) {
            c.access.gids.push(gid);
        }
    }
    c.access.groups = names;
    Ok(())
}

/// Comments on the `[section]` lines of the README sample.
pub const SECTIONS: &[(&str, &str)] = &[
    ("access", "besides the daemon's own uid"),
    ("hooks", "executables run after events (README, \"Hooks\")"),
];

/// Every setting, in `--help`, `--print-config` and README order.
pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "socket",
        flag: "socket",
        env: "TTM_SOCKET",
        value_name: "PATH",
        help: "The socket to listen on [default: $XDG_RUNTIME_DIR/ttm/ttmd.sock, \
               else <root>/run/ttmd.sock]. Ignored under socket activation",
        reload: Reload::Restart,
        example: "\"/run/ttm/ttmd.sock\"",
        note: "",
        ops: field!(Path => socket),
    },
    Setting {
        key: "durability",
        flag: "durability",
        env: "TTM_DURABILITY",
        value_name: "fsync|strict|none",
        help: "`fsync` (default): a change is acknowledged only once its log line is on \
               disk (state.json, a view of the log, is synced within a second). `strict`: \
               state.json is synced before the answer too. `none`: faster, but a crash or \
               power cut may lose acknowledged changes",
        reload: Reload::Restart,
        example: "\"fsync\"",
        note: "(\"strict\": also sync state.json before answering; \"none\": faster, \
               may lose acknowledged writes on a crash)",
        ops: field!(Durable => durability),
    },
    Setting {
        key: "heartbeat_secs",
        flag: "heartbeat-secs",
        env: "TTM_HEARTBEAT_SECS",
        value_name: "SECS",
        help: "Seconds between heartbeats on idle streams [default: 10]",
        reload: Reload::Live,
        example: "10",
        note: "",
        ops: field!(Secs<1> => heartbeat),
    },
    Setting {
        key: "shutdown_grace_secs",
        flag: "shutdown-grace-secs",
        env: "TTM_SHUTDOWN_GRACE_SECS",
        value_name: "SECS",
        help: "Seconds shutdown waits for in-flight requests [default: 10]",
        // `run` reads it once, before serving.
        reload: Reload::Restart,
        example: "10",
        note: "",
        ops: field!(Secs<0> => shutdown_grace),
    },
    Setting {
        key: "metrics_listen",
        flag: "metrics-listen",
        env: "TTM_METRICS_LISTEN",
        value_name: "ADDR",
        help: "Serve GET /metrics (Prometheus text format) over HTTP here: a port \
               (9464) listens on 127.0.0.1; an address (0.0.0.0:9464) as given, so only \
               an explicit address exposes it beyond this host [default: off]",
        reload: Reload::Restart,
        example: "\"127.0.0.1:9464\"",
        note: "",
        ops: field!(Listen => metrics_listen),
    },
    Setting {
        key: "hooks.dir",
        flag: "hooks-dir",
        env: "TTM_HOOKS_DIR",
        value_name: "DIR",
        help: "Hooks for every module (on-commit, on-fail, …), used where \
               <module>/hooks/ has none of that name [default: none]",
        reload: Reload::Restart,
        example: "\"/etc/ttm/hooks\"",
        note: "",
        ops: field!(OptPath => hooks.dir),
    },
    Setting {
        key: "hooks.concurrency",
        flag: "hooks-concurrency",
        env: "TTM_HOOKS_CONCURRENCY",
        value_name: "N",
        help: "Hooks running at once, 1 to 1024 [default: 4]",
        reload: Reload::Restart,
        example: "4",
        note: "",
        ops: field!(Bounded<1, 1024> => hooks.concurrency),
    },
    Setting {
        key: "hooks.queue",
        flag: "hooks-queue",
        env: "TTM_HOOKS_QUEUE",
        value_name: "N",
        help: "Hook runs waiting for a free slot; when full, an event's hook is not run \
               (logged, counted in ttm_hooks_dropped_total); 1 to 1000000 [default: 1000]",
        reload: Reload::Restart,
        example: "1000",
        note: "",
        ops: field!(Bounded<1, 1_000_000> => hooks.queue),
    },
    Setting {
        key: "hooks.timeout_secs",
        flag: "hooks-timeout-secs",
        env: "TTM_HOOKS_TIMEOUT_SECS",
        value_name: "SECS",
        help: "Seconds a hook may run before its process group is killed [default: 60]",
        reload: Reload::Restart,
        example: "60",
        note: "",
        ops: field!(Secs<1> => hooks.timeout),
    },
    Setting {
        key: "hooks.output_bytes",
        flag: "hooks-output-bytes",
        env: "TTM_HOOKS_OUTPUT_BYTES",
        value_name: "BYTES",
        help: "Bytes of a hook's stdout, and of its stderr, kept for the daemon's log \
               [default: 16384]",
        reload: Reload::Restart,
        example: "16384",
        note: "",
        ops: field!(Num<usize> => hooks.output),
    },
    Setting {
        key: "cluster",
        flag: "cluster",
        env: "TTM_CLUSTER",
        value_name: "ENDPOINTS",
        help: "Cluster mode: the etcd endpoints (http://HOST:PORT, comma-separated). \
               Transactions stay on this host's tree and are mirrored to etcd; every \
               host's show in list, watch and top [default: none, one host without etcd]",
        reload: Reload::Restart,
        example: "[\"http://etcd1:2379\", \"http://etcd2:2379\", \"http://etcd3:2379\"]",
        note: "(see docs/cluster.md)",
        ops: field!(Names => cluster),
    },
    Setting {
        key: "host_id",
        flag: "host-id",
        env: "TTM_HOST_ID",
        value_name: "ID",
        help: "This host's id in the cluster: letters, digits, '.', '-', '_' \
               [default: the host name]",
        reload: Reload::Restart,
        example: "\"ci-runner-1\"",
        note: "",
        ops: field!(HostId => host_id),
    },
    Setting {
        key: "limits.description",
        flag: "limit-description",
        env: "TTM_LIMIT_DESCRIPTION",
        value_name: "BYTES",
        help: "Largest description in bytes [default: 65536]",
        reload: Reload::Live,
        example: "65536",
        note: "",
        ops: field!(Num<usize> => limits.description),
    },
    Setting {
        key: "limits.payload",
        flag: "limit-payload",
        env: "TTM_LIMIT_PAYLOAD",
        value_name: "BYTES",
        help: "Largest JSON payload (update, event data) in bytes [default: 1 MiB]",
        reload: Reload::Live,
        example: "1048576",
        note: "",
        ops: field!(Num<usize> => limits.payload),
    },
    Setting {
        key: "limits.state",
        flag: "limit-state",
        env: "TTM_LIMIT_STATE",
        value_name: "BYTES",
        help: "Largest state.json in bytes; a change that would pass it is refused \
               [default: 1 MiB]. Replies carry the state, so keep it well under 4 MiB, \
               what gRPC clients accept by default",
        reload: Reload::Live,
        example: "1048576",
        note: "",
        ops: field!(Num<usize> => limits.state),
    },
    Setting {
        key: "limits.ctx_file",
        flag: "limit-ctx-file",
        env: "TTM_LIMIT_CTX_FILE",
        value_name: "BYTES",
        help: "Largest ctx file in bytes [default: 16 GiB]",
        reload: Reload::Live,
        example: "17179869184",
        note: "",
        ops: field!(Num<u64> => limits.ctx_file),
    },
    Setting {
        key: "limits.ctx_files",
        flag: "limit-ctx-files",
        env: "TTM_LIMIT_CTX_FILES",
        value_name: "N",
        help: "Most ctx files in one transaction [default: 10000]",
        reload: Reload::Live,
        example: "10000",
        note: "(per transaction)",
        ops: field!(Num<usize> => limits.ctx_files),
    },
    Setting {
        key: "limits.streams_total",
        flag: "limit-streams-total",
        env: "TTM_LIMIT_STREAMS_TOTAL",
        value_name: "N",
        help: "Most open Events/Watch streams in total [default: 1024]",
        reload: Reload::Live,
        example: "1024",
        note: "",
        ops: field!(Num<usize> => limits.streams_total),
    },
    Setting {
        key: "limits.streams_per_client",
        flag: "limit-streams-per-client",
        env: "TTM_LIMIT_STREAMS_PER_CLIENT",
        value_name: "N",
        help: "Most open Events/Watch streams per client process [default: 64]",
        reload: Reload::Live,
        example: "64",
        note: "",
        ops: field!(Num<usize> => limits.streams_per_client),
    },
    Setting {
        key: "limits.request_bytes",
        flag: "limit-request-bytes",
        env: "TTM_LIMIT_REQUEST_BYTES",
        value_name: "BYTES",
        help: "Largest request message in bytes [default: 4 MiB]",
        // Checked per request, but the transport's cap (twice the value at
        // start) is fixed until a restart.
        reload: Reload::Live,
        example: "4194304",
        note: "(raising it past twice its value at start needs a restart)",
        ops: field!(Num<usize> => limits.request_bytes),
    },
    Setting {
        key: "limits.connections_per_uid",
        flag: "limit-connections-per-uid",
        env: "TTM_LIMIT_CONNECTIONS_PER_UID",
        value_name: "N",
        help: "Most open connections of one peer uid [default: 1024]. At the limit the \
               longest-idle connection of that uid (no request, no open stream) is closed to \
               make room; if none is idle the new one is closed at once",
        reload: Reload::Live,
        example: "1024",
        note: "",
        ops: field!(Num<usize> => limits.connections_per_uid),
    },
    Setting {
        key: "limits.connections_total",
        flag: "limit-connections-total",
        env: "TTM_LIMIT_CONNECTIONS_TOTAL",
        value_name: "N",
        help: "Most open connections in total [default: 4096]; lowered to fit the open-file \
               limit, which ttmd raises to its hard limit at start",
        reload: Reload::Live,
        example: "4096",
        note: "",
        ops: field!(Num<usize> => limits.connections_total),
    },
    Setting {
        key: "limits.idle_secs",
        flag: "limit-idle-secs",
        env: "TTM_LIMIT_IDLE_SECS",
        value_name: "SECS",
        help: "Seconds after which a connection with no request and no open stream is \
               closed [default: 300]",
        reload: Reload::Live,
        example: "300",
        note: "",
        ops: field!(Secs<1> => limits.idle),
    },
    Setting {
        key: "access.uids",
        flag: "allow-uids",
        env: "TTM_ALLOW_UIDS",
        value_name: "UIDS",
        help: "Further uids allowed to call, comma-separated",
        reload: Reload::Live,
        example: "[1001]",
        note: "",
        ops: field!(Ids => access.uids),
    },
    Setting {
        key: "access.gids",
        flag: "allow-gids",
        env: "TTM_ALLOW_GIDS",
        value_name: "GIDS",
        help: "Groups (gids) whose members may call, comma-separated",
        reload: Reload::Live,
        example: "[2000]",
        note: "",
        ops: field!(Ids => access.gids),
    },
    Setting {
        key: "access.groups",
        flag: "allow-groups",
        env: "TTM_ALLOW_GROUPS",
        value_name: "NAMES",
        help: "Groups by name whose members may call, comma-separated",
        reload: Reload::Live,
        example: "[\"ttm\"]",
        note: "(names from /etc/group)",
        ops: GROUPS,
    },
    Setting {
        key: "access.allow_root",
        flag: "allow-root",
        env: "TTM_ALLOW_ROOT",
        value_name: "BOOL",
        help: "Let root call a daemon running as another user (true/false)",
        reload: Reload::Live,
        example: "false",
        note: "",
        ops: field!(Yes => access.allow_root),
    },
    Setting {
        key: "modules",
        flag: "module-dirs",
        env: "TTM_MODULE_DIRS",
        value_name: "NAME=DIR,...",
        help: "Modules kept outside the root: NAME=DIR,NAME=DIR",
        reload: Reload::Restart,
        example: "rag = \"/srv/rag\"",
        note: "(\"rag=/srv/rag,…\"): keep a module's txns/ outside the root",
        ops: field!(Dirs => module_dirs),
    },
];

/// The row of `key`.
pub fn setting(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// Whether `name` is a `[section]` of the file.
pub(super) fn is_section(name: &str) -> bool {
    SETTINGS.iter().any(|s| {
        s.key
            .split_once('.')
            .is_some_and(|(section, _)| section == name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn settings_names_are_unique_and_well_formed() {
        for (what, name) in [
            ("key", (|s: &Setting| s.key) as fn(&Setting) -> &str),
            ("flag", |s| s.flag),
            ("env", |s| s.env),
        ] {
            let mut seen = BTreeSet::new();
            for s in SETTINGS {
                assert!(
                    seen.insert(name(s)),
                    "two settings share the {what} {}",
                    name(s)
                );
            }
        }
        for s in SETTINGS {
            assert!(s.env.starts_with("TTM_"), "{}: env {}", s.key, s.env);
            assert!(!s.flag.contains('_'), "{}: flags use dashes", s.key);
            assert!(!s.help.is_empty(), "{}: no --help text", s.key);
            assert!(s.key.matches('.').count() <= 1, "{}: one level only", s.key);
        }
    }

    #[test]
    fn groups_come_after_gids() {
        let at = |k: &str| SETTINGS.iter().position(|s| s.key == k);
        assert!(at("access.gids") < at("access.groups"));
    }

    /// A `[default: N]` in `--help` must be the default `Config::new` sets.
    #[test]
    fn numeric_defaults_in_help_are_the_real_ones() {
        let c = Config::new("/r".into(), "/s".into());
        for s in SETTINGS {
            let Some((_, rest)) = s.help.split_once("[default: ") else {
                continue;
            };
            let said = rest.split(']').next().unwrap_or_default();
            if said.parse::<u64>().is_ok() {
                let real = (s.ops.lines)(&c, s.key);
                assert_eq!(real[0].1, said, "{}: --help says {said}", s.key);
            }
        }
    }

    /// The README's sample values must be ones the file accepts.
    #[test]
    fn every_example_is_a_valid_file_value() {
        for s in SETTINGS {
            let text = if s.ops.table {
                format!("[x]\n{}\n", s.example)
            } else {
                format!("x = {}\n", s.example)
            };
            let table: toml::Table = text.parse().unwrap_or_else(|e| panic!("{}: {e}", s.key));
            let mut c = Config::new("/r".into(), "/s".into());
            if s.key != "access.groups" {
                (s.ops.toml)(&mut c, &table["x"]).unwrap_or_else(|e| panic!("{}: {e}", s.key));
            }
        }
    }
}
