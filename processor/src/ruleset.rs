//! Finding and loading rule files: directories given by the user and the
//! built-in pack compiled into the binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use trailwatch_rules::{CompileOptions, RuleError, RuleFile, RuleSet, RuleWarning};

use crate::config::RulesConfig;

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
/// the pack is on), overridden by configured placeholders, plus field mappings.
pub fn compile_options(cfg: &RulesConfig, builtin: bool) -> anyhow::Result<CompileOptions> {
    let mut placeholders = BTreeMap::new();
    if builtin {
        for (k, v) in pack_placeholders()? {
            placeholders.insert(k, v.values);
        }
    }
    for (k, v) in &cfg.placeholders {
        placeholders.insert(k.clone(), v.clone());
    }
    Ok(CompileOptions {
        placeholders,
        field_mappings: cfg.field_mappings.clone(),
        extra_fields: Vec::new(),
        regex_size_limit: Some(cfg.regex_size_limit),
    })
}

/// Compile options for `rules test`: the pack defaults, with the example org
/// (`test_values`) filled in where a default is empty, so rules that need org
/// context are tested too.
pub fn test_options() -> anyhow::Result<CompileOptions> {
    let mut opts = compile_options(&crate::config::Config::default().rules, true)?;
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
