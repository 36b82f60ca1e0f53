//! Finds the raw events behind example findings: one pass over the dataset
//! files, a multi-pattern search for the wanted ids, and a parse of only the
//! units (a log file, a line) that contain one.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;

use aho_corasick::AhoCorasick;
use flate2::read::MultiGzDecoder;

/// Looks up `ids` in the files under `inputs`; returns id → event (CloudTrail record or EventBridge event).
pub fn find_events(inputs: &[PathBuf], ids: &[String]) -> HashMap<String, serde_json::Value> {
    let mut found = HashMap::new();
    if ids.is_empty() {
        return found;
    }
    let Ok(ac) = AhoCorasick::new(ids) else { return found };
    for file in super::input_files(inputs) {
        if found.len() == ids.len() {
            break;
        }
        let Ok(f) = std::fs::File::open(&file) else { continue };
        let mut br = BufReader::new(f);
        let gz = br.fill_buf().map(|b| b.starts_with(&[0x1f, 0x8b])).unwrap_or(false);
        let reader: Box<dyn Read> = if gz { Box::new(MultiGzDecoder::new(br)) } else { Box::new(br) };
        let mut r = BufReader::with_capacity(1 << 16, reader);
        let mut line = String::new();
        // Units are lines (NDJSON) or whole one-line documents (log files, payloads).
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let hits: Vec<usize> = ac.find_iter(&line).map(|m| m.pattern().as_usize()).collect();
            if hits.is_empty() {
                continue;
            }
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line.trim()) else { continue };
            for h in hits {
                let id = &ids[h];
                if found.contains_key(id) {
                    continue;
                }
                if let Some(ev) = find_in(&v, id, 0) {
                    found.insert(id.clone(), ev);
                }
            }
        }
    }
    found
}

/// The object whose `eventID` (or EventBridge `id`) is `id`, searching
/// envelopes and JSON-in-string messages (CloudWatch Logs).
fn find_in(v: &serde_json::Value, id: &str, depth: u8) -> Option<serde_json::Value> {
    if depth > 6 {
        return None;
    }
    match v {
        serde_json::Value::Object(m) => {
            if m.get("eventID").and_then(|x| x.as_str()) == Some(id) {
                return Some(v.clone());
            }
            if m.get("id").and_then(|x| x.as_str()) == Some(id) && m.contains_key("detail-type") {
                return Some(v.clone());
            }
            m.values().find_map(|x| find_in(x, id, depth + 1))
        }
        serde_json::Value::Array(a) => a.iter().find_map(|x| find_in(x, id, depth + 1)),
        serde_json::Value::String(s) if s.contains(id) && s.starts_with('{') => {
            serde_json::from_str::<serde_json::Value>(s).ok().and_then(|x| find_in(&x, id, depth + 1))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_records_in_files_envelopes_and_messages() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.json");
        std::fs::write(&log, r#"{"Records":[{"eventID":"x1","eventName":"A"},{"eventID":"x2","eventName":"B"}]}"#)
            .unwrap();
        let cwl = dir.path().join("b.json");
        let msg = serde_json::json!({"eventID": "x3", "eventName": "C"}).to_string();
        std::fs::write(
            &cwl,
            serde_json::json!({"messageType": "DATA_MESSAGE", "logEvents": [{"id": "1", "message": msg}]}).to_string(),
        )
        .unwrap();
        let eb = dir.path().join("c.ndjson");
        std::fs::write(&eb, "{\"id\":\"x4\",\"detail-type\":\"ECR Image Scan\",\"detail\":{}}\n{\"id\":\"e\",\"detail-type\":\"AWS API Call via CloudTrail\",\"detail\":{\"eventID\":\"x5\"}}\n").unwrap();
        let ids: Vec<String> = ["x2", "x3", "x4", "x5", "nope"].iter().map(|s| s.to_string()).collect();
        let got = find_events(&[dir.path().to_path_buf()], &ids);
        assert_eq!(got["x2"]["eventName"], "B");
        assert_eq!(got["x3"]["eventName"], "C");
        assert_eq!(got["x4"]["detail-type"], "ECR Image Scan");
        assert_eq!(got["x5"]["eventID"], "x5");
        assert!(!got.contains_key("nope"));
        assert_eq!(find_events(&[log], &["x1".to_string()])["x1"]["eventName"], "A");
    }
}
