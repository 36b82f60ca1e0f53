//! Finding and loading rule files: directories given by the user and the
//! built-in pack compiled into the binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use trailwatch_rules::{CompileOptions, RuleError, RuleFile, RuleSet, RuleWarning};

use crate::config::Config;

mod pack {
    include!(concat!(env!("OUT_DIR"), "/pack.rs"));
}

/// The built-in rule pack (`rules/pack`), as embedded at build time.
pub fn builtin_files() -> Vec<RuleFile> {
    pack::PACK.iter().map(|(name, text)| RuleFile { name: (*name).to_string(), text: (*text).to_string() }).collect()
}

/// One placeholder default of the pack, with what it assumes.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceholderDefault {
    pub values: Vec<String>,
    /// The example org the pack's own tests run with, where `values` is
    /// empty (an org's account list cannot have a default).
    #[serde(default)]
    pub test_values: Vec<String>,
    #[serde(default)]
    pub assumes: String,
}

/// The pack's defaults for its `%placeholders%` (empty when the pack has none).
pub fn pack_placeholders() -> anyhow::Result<BTreeMap<String, PlaceholderDefault>> {
    match pack::PLACEHOLDERS {
        None => Ok(BTreeMap::new()),
        Some(text) => serde_json::from_str(text).context("builtin:placeholders.json is not valid"),
    }
}

/// Compile options from configuration: the pack's placeholder defaults (when
/// the pack is on), overridden by configured placeholders, field mappings,
/// the regex limit, and the fields of the `[[suppressions]]` (read from every
/// event, whether a rule reads them or not). Derived from the whole `Config`
/// so that `run`, `replay` and every other command compile alike.
pub fn compile_options(cfg: &Config, builtin: bool) -> anyhow::Result<CompileOptions> {
    let mut placeholders = BTreeMap::new();
    if builtin {
        for (k, v) in pack_placeholders()? {
            placeholders.insert(k, v.values);
        }
    }
    for (k, v) in &cfg.rules.placeholders {
        placeholders.insert(k.clone(), v.clone());
    }
    Ok(CompileOptions {
        placeholders,
        field_mappings: cfg.rules.field_mappings.clone(),
        extra_fields: cfg.suppressions.iter().map(|s| s.field.clone()).collect(),
        regex_size_limit: Some(cfg.rules.regex_size_limit),
        select: trailwatch_rules::RuleSelect {
            min_level: cfg.rules.min_level,
            status: cfg.rules.status.clone(),
            disabled: cfg.rules.disabled.iter().cloned().collect(),
        },
    })
}

/// Compile options for `rules test`: the pack defaults, with the example org
/// (`test_values`) filled in where a default is empty, so rules that need org
/// context are tested too.
pub fn test_options() -> anyhow::Result<CompileOptions> {
    let mut opts = compile_options(&Config::default(), true)?;
    for (k, v) in pack_placeholders()? {
        if v.values.is_empty() && !v.test_values.is_empty() {
            opts.placeholders.insert(k, v.test_values);
        }
    }
    Ok(opts)
}

/// The pack placeholders left empty by `opts` (and the rules they switch off
/// are inactive until configured).
pub fn empty_pack_placeholders(opts: &CompileOptions) -> anyhow::Result<Vec<String>> {
    Ok(pack_placeholders()?.into_keys().filter(|k| opts.placeholders.get(k).is_none_or(|v| v.is_empty())).collect())
}

/// Every `.yml`/`.yaml` file under `dirs` (a file path is taken as is), in
/// a stable order. A missing path is an error.
pub fn files_in(dirs: &[PathBuf]) -> anyhow::Result<Vec<RuleFile>> {
    let mut out = Vec::new();
    for d in dirs {
        if !d.exists() {
            bail!("rule path {} does not exist", d.display());
        }
        let mut paths: Vec<PathBuf> = if d.is_file() {
            vec![d.clone()]
        } else {
            walkdir::WalkDir::new(d)
                .follow_links(true)
                .into_iter()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_file() && is_yaml(e.path()))
                .map(|e| e.into_path())
                .collect()
        };
        paths.sort();
        for p in paths {
            let text = std::fs::read_to_string(&p).with_context(|| format!("cannot read rule file {}", p.display()))?;
            out.push(RuleFile { name: p.display().to_string(), text });
        }
    }
    Ok(out)
}

