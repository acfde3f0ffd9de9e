//! How a setting's value is read from a flag or variable (text) and from
//! `ttmd.toml` (a TOML value), and how `--print-config` shows it. One codec
//! per kind of value, so two settings of the same kind cannot disagree on
//! what they accept.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use toml::Value;

use crate::core::id;
use crate::store::Durability;

pub(super) trait Codec {
    type T: Clone + PartialEq;
    /// Whether the value is a TOML table of its own (`[modules]`) rather
    /// than a key, which changes how the README shows it.
    const TABLE: bool = false;
    /// From a flag or environment variable.
    fn text(v: &str) -> Result<Self::T, String>;
    /// From the config file.
    fn toml(v: &Value) -> Result<Self::T, String>;
    fn show(v: &Self::T) -> String;
    /// `--print-config` lines; a table shows one line per entry.
    fn lines(key: &str, v: &Self::T) -> Vec<(String, String)> {
        vec![(key.to_string(), Self::show(v))]
    }
}

fn expected(what: &str, v: &Value) -> String {
    format!("expected {what}, found {}", v.type_str())
}

fn string(v: &Value) -> Result<&str, String> {
    v.as_str().ok_or_else(|| expected("a string", v))
}

fn number<T: FromStr>(v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{v:?} is not a number"))
}

fn toml_number<T: TryFrom<i64>>(v: &Value) -> Result<T, String> {
    let n = v.as_integer().ok_or_else(|| expected("an integer", v))?;
    T::try_from(n).map_err(|_| format!("{n} is out of range"))
}

/// Comma-separated items, blanks skipped (`"1, 2,"` is two).
fn items(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|x| !x.is_empty())
}

fn array(v: &Value) -> Result<&[Value], String> {
    v.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| expected("an array", v))
}

pub(super) struct Path;
impl Codec for Path {
    type T = PathBuf;
    fn text(v: &str) -> Result<PathBuf, String> {
        Ok(PathBuf::from(v))
    }
    fn toml(v: &Value) -> Result<PathBuf, String> {
        string(v).map(PathBuf::from)
    }
    fn show(v: &PathBuf) -> String {
        v.display().to_string()
    }
}

/// A path that may be absent (`""` for none).
pub(super) struct OptPath;
impl Codec for OptPath {
    type T = Option<PathBuf>;
    fn text(v: &str) -> Result<Option<PathBuf>, String> {
        Ok((!v.is_empty()).then(|| PathBuf::from(v)))
    }
    fn toml(v: &Value) -> Result<Option<PathBuf>, String> {
        Self::text(string(v)?)
    }
    fn show(v: &Option<PathBuf>) -> String {
        v.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }
}

/// Where to serve metrics: a port (on 127.0.0.1), an address, or `""`
/// for nowhere.
pub(super) struct Listen;
impl Codec for Listen {
    type T = Option<std::net::SocketAddr>;
    fn text(v: &str) -> Result<Self::T, String> {
        if v.trim().is_empty() {
            return Ok(None);
        }
        crate::metrics::http::parse_listen(v).map(Some)
    }
    fn toml(v: &Value) -> Result<Self::T, String> {
        match v.as_integer() {
            Some(port) => Self::text(&port.to_string()),
            None => Self::text(string(v)?),
        }
    }
    fn show(v: &Self::T) -> String {
        v.map(|a| a.to_string()).unwrap_or_default()
    }
}

pub(super) struct Durable;
impl Codec for Durable {
    type T = Durability;
    fn text(v: &str) -> Result<Durability, String> {
        super::parse_durability(v)
    }
    fn toml(v: &Value) -> Result<Durability, String> {
        super::parse_durability(string(v)?)
    }
    fn show(v: &Durability) -> String {
        format!("{v:?}").to_lowercase()
    }
}

/// Whole seconds, at least `MIN` (a zero heartbeat would spin).
pub(super) struct Secs<const MIN: u64>;
impl<const MIN: u64> Codec for Secs<MIN> {
    type T = Duration;
    fn text(v: &str) -> Result<Duration, String> {
        Ok(Duration::from_secs(number::<u64>(v)?.max(MIN)))
    }
    fn toml(v: &Value) -> Result<Duration, String> {
        Ok(Duration::from_secs(toml_number::<u64>(v)?.max(MIN)))
    }
    fn show(v: &Duration) -> String {
        v.as_secs().to_string()
    }
}

pub(super) struct Num<N>(PhantomData<N>);
impl<N> Codec for Num<N>
where
    N: FromStr + TryFrom<i64> + ToString + Clone + PartialEq,
{
    type T = N;
    fn text(v: &str) -> Result<N, String> {
        number(v)
    }
    fn toml(v: &Value) -> Result<N, String> {
        toml_number(v)
    }
    fn show(v: &N) -> String {
        v.to_string()
    }
}

