//! Targets (SPEC §7): `$TETRA_DIR/ttm/topology.json` maps `@symbol` to a
//! connector object; without the file a built-in topology applies.

use serde_json::{Map, Value, json};

use super::id::quote;
use super::{Error, Result};

/// A parsed topology: target symbol (with its `@`) → connector object.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    entries: Map<String, Value>,
    /// Where it came from, for error messages.
    source: String,
}

/// What `resolve` turns a target into.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The plan: the connector's `host`.
    pub plan: String,
    /// The whole connector entry.
    pub connector: Value,
}

impl Topology {
    /// `@local` on this host, `@dev`/`@staging`/`@prod` over ssh.
    pub fn builtin() -> Topology {
        let mut entries = Map::new();
        entries.insert(
            "@local".into(),
            json!({"type": "local", "host": "localhost"}),
        );
        for name in ["dev", "staging", "prod"] {
            entries.insert(
                format!("@{name}"),
                json!({"type": "ssh", "host": format!("{name}.local"), "user": "deploy"}),
            );
        }
        Topology {
            entries,
            source: "the built-in topology".into(),
        }
    }

    /// Parses a topology file's text; `path` names it in errors.
    pub fn from_json(text: &str, path: &str) -> Result<Topology, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("{path} is not valid JSON: {e}"))?;
        let Value::Object(entries) = value else {
            return Err(format!(
                "{path} must be one JSON object keyed by target symbol, like \
                 {{\"@staging\": {{\"type\": \"ssh\", \"host\": \"staging.local\"}}}}"
            ));
        };
        for (symbol, entry) in &entries {
            let host_ok = entry
                .get("host")
                .and_then(Value::as_str)
                .is_some_and(|h| !h.is_empty());
            if !symbol.starts_with('@') || !entry.is_object() || !host_ok {
                return Err(format!(
                    "{path}: entry {} must be keyed \"@name\" and be an object with a \
                     non-empty \"host\"",
                    quote(symbol)
                ));
            }
        }
        Ok(Topology {
            entries,
            source: path.to_string(),
        })
    }

    /// The connector entry of `target`. A target without `@` is a host
    /// already (connector `{type: host, host}`); an unknown `@name` is
    /// NOT_FOUND, naming the topology.
    pub fn connector(&self, target: &str) -> Result<Value> {
        validate_target(target)?;
        if target.starts_with('@') {
            return self.entries.get(target).cloned().ok_or_else(|| {
                Error::Unknown(format!(
                    "target {target} is not in {}; add it there or use a host name",
                    self.source
                ))
            });
        }
        Ok(json!({"type": "host", "host": target}))
    }

    /// Resolves `target` into a plan and connector.
    pub fn resolve(&self, target: &str) -> Result<Resolved> {
        let connector = self.connector(target)?;
        let plan = connector
            .get("host")
            .and_then(Value::as_str)
            .unwrap_or(target)
            .to_string();
        Ok(Resolved { plan, connector })
    }
}

/// Checks a target: `@name` or a host name, printable, at most 255 bytes.
pub fn validate_target(target: &str) -> Result<()> {
    let ok = !target.is_empty()
        && target.len() <= 255
        && target
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'\\');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid target {}: use @name or a host name (printable, no spaces or '/')",
            quote(target)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_resolves() {
        let t = Topology::builtin();
        assert_eq!(t.resolve("@staging").unwrap().plan, "staging.local");
        assert_eq!(t.resolve("@local").unwrap().plan, "localhost");
        assert_eq!(t.resolve("db1.example").unwrap().plan, "db1.example");
        let err = t.resolve("@nowhere").unwrap_err();
        assert!(
            matches!(err, Error::Unknown(ref m) if m.contains("@nowhere") && m.contains("built-in"))
        );
        assert!(matches!(t.resolve("a b"), Err(Error::Malformed(_))));
    }

    #[test]
    fn file_topology() {
        let t = Topology::from_json(
            r#"{"@edge": {"type": "ssh", "host": "edge1", "user": "ops", "port": 2222}}"#,
            "/t/topology.json",
        )
        .unwrap();
        let r = t.resolve("@edge").unwrap();
        assert_eq!(r.plan, "edge1");
        assert_eq!(r.connector["port"], 2222);
        let err = t.resolve("@staging").unwrap_err().to_string();
        assert!(err.contains("/t/topology.json"), "{err}");
        for bad in [
            "[",
            "[]",
            r#"{"edge": {"host": "x"}}"#,
            r#"{"@e": {"type": "ssh"}}"#,
        ] {
            let err = Topology::from_json(bad, "/t/topology.json").unwrap_err();
            assert!(err.contains("/t/topology.json"), "{bad}: {err}");
        }
    }
}
