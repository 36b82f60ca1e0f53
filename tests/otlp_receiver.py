"""An OTLP/HTTP trace receiver for trailwatch's end-to-end tests.

Decodes every POST to /v1/traces with the official generated protobuf
classes (the `opentelemetry-proto` package from PyPI, installed into .venv/
by scripts/test) and appends one JSON line per request to --out:

  {"n": 1, "status": 503, "spans": []}                       # answered with a failure
  {"n": 2, "status": 200, "headers": {...}, "resource": {...}, "scope": "...", "spans": [...]}

Spans are flattened for the test to assert on: hex ids, typed attribute
values, events, status. `--tls-cert/--tls-key` serve https. `--grpc` serves
OTLP/gRPC instead: the generated `TraceService` on the official grpcio server
(failures are UNAVAILABLE; headers are the request metadata). `--fail-first N` answers the first N requests with
`--fail-status` (default 503); `--reject K` reports K rejected spans (OTLP
partial success) in the first successful answer. Listens on 127.0.0.1 only
and exits when its parent (the test) is gone.
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
    state = {"n": 0, "rejected": False}

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
            with lock:
                state["n"] += 1
                n = state["n"]
            if self.path != "/v1/traces":
                log({"n": n, "status": 404, "path": self.path, "spans": []})
                return self.answer(404, b"not found", "text/plain")
            if self.headers.get("Content-Type") != "application/x-protobuf":
                log({"n": n, "status": 415, "content_type": self.headers.get("Content-Type"), "spans": []})
                return self.answer(415, b"unsupported media type", "text/plain")
            if n <= a.fail_first:
                log({"n": n, "status": a.fail_status, "spans": []})
                return self.answer(a.fail_status, b"try later", "text/plain")
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            req = trace_service_pb2.ExportTraceServiceRequest()
            try:
                req.ParseFromString(body)
            except DecodeError as e:
                log({"n": n, "status": 400, "error": str(e), "spans": []})
                return self.answer(400, b"bad protobuf", "text/plain")
            resp = decode(n, req, {k.lower(): v for k, v in self.headers.items()})
            self.answer(200, resp.SerializeToString())

        def log_message(self, *args):
            pass

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
        log({"n": n, "status": 200, "headers": headers, "resource": resource, "scope": scope, "spans": spans})
        return resp

    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    if a.grpc:
        return serve_grpc(a, state, lock, log, decode)
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    if a.tls_cert:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.tls_cert, a.tls_key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"listening on 127.0.0.1:{a.port}", file=sys.stderr, flush=True)
    server.serve_forever()


def serve_grpc(a, state, lock, log, decode):
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    class Service(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            with lock:
                state["n"] += 1
                n = state["n"]
            if n <= a.fail_first:
                log({"n": n, "status": 503, "spans": []})
                context.abort(grpc.StatusCode.UNAVAILABLE, "try later")
            headers = {k.lower(): v for k, v in context.invocation_metadata()}
            return decode(n, request, headers)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
    server.add_insecure_port(f"127.0.0.1:{a.port}")
    server.start()
    print(f"listening (gRPC) on 127.0.0.1:{a.port}", file=sys.stderr, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
