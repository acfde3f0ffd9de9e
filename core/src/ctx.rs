//! Context/evidence naming, numbering and the ctx digest (SPEC §6).
//!
//! Stored names are `<number>_<name><ext>`: 000 and 010 are written at
//! create, user evidence starts at 100 and goes up by 10 (100, 110, … 990,
//! 1000, 1010, …). Files numbered 100 and up are `$e1`, `$e2`, … in numeric
//! order.

use sha2::{Digest, Sha256};

use super::id::{quote, slug};
use super::{Error, Result};

/// The ctx file written at create holding the module's policy.
pub const POLICY_FILE: &str = "000_policy.md";
/// The ctx file written at create holding the request.
pub const REQUEST_FILE: &str = "010_request.md";
/// First number of user evidence.
pub const FIRST_EVIDENCE: u64 = 100;
/// Longest `<name>` part taken from a description or file stem.
pub const NAME_MAX: usize = 40;
/// Longest extension (dots included) kept from a source file name.
pub const EXT_MAX: usize = 24;
/// Longest source file name accepted.
pub const FILE_NAME_MAX: usize = 255;

/// One file of ctx/, as the digest sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// File name in ctx/.
    pub name: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Lower-case hex sha256 of its content.
    pub sha256: String,
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// Hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// The ctx digest: sha256 over the entries sorted by name (byte order), each
/// contributing `name NUL decimal-length NUL hex-sha256 LF`. Two hosts with
/// the same ctx/ files compute the same digest.
pub fn digest(entries: &[Entry]) -> String {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut h = Sha256::new();
    for e in sorted {
        h.update(e.name.as_bytes());
        h.update([0]);
        h.update(e.bytes.to_string().as_bytes());
        h.update([0]);
        h.update(e.sha256.as_bytes());
        h.update(b"\n");
    }
    hex(&h.finalize())
}

