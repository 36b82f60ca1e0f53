//! ASFF finding → OCSF Detection Finding (class 2004). Not written yet: the
//! Security Hub sink work (issue 5) brings it.

use crate::evaluate::Finding;

pub fn to_json_line(f: &Finding) -> String {
    serde_json::json!({"class_uid": 2004, "finding_info": {"uid": f.asff.id, "title": f.asff.title}}).to_string()
}
