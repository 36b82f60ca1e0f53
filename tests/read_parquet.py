"""Reads Parquet files with pyarrow (a reader that is not trailwatch's) and
prints, per file, one JSON line: path, row count, the schema (top-level and
struct child names with pyarrow's type text) and the columns the Security
Lake test checks."""
import json
import sys

import pyarrow.parquet as pq

for path in sys.argv[1:]:
    t = pq.read_table(path)
    md = pq.ParquetFile(path).metadata
    codecs = sorted({md.row_group(g).column(c).compression for g in range(md.num_row_groups) for c in range(md.num_columns)})
    schema = {f.name: str(f.type) for f in t.schema}
    rows = t.to_pylist()
    print(json.dumps({
        "path": path,
        "num_rows": t.num_rows,
        "schema": schema,
        "codecs": codecs,
        "time": [r["time"] for r in rows],
        "uid": [r["finding_info"]["uid"] for r in rows],
        "activity_id": [r["activity_id"] for r in rows],
        "class_uid": [r["class_uid"] for r in rows],
        "account": [r["cloud"]["account"]["uid"] for r in rows],
        "analytic_uid": [r["finding_info"]["analytic"]["uid"] for r in rows],
        "types": [r["finding_info"]["types"] for r in rows],
        "unmapped_keys": [sorted(k for k, _ in (r["unmapped"] or [])) for r in rows],
    }))
