//! Embeds the built-in rule pack (`rules/pack/**/*.yml`) into the binary, so
//! `trailwatch` runs with its detections and no files beside it.

use std::path::{Path, PathBuf};

fn main() {
    // Read at run time: env!() would bake in the directory the script was built in.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let pack = Path::new(&manifest).join("../rules/pack");
    println!("cargo:rerun-if-changed={}", pack.display());
    let mut files = Vec::new();
    collect(&pack, &mut files);
    files.sort();
    let mut out =
        String::from("/// (name, YAML text) of every built-in rule file.\npub static PACK: &[(&str, &str)] = &[\n");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let rel = f.strip_prefix(&pack).unwrap_or(f).to_string_lossy().replace('\\', "/");
        out.push_str(&format!("    ({:?}, include_str!({:?})),\n", format!("builtin:{rel}"), f.display().to_string()));
    }
    out.push_str("];\n");
    // Defaults for the pack's %placeholders% (JSON, so the rule loader skips it).
    let placeholders = pack.join("placeholders.json");
    println!("cargo:rerun-if-changed={}", placeholders.display());
    if placeholders.is_file() {
        out.push_str(&format!(
            "/// The pack's placeholder defaults (JSON).\npub static PLACEHOLDERS: Option<&str> = Some(include_str!({:?}));\n",
            placeholders.display().to_string()
        ));
    } else {
        out.push_str("/// The pack's placeholder defaults (JSON).\npub static PLACEHOLDERS: Option<&str> = None;\n");
    }
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("pack.rs");
    std::fs::write(dest, out).expect("write pack.rs");
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            println!("cargo:rerun-if-changed={}", p.display());
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "yml" || x == "yaml") {
            out.push(p);
        }
    }
}