/// A count from `MIN` to `MAX`: a size that allocates or spawns by it
/// (`hooks.queue`, `hooks.concurrency`), so an absurd value is refused at
/// start rather than exhausting memory or panicking.
pub(super) struct Bounded<const MIN: usize, const MAX: usize>;
impl<const MIN: usize, const MAX: usize> Bounded<MIN, MAX> {
    fn check(n: usize) -> Result<usize, String> {
        if (MIN..=MAX).contains(&n) {
            Ok(n)
        } else {
            Err(format!("{n} is out of range: use {MIN} to {MAX}"))
        }
    }
}
impl<const MIN: usize, const MAX: usize> Codec for Bounded<MIN, MAX> {
    type T = usize;
    fn text(v: &str) -> Result<usize, String> {
        let n: u128 = number(v)?;
        Self::check(usize::try_from(n).unwrap_or(usize::MAX))
    }
    fn toml(v: &Value) -> Result<usize, String> {
        let n = v.as_integer().ok_or_else(|| expected("an integer", v))?;
        match usize::try_from(n) {
            Ok(n) => Self::check(n),
            Err(_) => Err(format!("{n} is out of range: use {MIN} to {MAX}")),
        }
    }
    fn show(v: &usize) -> String {
        v.to_string()
    }
}

/// Numeric ids: `1,2,3` or `[1, 2, 3]`.
pub(super) struct Ids;
impl Codec for Ids {
    type T = Vec<u32>;
    fn text(v: &str) -> Result<Vec<u32>, String> {
        items(v).map(number).collect()
    }
    fn toml(v: &Value) -> Result<Vec<u32>, String> {
        array(v)?.iter().map(toml_number).collect()
    }
    fn show(v: &Vec<u32>) -> String {
        format!("{v:?}")
    }
}

/// Names: `a,b` or `["a", "b"]`.
pub(super) struct Names;
impl Codec for Names {
    type T = Vec<String>;
    fn text(v: &str) -> Result<Vec<String>, String> {
        Ok(items(v).map(str::to_string).collect())
    }
    fn toml(v: &Value) -> Result<Vec<String>, String> {
        array(v)?
            .iter()
            .map(|x| string(x).map(str::to_string))
            .collect()
    }
    fn show(v: &Vec<String>) -> String {
        format!("{v:?}")
    }
}

/// `1`, `true` or `yes` is true; any other text false, as it always was.
pub(super) struct Yes;
impl Codec for Yes {
    type T = bool;
    fn text(v: &str) -> Result<bool, String> {
        Ok(matches!(v, "1" | "true" | "yes"))
    }
    fn toml(v: &Value) -> Result<bool, String> {
        v.as_bool().ok_or_else(|| expected("true or false", v))
    }
    fn show(v: &bool) -> String {
        v.to_string()
    }
}

/// Module directories: `name=dir,name=dir` or a `[modules]` table. Names
/// are checked here because they become paths.
pub(super) struct Dirs;
impl Codec for Dirs {
    type T = BTreeMap<String, PathBuf>;
    const TABLE: bool = true;
    fn text(v: &str) -> Result<Self::T, String> {
        items(v)
            .map(|pair| {
                let (name, dir) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("{pair:?} is not NAME=DIR"))?;
                module(name.trim(), PathBuf::from(dir.trim()))
            })
            .collect()
    }
    fn toml(v: &Value) -> Result<Self::T, String> {
        let table = v.as_table().ok_or_else(|| expected("a table", v))?;
        table
            .iter()
            .map(|(name, dir)| module(name, PathBuf::from(string(dir)?)))
            .collect()
    }
    fn show(v: &Self::T) -> String {
        format!("{v:?}")
    }
    fn lines(key: &str, v: &Self::T) -> Vec<(String, String)> {
        v.iter()
            .map(|(name, dir)| (format!("{key}.{name}"), dir.display().to_string()))
            .collect()
    }
}

fn module(name: &str, dir: PathBuf) -> Result<(String, PathBuf), String> {
    id::validate_module(name).map_err(|e| e.to_string())?;
    Ok((name.to_string(), dir))
}

/// A host id (SPEC §16): it becomes an etcd key segment, so no `/` and
/// nothing a person could mistake; empty means "the host name".
pub(super) struct HostId;
impl Codec for HostId {
    type T = String;
    fn text(v: &str) -> Result<String, String> {
        let v = v.trim();
        let fine = v.len() <= 64
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if fine {
            Ok(v.to_string())
        } else {
            Err(format!(
                "{v:?} is not a host id: use up to 64 letters, digits, '.', '-' or '_'"
            ))
        }
    }
    fn toml(v: &Value) -> Result<String, String> {
        HostId::text(string(v)?)
    }
    fn show(v: &String) -> String {
        format!("{v:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_queue_and_concurrency_are_bounded() {
        type Queue = Bounded<1, 1_000_000>;
        assert_eq!(Queue::text("1000"), Ok(1000));
        assert_eq!(Queue::text("1000000"), Ok(1_000_000));
        let huge = Queue::text("9999999999999999999").unwrap_err();
        assert!(huge.contains("out of range: use 1 to 1000000"), "{huge}");
        assert!(Queue::text("0").is_err());
        assert!(Queue::text("-1").is_err());
        assert!(Queue::toml(&Value::Integer(-5)).is_err());
        assert_eq!(Queue::toml(&Value::Integer(5)), Ok(5));
        type Slots = Bounded<1, 1024>;
        assert_eq!(Slots::text("1024"), Ok(1024));
        assert!(Slots::text("1025").unwrap_err().contains("use 1 to 1024"));
    }
}