/// The number a ctx file name starts with (`110_x.txt` → 110), if any.
pub fn number_of(name: &str) -> Option<u64> {
    let (digits, _) = name.split_once('_')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The number for the next evidence file: the next multiple of 10 above the
/// highest number in use, and at least 100. Taking the number above the
/// highest (not the lowest gap) keeps `$eN` in the order files were added.
/// `None` when a (planted) file's number leaves no number above it.
pub fn next_number<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<u64> {
    let highest = names.into_iter().filter_map(number_of).max();
    match highest {
        Some(n) if n >= FIRST_EVIDENCE => (n / 10).checked_add(1)?.checked_mul(10),
        _ => Some(FIRST_EVIDENCE),
    }
}

/// Formats a ctx number: at least three digits (`000`, `010`, `100`, `1000`).
pub fn format_number(n: u64) -> String {
    format!("{n:03}")
}

/// Splits a source file's base name into stem and whole extension:
/// `app.tar.gz` → (`app`, `.tar.gz`); leading dots belong to the stem.
fn split_name(file_name: &str) -> (&str, &str) {
    let lead = file_name.len() - file_name.trim_start_matches('.').len();
    match file_name[lead..].find('.') {
        Some(i) => file_name.split_at(lead + i),
        None => (file_name, ""),
    }
}

/// Checks a source file's base name as a client sent it: a name, never a
/// path.
pub fn validate_source_name(file_name: &str) -> Result<()> {
    let bad = file_name.len() > FILE_NAME_MAX
        || file_name.contains('/')
        || file_name.contains('\0')
        || file_name == "."
        || file_name == "..";
    if bad {
        return Err(Error::invalid(format!(
            "invalid ctx file name {}: send the file's base name (no '/', NUL, '.' or '..', \
             at most {FILE_NAME_MAX} bytes)",
            quote(file_name)
        )));
    }
    Ok(())
}

/// The stored name for evidence number `number`: `<number>_<name><ext>`
/// where `<name>` is the slugged description, else the slugged stem of the
/// source file, else `evidence`; `<ext>` is the source's whole extension.
pub fn evidence_name(number: u64, description: &str, file_name: &str) -> Result<String> {
    validate_source_name(file_name)?;
    let (mut stem, mut ext) = split_name(file_name);
    let described = !slug(description, NAME_MAX).is_empty();
    let dot_name = stem.strip_prefix('.').is_some_and(|n| {
        !n.is_empty()
            && n.len() < EXT_MAX
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if described && ext.is_empty() && dot_name {
        // A dotfile named by a description keeps its name as the
        // extension, as the bash version kept it: `.env` → `120_secrets.env`.
        (stem, ext) = ("", stem);
    }
    let ext_ok = ext.len() <= EXT_MAX
        && ext.split('.').skip(1).all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if !ext_ok {
        return Err(Error::invalid(format!(
            "cannot keep the extension of {}: extensions are up to {EXT_MAX} characters of \
             letters, digits, '_' and '-' between dots; rename the file",
            quote(file_name)
        )));
    }
    let mut name = slug(description, NAME_MAX);
    if name.is_empty() {
        name = slug(stem, NAME_MAX);
    }
    if name.is_empty() {
        name = "evidence".into();
    }
    Ok(format!("{}_{name}{ext}", format_number(number)))
}

/// Whether `name` is a file name the daemon would store or read in ctx/:
/// `<digits>_<rest>` with no path separators, NUL or leading dot.
pub fn is_ctx_name(name: &str) -> bool {
    number_of(name).is_some()
        && !name.contains('/')
        && !name.contains('\0')
        && name.len() <= FILE_NAME_MAX
}

/// Orders ctx names numerically and gives each its evidence index
/// (1-based for numbers ≥ 100, 0 for system files).
pub fn evidence_order(mut names: Vec<String>) -> Vec<(String, u32)> {
    names.sort_by_key(|n| (number_of(n).unwrap_or(u64::MAX), n.clone()));
    let mut index = 0;
    names
        .into_iter()
        .map(|n| {
            let i = if number_of(&n).is_some_and(|x| x >= FIRST_EVIDENCE) {
                index += 1;
                index
            } else {
                0
            };
            (n, i)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names() {
        let cases = [
            (100, "artifact", "app.tar.gz", "100_artifact.tar.gz"),
            (110, "", "config.yaml", "110_config.yaml"),
            (120, "Deploy Config!", "x", "120_deploy-config"),
            (130, "", ".bashrc", "130_bashrc"),
            (120, "secrets", ".env", "120_secrets.env"),
            (150, "my artifact", "a.txt", "150_my-artifact.txt"),
            (140, "", "", "140_evidence"),
            (1000, "", "Notes v2.TXT", "1000_notes-v2.TXT"),
        ];
        for (n, desc, file, want) in cases {
            assert_eq!(
                evidence_name(n, desc, file).unwrap(),
                want,
                "{desc:?} {file:?}"
            );
        }
        for bad in ["../x", "a/b", "..", "a\0b", "x.t ar", "x..y", "x."] {
            assert!(evidence_name(100, "", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn numbering() {
        assert_eq!(next_number([POLICY_FILE, REQUEST_FILE]), Some(100));
        assert_eq!(next_number(["000_p.md", "100_a", "110_b"]), Some(120));
        assert_eq!(next_number(["100_a", "115_hand-made"]), Some(120));
        assert_eq!(next_number(["990_a"]), Some(1000));
        assert_eq!(next_number(["1000_a", "990_b"]), Some(1010));
        assert_eq!(next_number(["junk", "_x", "abc_d"]), Some(100));
        assert_eq!(next_number(["18446744073709551615_x"]), None);
        assert_eq!(format_number(0), "000");
        assert_eq!(format_number(10), "010");
        assert_eq!(format_number(1010), "1010");
    }

    #[test]
    fn evidence_is_numeric_order() {
        let names = [
            "1000_z",
            "110_b",
            "000_policy.md",
            "990_y",
            "100_a",
            "010_request.md",
        ];
        let order = evidence_order(names.iter().map(|s| s.to_string()).collect());
        let got: Vec<(&str, u32)> = order.iter().map(|(n, i)| (n.as_str(), *i)).collect();
        assert_eq!(
            got,
            [
                ("000_policy.md", 0),
                ("010_request.md", 0),
                ("100_a", 1),
                ("110_b", 2),
                ("990_y", 3),
                ("1000_z", 4)
            ]
        );
    }

    #[test]
    fn digest_is_order_independent_and_documented() {
        let a = Entry {
            name: "000_policy.md".into(),
            bytes: 3,
            sha256: sha256_hex(b"abc"),
        };
        let b = Entry {
            name: "100_x".into(),
            bytes: 0,
            sha256: sha256_hex(b""),
        };
        assert_eq!(
            digest(&[a.clone(), b.clone()]),
            digest(&[b.clone(), a.clone()])
        );
        let manual = format!(
            "000_policy.md\x003\x00{}\n100_x\x000\x00{}\n",
            a.sha256, b.sha256
        );
        assert_eq!(digest(&[a, b]), sha256_hex(manual.as_bytes()));
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
