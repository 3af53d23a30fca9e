"""A tiny web app for Kiln: answers with a greeting and where it runs."""

import json
import os
from http.server import BaseHTTPRequestHandler, HTTPServer


class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        vcap = json.loads(os.environ.get("VCAP_APPLICATION", "{}"))
        body = (
            f"Hello from Kiln! I am {vcap.get('application_name', '?')}, "
            f"instance {os.environ.get('CF_INSTANCE_INDEX', '?')} "
            f"on port {os.environ.get('PORT', '?')}.\n"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        print("request:", fmt % args, flush=True)


if __name__ == "__main__":
    port = int(os.environ["PORT"])
    print(f"hello listening on port {port}", flush=True)
    HTTPServer(("0.0.0.0", port), Hello).serve_forever()
