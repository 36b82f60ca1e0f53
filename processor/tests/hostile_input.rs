//! `trailwatch replay` over hostile input (issue 15): a record that once
//! panicked the decoder, real CloudTrail lines mutated at every cut point,
//! and a gzip bomb. Always exit 0, every bad record counted and dead-lettered,
//! and the bomb never held whole in memory.

use std::path::Path;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trailwatch"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `replay` over `input`; returns (stderr summary, dead letters).
fn replay(dir: &Path, input: &Path, config: Option<&Path>) -> (String, Vec<serde_json::Value>) {
    let dead = dir.join("dead.ndjson");
    let mut cmd = bin();
    cmd.args(["replay", "--no-progress", "--now", "2026-01-01T00:00:00Z", "--dead-letter"]).arg(&dead);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let out = cmd.arg(input).output().unwrap();
    let err = text(&out.stderr);
    assert!(out.status.success(), "replay failed ({:?}): {err}", out.status.code());
    let dead = std::fs::read_to_string(&dead).unwrap();
    (err, dead.lines().map(|l| serde_json::from_str(l).expect("a dead letter is one JSON line")).collect())
}

fn bad_records(summary: &str) -> u64 {
    let at = summary.find(" bad records; ").expect("summary names bad records");
    summary[..at].rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn the_8_byte_record_is_a_counted_dead_letter_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("eight.ndjson");
    std::fs::write(&input, "{\"a\":\"é\n").unwrap();
    let (summary, dead) = replay(dir.path(), &input, None);
    assert_eq!(bad_records(&summary), 1, "{summary}");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["kind"], "json");
    assert_eq!(dead[0]["line"], 1);
}

#[test]
fn mutated_cloudtrail_lines_are_all_accounted_for() {
    // The project's own CloudTrail lines, cut at every byte of the first one
    // (and every 7th of the others) with a multi-byte character at the cut.
    let src = include_str!("../../examples/events/demo-cloudtrail.ndjson");
    let lines: Vec<&str> = src.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out = String::new();
    let mut n = 0u64;
    for (li, line) in lines.iter().enumerate() {
        let step = if li == 0 { 1 } else { 7 };
        let cuts: Vec<usize> = (0..line.len()).step_by(step).filter(|i| line.is_char_boundary(*i)).collect();
        for (k, cut) in cuts.into_iter().enumerate() {
            let ins = ["é", "日", "😀"][k % 3];
            out.push_str(&line[..cut]);
            out.push_str(ins);
            out.push('\n');
            n += 1;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mutated.ndjson");
    std::fs::write(&input, &out).unwrap();
    let (summary, dead) = replay(dir.path(), &input, None);
    // Every cut line is broken JSON (the whole line is the last cut only when
    // the cut is at 0, which leaves just the character): all bad, all kept.
    let bad = bad_records(&summary);
    assert_eq!(bad, n, "{summary}");
    assert_eq!(dead.len() as u64, bad);
    // Positions point at the lines: each line number once.
    let mut seen: Vec<u64> = dead.iter().map(|d| d["line"].as_u64().unwrap()).collect();
    seen.dedup();
    assert_eq!(seen.len() as u64, n);
}

/// `members` gzip members of 1 MiB of zeros (about 1 KiB apiece).
fn gzip_bomb(members: usize) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![0u8; 1 << 20]).unwrap();
    gz.finish().unwrap().repeat(members)
}

#[test]
fn a_gzip_bomb_is_stopped_at_the_configured_limit_while_decompressing() {
    let dir = tempfile::tempdir().unwrap();
    // 512 MiB of zeros in about half a MiB; the limit 16 MiB.
    let bomb = dir.path().join("bomb.json.gz");
    std::fs::write(&bomb, gzip_bomb(512)).unwrap();
    let cfg = dir.path().join("limits.toml");
    std::fs::write(&cfg, "[decode]\nmax_decompressed_bytes = 16777216\n").unwrap();
    let (summary, dead) = replay(dir.path(), &bomb, Some(&cfg));
    assert_eq!(bad_records(&summary), 1, "{summary}");
    assert!(summary.contains("too_large: 1"), "{summary}");
    assert_eq!(dead[0]["kind"], "too_large");
    assert!(dead[0]["error"].as_str().unwrap().contains("16777216"), "{dead:?}");
    // Peak memory, where GNU time is there to tell it: far below the bomb
    // (512 MiB; before the fix the whole of it was held).
    if Path::new("/usr/bin/time").exists() {
        let out = Command::new("/usr/bin/time")
            .arg("-v")
            .arg(env!("CARGO_BIN_EXE_trailwatch"))
            .args(["replay", "--no-progress", "--config"])
            .arg(&cfg)
            .arg(&bomb)
            .output()
            .unwrap();
        assert!(out.status.success());
        let err = text(&out.stderr);
        let kb: u64 = err
            .lines()
            .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes): "))
            .expect("GNU time reports the peak")
            .parse()
            .unwrap();
        assert!(kb < 160 * 1024, "peak RSS {kb} KiB for a 16 MiB limit");
    } else {
        println!("skipped the peak-memory check: /usr/bin/time (GNU time) missing");
    }
}

#[test]
fn decode_limits_are_validated_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[decode]\nmax_decompressed_bytes = 10\nmax_nesting = 0\n").unwrap();
    let input = dir.path().join("empty.ndjson");
    std::fs::write(&input, "").unwrap();
    let out = bin().args(["replay", "--no-progress", "--config"]).arg(&cfg).arg(&input).output().unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("decode.max_decompressed_bytes") && err.contains("decode.max_nesting"), "{err}");
}
