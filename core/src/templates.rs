//! The ctx files a transaction starts with (SPEC §1: `000_policy.md`,
//! `010_request.md`), with the bash version's content, so scripts that feed
//! them to a model get what they got before. The module `rag` starts with
//! RAG's policy (its output contract) and RAG's `010_prompt.user.md`, as
//! the original flow manager wrote them. Nothing here speaks of ttmd: these
//! files are read by models, not by people maintaining the tree.

use super::ctx::{POLICY_FILE, REQUEST_FILE};

/// RAG's prompt file, written for the module `rag`.
pub const PROMPT_FILE: &str = "010_prompt.user.md";

const POLICY: &str = include_str!("../templates/policy.md");
const REQUEST: &str = include_str!("../templates/request.md");
const RAG_POLICY: &str = include_str!("../templates/rag_policy.md");
const RAG_PROMPT: &str = include_str!("../templates/rag_prompt.md");

/// The files (name, content) a new transaction `txn_id` of `module` starts
/// with. Placeholders are replaced in one pass, so a description that
/// contains `{target}` stays as written.
pub fn initial_ctx(
    module: &str,
    txn_id: &str,
    description: &str,
    target: &str,
) -> Vec<(&'static str, String)> {
    let fill = |template: &str| fill(template, txn_id, description, target);
    if module == "rag" {
        vec![
            (POLICY_FILE, RAG_POLICY.to_string()),
            (PROMPT_FILE, fill(RAG_PROMPT)),
            (REQUEST_FILE, fill(REQUEST)),
        ]
    } else {
        vec![
            (POLICY_FILE, POLICY.to_string()),
            (REQUEST_FILE, fill(REQUEST)),
        ]
    }
}

fn fill(template: &str, txn_id: &str, description: &str, target: &str) -> String {
    let mut out = String::with_capacity(template.len() + description.len());
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let (value, len) = [
            ("{txn_id}", txn_id),
            ("{description}", description),
            ("{target}", target),
        ]
        .iter()
        .find(|(key, _)| rest.starts_with(key))
        .map_or(("{", 1), |(key, value)| (*value, key.len()));
        out.push_str(value);
        rest = &rest[len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_names_description_and_target_as_the_bash_version_did() {
        let files = initial_ctx("ttm", "x-20251018T090000", "say {target} \"hi\"", "@prod");
        let names: Vec<_> = files.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, [POLICY_FILE, REQUEST_FILE]);
        assert_eq!(
            files[1].1,
            "# Request\n\nsay {target} \"hi\"\n\n## Target\n\n@prod\n\n## Acceptance Criteria\n\n\
             - Operation completes without errors\n- Results are validated\n"
        );
        assert!(files[0].1.starts_with("# Constraints\n"));
        assert!(!files.iter().any(|(_, t)| t.contains("ttmd")));
    }

    #[test]
    fn rag_starts_with_its_output_contract_and_prompt() {
        let files = initial_ctx("rag", "q-20251018T090000", "why?", "@local");
        assert!(files[0].1.contains("Emit MULTICAT format"));
        assert_eq!(files[1].0, PROMPT_FILE);
        assert_eq!(
            files[1].1,
            "<!-- rs:intent=edit; rs:scope=code; rs:id=q-20251018T090000 -->\n\nwhy?\n"
        );
    }
}
