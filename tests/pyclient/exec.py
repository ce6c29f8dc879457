"""Runs one exec session with the Kubernetes Python client's WebSocket
stream (kubernetes.stream.ws_client.WSClient, what `kubernetes.stream`
uses against an API server), against the URL berth's Exec returned.

Usage: exec.py <url> <stdin-text>
Prints JSON: {"protocol", "stdout", "stderr", "returncode"}.
"""
import json
import sys

from kubernetes.client import Configuration
from kubernetes.stream.ws_client import WSClient, get_websocket_url

url, stdin = sys.argv[1], sys.argv[2]
# http:// to ws://, as kubernetes.stream does for API server URLs.
client = WSClient(Configuration(), get_websocket_url(url), headers=None, capture_all=True)
client.write_stdin(stdin)
# v5: end of stdin (a no-op on v4).
client.close_channel(0)
client.run_forever(timeout=30)
print(json.dumps({
    "protocol": client.subprotocol,
    "stdout": client.read_stdout(timeout=1) if client.peek_stdout() else "",
    "stderr": client.read_stderr(timeout=1) if client.peek_stderr() else "",
    "returncode": client.returncode,
}))
