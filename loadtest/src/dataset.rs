//! A dataset on disk: `truth.json`, `trailwatch.toml` (the org context for
//! trailwatch) and one directory per output format.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::generate::{self, GenError, GenOptions, SLICE_SECONDS};
use crate::output::{self, FileOptions, Format, Output};
use crate::truth::{org_config_toml, Truth};

pub const TRUTH_FILE: &str = "truth.json";
pub const CONFIG_FILE: &str = "trailwatch.toml";

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{0} already holds a dataset (truth.json); pass --force to replace it")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Gen(#[from] GenError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DatasetError + '_ {
    move |source| DatasetError::Io { path: path.to_path_buf(), source }
}

/// Generates into `dir`; returns the truth (also written) and the time it took.
pub fn write(
    opts: &GenOptions,
    dir: &Path,
    formats: &[Format],
    fopts: FileOptions,
    force: bool,
    progress: bool,
) -> Result<(Truth, Duration), DatasetError> {
    opts.validate()?;
    let truth_path = dir.join(TRUTH_FILE);
    if truth_path.exists() && !force {
        return Err(DatasetError::Exists(dir.to_path_buf()));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    // Replace only what this tool writes (a previous run's results included).
    for sub in formats.iter().map(|f| f.as_str()).chain(["run"]) {
        let sub = dir.join(sub);
        if sub.exists() {
            std::fs::remove_dir_all(&sub).map_err(io(&sub))?;
        }
    }
    let _ = std::fs::remove_file(&truth_path);

    let started = Instant::now();
    let mut outs: Vec<Box<dyn Output>> = Vec::new();
    for f in formats {
        outs.push(output::open(*f, &dir.join(f.as_str()), fopts).map_err(GenError::from)?);
    }
    let slices = ((opts.duration + SLICE_SECONDS - 1) / SLICE_SECONDS) as u64;
    let bar = if progress { ProgressBar::new(slices) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("generate {bar:30} {pos}/{len} slices, {msg} [{elapsed_precise}, eta {eta}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut events = 0u64;
    let mut truth = generate::generate(opts, &mut |batch| {
        for o in outs.iter_mut() {
            o.write(batch)?;
        }
        events += batch.events.len() as u64;
        bar.inc(1);
        bar.set_message(format!("{events} events"));
        Ok(())
    })?;
    bar.finish_and_clear();
    for o in outs.iter_mut() {
        truth.generator.outputs.push(o.finish().map_err(GenError::from)?);
    }
    let elapsed = started.elapsed();
    let text = serde_json::to_string_pretty(&truth).expect("truth serialises");
    std::fs::write(&truth_path, text).map_err(io(&truth_path))?;
    let cfg = dir.join(CONFIG_FILE);
    let org = generate::build_org(opts);
    std::fs::write(&cfg, org_config_toml(&org, opts.seed)).map_err(io(&cfg))?;
    Ok((truth, elapsed))
}
