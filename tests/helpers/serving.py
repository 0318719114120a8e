"""Talking to `fashion-mnist serve` from a test: start it as a user does (benchmarks/serve.py's own start/stop, so
the benchmark and the tests drive the server the same way), and send requests with the standard library only."""

import http.client
import json
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import serve as bench  # noqa: E402, F401  (benchmarks/serve.py: start, stop, load)


def request(url: str, method: str, path: str, body: bytes = b"", content_type: str | None = None):
    """(status, parsed JSON or text) of one request on a fresh connection."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    headers = {"Content-Type": content_type} if content_type else {}
    connection.request(method, path, body, headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    kind = response.getheader("Content-Type", "")
    return response.status, json.loads(data) if "json" in kind else data.decode("utf-8", errors="replace")


def predict(url: str, body: bytes, content_type: str = "image/png"):
    return request(url, "POST", "/predict", body, content_type)


def multipart(files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body from (field, file name, bytes) parts, and its Content-Type."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
        for field, name, data in files
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def csv_probabilities(path: Path) -> dict[str, list[float]]:
    """predictions.csv -> {file: the class probabilities, in column order}."""
    import csv

    rows = list(csv.reader(path.open()))
    header = rows[0]
    classes = header[3:-1]
    return {row[0]: [float(row[3 + i]) for i in range(len(classes))] for row in rows[1:] if not row[-1]}
