"""An OTLP/HTTP trace and metrics receiver for trailwatch's end-to-end tests.

Decodes every POST to /v1/traces and /v1/metrics with the official generated
protobuf classes (the `opentelemetry-proto` package from PyPI, installed into
.venv/ by scripts/test) and appends one JSON line per request to --out:

  {"n": 1, "signal": "traces", "status": 503, "spans": []}     # answered with a failure
  {"n": 2, "signal": "traces", "status": 200, "headers": {...}, "resource": {...}, "scope": "...", "spans": [...]}
  {"n": 3, "signal": "metrics", "status": 200, "headers": {...}, "resource": {...}, "scope": "...",
   "spans": [], "metrics": [...]}

Spans are flattened for the test to assert on: hex ids, typed attribute
values, events, status; metrics too: name, unit, type (sum, gauge,
histogram), monotonic, temporality, and points with typed values ("i:3",
"d:0.5") or histogram count, sum, bounds and bucket counts. `--tls-cert/--tls-key`
serve https. `--grpc` serves OTLP/gRPC instead: the generated `TraceService`
and `MetricsService` on the official grpcio server (failures are UNAVAILABLE;
headers are the request metadata). `--fail-first N` answers the first N
requests of each signal with `--fail-status` (default 503); `--reject K`
reports K rejected spans (OTLP partial success) in the first successful trace
answer. Listens on 127.0.0.1 only and exits when its parent (the test) is gone.
"""

import argparse
import gzip
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


def any_value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    # Keep the OTLP type visible: int vs double vs string vs bool.
    return {"string_value": "s", "int_value": "i", "double_value": "d", "bool_value": "b"}[kind] + ":" + str(
        getattr(v, kind)
    )