fn is_yaml(p: &Path) -> bool {
    p.extension().is_some_and(|x| x == "yml" || x == "yaml")
}

/// Loads the user's rule paths plus (unless disabled) the built-in pack.
pub fn load(dirs: &[PathBuf], builtin: bool, opts: &CompileOptions) -> anyhow::Result<(RuleSet, Vec<RuleWarning>)> {
    let mut files = if builtin { builtin_files() } else { Vec::new() };
    files.extend(files_in(dirs)?);
    compile(&files, opts)
}

/// Loads like [`load`], but a rule that fails to compile is left out: its
/// error comes back (file, line, reason) and the rest of the rules load.
pub fn load_skipping(
    dirs: &[PathBuf],
    builtin: bool,
    opts: &CompileOptions,
) -> anyhow::Result<(RuleSet, Vec<RuleWarning>, Vec<RuleError>)> {
    let mut files = if builtin { builtin_files() } else { Vec::new() };
    files.extend(files_in(dirs)?);
    Ok(RuleSet::load_skipping(&files, opts))
}

/// Compiles rule files; all errors are reported, one per line.
pub fn compile(files: &[RuleFile], opts: &CompileOptions) -> anyhow::Result<(RuleSet, Vec<RuleWarning>)> {
    match RuleSet::load(files, opts) {
        Ok(r) => Ok(r),
        Err(errs) => {
            let n = errs.0.len();
            bail!("{errs}\n{n} rule error{}", if n == 1 { "" } else { "s" })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use trailwatch_rules::EventClass;

    use super::*;
    use crate::decode::Position;
    use crate::evaluate::{Emitted, Evaluator, EventRef};

    /// A suppression on a field no rule reads applies all the same: the
    /// compile options derived from the `Config` read it from every event,
    /// so `run`, `replay` and the tests compile alike without passing it.
    #[test]
    fn suppression_fields_come_from_the_config() {
        let cfg = Config::from_toml_str(
            r#"
            [rules]
            builtin = false
            [[suppressions]]
            field = "sourceIPAddress"
            cidrs = ["10.0.0.0/8"]
            reason = "the internal scanner"
            "#,
        )
        .unwrap();
        let opts = compile_options(&cfg, false).unwrap();
        assert_eq!(opts.extra_fields, ["sourceIPAddress"]);
        let rule = r#"
title: list users
id: 6f1d1b0e-0000-4000-8000-0000000000d1
level: low
logsource: {product: aws, service: cloudtrail}
detection:
    sel: {eventName: ListUsers}
    condition: sel
"#;
        let (set, _) = compile(&[RuleFile { name: "r.yml".into(), text: rule.into() }], &opts).unwrap();
        let mut eval = Evaluator::new(Arc::new(set), cfg.detector_config().unwrap(), Default::default());
        let event = |id: &str, ip: &str| {
            format!(
                r#"{{"eventVersion":"1.08","eventID":"{id}","eventTime":"2026-01-01T00:00:00Z","eventSource":"iam.amazonaws.com","eventName":"ListUsers","awsRegion":"us-east-1","sourceIPAddress":"{ip}","recipientAccountId":"111122223333","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/u","accountId":"111122223333"}}}}"#
            )
        };
        let mut out = Vec::new();
        let pos = Position::default();
        for (id, ip) in [("e1", "10.1.2.3"), ("e2", "192.0.2.7")] {
            let json = event(id, ip);
            let ev =
                EventRef { class: EventClass::CloudTrail, json: &json, origin: "t", position: &pos, ingest_ms: None };
            eval.event(ev, time::OffsetDateTime::UNIX_EPOCH, &mut |e| out.push(e));
        }
        let found: Vec<&str> = out
            .iter()
            .filter_map(|e| match e {
                Emitted::Finding(f) => f.asff.product_fields.get("trailwatch/EventIds").map(String::as_str),
                _ => None,
            })
            .collect();
        assert_eq!(found, ["e2"], "only the event outside 10.0.0.0/8 gives a finding: {out:?}");
        assert_eq!(eval.stats().detector.suppressed, 1);
    }
}
