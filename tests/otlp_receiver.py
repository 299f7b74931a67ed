"""A minimal OTLP/HTTP trace receiver for the export tests (tests/otel.rs).

Decodes `ExportTraceServiceRequest` (protobuf) from `POST /v1/traces` with
the official `opentelemetry-proto` package, and writes every span it
receives as one JSON line to OUT_DIR/spans.jsonl and every raw request body,
byte for byte, to OUT_DIR/raw.bin (so a test can search the exported bytes).

Usage: python otlp_receiver.py OUT_DIR
Listens on 127.0.0.1, on a free port it prints as the first line of its
standard output. Runs until killed.
"""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

OUT = sys.argv[1]
LOCK = threading.Lock()
# Requests received so far: each span line says which request carried it.
REQUESTS = [0]


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
    return getattr(v, kind)


def attributes(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if self.path != "/v1/traces":
            self.send_response(404)
            self.end_headers()
            return
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with LOCK:
            REQUESTS[0] += 1
            number = REQUESTS[0]
        lines = []
        for rs in request.resource_spans:
            resource = attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for span in ss.spans:
                    lines.append(
                        json.dumps(
                            {
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_span_id": span.parent_span_id.hex(),
                                "name": span.name,
                                "kind": span.kind,
                                "start_ns": span.start_time_unix_nano,
                                "end_ns": span.end_time_unix_nano,
                                "attributes": attributes(span.attributes),
                                "events": [
                                    {"name": e.name, "attributes": attributes(e.attributes)}
                                    for e in span.events
                                ],
                                "status_code": span.status.code,
                                "status_message": span.status.message,
                                "scope": ss.scope.name,
                                "resource": resource,
                                "headers": {k.lower(): v for k, v in self.headers.items()},
                                "request": number,
                                "flags": span.flags,
                            }
                        )
                    )
        with LOCK:
            with open(os.path.join(OUT, "raw.bin"), "ab") as f:
                f.write(body)
            with open(os.path.join(OUT, "spans.jsonl"), "a") as f:
                for line in lines:
                    f.write(line + "\n")
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