def attrs(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


def span_json(s):
    return {
        "trace_id": s.trace_id.hex(),
        "span_id": s.span_id.hex(),
        "parent_span_id": s.parent_span_id.hex(),
        "name": s.name,
        "kind": s.kind,
        "flags": s.flags,
        "start": s.start_time_unix_nano,
        "end": s.end_time_unix_nano,
        "attributes": attrs(s.attributes),
        "dropped_attributes": s.dropped_attributes_count,
        "events": [
            {"time": e.time_unix_nano, "name": e.name, "attributes": attrs(e.attributes)} for e in s.events
        ],
        "status": {"code": s.status.code, "message": s.status.message},
    }


def number(p):
    kind = p.WhichOneof("value")
    return {"as_int": "i", "as_double": "d"}[kind] + ":" + str(getattr(p, kind)) if kind else None


def metric_json(m):
    kind = m.WhichOneof("data")
    out = {"name": m.name, "description": m.description, "unit": m.unit, "type": kind}
    data = getattr(m, kind)
    if kind == "sum":
        out["monotonic"] = data.is_monotonic
    if kind in ("sum", "histogram"):
        out["temporality"] = data.aggregation_temporality
    if kind in ("sum", "gauge"):
        out["points"] = [
            {"attributes": attrs(p.attributes), "value": number(p), "start": p.start_time_unix_nano}
            for p in data.data_points
        ]
    elif kind == "histogram":
        out["points"] = [
            {
                "attributes": attrs(p.attributes),
                "count": p.count,
                "sum": p.sum,
                "bounds": list(p.explicit_bounds),
                "buckets": list(p.bucket_counts),
                "has_min": p.HasField("min"),
                "has_max": p.HasField("max"),
            }
            for p in data.data_points
        ]
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--fail-first", type=int, default=0)
    p.add_argument("--fail-status", type=int, default=503)
    p.add_argument("--reject", type=int, default=0)
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--grpc", action="store_true")
    a = p.parse_args()

    lock = threading.Lock()
    state = {"n": 0, "rejected": False, "traces": 0, "metrics": 0}

    def log(obj):
        with lock, open(a.out, "a") as f:
            f.write(json.dumps(obj) + "\n")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self, status, body=b"", ctype="application/x-protobuf"):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            signal = {"/v1/traces": "traces", "/v1/metrics": "metrics"}.get(self.path)
            n, nth = count(signal)
            if signal is None:
                log({"n": n, "status": 404, "path": self.path, "spans": []})
                return self.answer(404, b"not found", "text/plain")
            if self.headers.get("Content-Type") != "application/x-protobuf":
                log({"n": n, "signal": signal, "status": 415, "content_type": self.headers.get("Content-Type"), "spans": []})
                return self.answer(415, b"unsupported media type", "text/plain")
            if nth <= a.fail_first:
                log({"n": n, "signal": signal, "status": a.fail_status, "spans": []})
                return self.answer(a.fail_status, b"try later", "text/plain")
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if signal == "traces":
                req = trace_service_pb2.ExportTraceServiceRequest()
            else:
                req = metrics_service_pb2.ExportMetricsServiceRequest()
            try:
                req.ParseFromString(body)
            except DecodeError as e:
                log({"n": n, "signal": signal, "status": 400, "error": str(e), "spans": []})
                return self.answer(400, b"bad protobuf", "text/plain")
            headers = {k.lower(): v for k, v in self.headers.items()}
            resp = decode(n, req, headers) if signal == "traces" else decode_metrics(n, req, headers)
            self.answer(200, resp.SerializeToString())

        def log_message(self, *args):
            pass

    def count(signal):
        """The request's number, and its number among its signal's requests."""
        with lock:
            state["n"] += 1
            if signal is None:
                return state["n"], 0
            state[signal] += 1
            return state["n"], state[signal]

    def decode_metrics(n, req, headers):
        metrics, resource, scope = [], {}, None
        for rm in req.resource_metrics:
            resource = attrs(rm.resource.attributes)
            for sm in rm.scope_metrics:
                scope = sm.scope.name + "/" + sm.scope.version
                metrics.extend(metric_json(m) for m in sm.metrics)
        log(
            {
                "n": n,
                "signal": "metrics",
                "status": 200,
                "headers": headers,
                "resource": resource,
                "scope": scope,
                "spans": [],
                "metrics": metrics,
            }
        )
        return metrics_service_pb2.ExportMetricsServiceResponse()

    def decode(n, req, headers):
        spans, resource, scope = [], {}, None
        for rs in req.resource_spans:
            resource = attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                scope = ss.scope.name + "/" + ss.scope.version
                spans.extend(span_json(s) for s in ss.spans)
        resp = trace_service_pb2.ExportTraceServiceResponse()
        with lock:
            reject = a.reject > 0 and not state["rejected"]
            state["rejected"] = state["rejected"] or reject
        if reject:
            resp.partial_success.rejected_spans = a.reject
            resp.partial_success.error_message = "test receiver rejects some"
        log(
            {
                "n": n,
                "signal": "traces",
                "status": 200,
                "headers": headers,
                "resource": resource,
                "scope": scope,
                "spans": spans,
            }
        )
        return resp

    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    if a.grpc:
        return serve_grpc(a, count, log, decode, decode_metrics)
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    if a.tls_cert:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.tls_cert, a.tls_key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"listening on 127.0.0.1:{a.port}", file=sys.stderr, flush=True)
    server.serve_forever()


def serve_grpc(a, count, log, decode, decode_metrics):
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    def export(signal, decoder, request, context):
        n, nth = count(signal)
        if nth <= a.fail_first:
            log({"n": n, "signal": signal, "status": 503, "spans": []})
            context.abort(grpc.StatusCode.UNAVAILABLE, "try later")
        headers = {k.lower(): v for k, v in context.invocation_metadata()}
        return decoder(n, request, headers)

    class Traces(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            return export("traces", decode, request, context)

    class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
        def Export(self, request, context):
            return export("metrics", decode_metrics, request, context)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
    server.add_insecure_port(f"127.0.0.1:{a.port}")
    server.start()
    print(f"listening (gRPC) on 127.0.0.1:{a.port}", file=sys.stderr, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
