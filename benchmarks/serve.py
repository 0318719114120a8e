#!/usr/bin/env python3
"""Serving under load: `fashion-mnist serve` with dynamic batching vs the same model one request per forward pass.

Both servers are the command a user runs, on the same checkpoint, with the same processes (one HTTP process, one
inference process): (a) the defaults (up to 16 requests merged within 5 ms), (b) `--max_batch_size 1` (every
request its own forward pass). N client threads, each on its own keep-alive connection, send M single-image
requests (a Fashion-MNIST test image as PNG, raw bytes) as fast as answers come back. Per server: requests/s,
latency p50/p99, errors and the mean batch size (from each answer's ``batch_size``). The servers run in turn, a
few rounds each, in the same run. Writes benchmarks/results/serve_<network>.json (SeedCNN: make train's model;
AirNet: configs/strong.yaml's, whose test-time augmentation costs six forward passes per image).

    python benchmarks/serve.py [--ckpt_path best] [--clients 16] [--requests 100] [--rounds 3]
"""

import argparse
import http.client
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
COMMAND = Path(sys.executable).with_name("fashion-mnist")
SERVERS = {"batching": [], "one_per_forward": ["--max_batch_size", "1"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(ckpt_path: str, flags: list[str], log: Path, cwd: Path = ROOT, timeout: float = 120):
    """`fashion-mnist serve` in the background, ready (GET /health answers ok): (process, base URL)."""
    port = free_port()
    argv = [str(COMMAND), "serve", "--ckpt_path", ckpt_path, "--port", str(port), *flags]
    process = subprocess.Popen(argv, cwd=cwd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + timeout
    while not healthy(url):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise RuntimeError(f"the server did not start: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    return process, url


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def stop(process: subprocess.Popen, timeout: float = 60) -> int:
    """SIGTERM (what a process manager sends), then wait; the whole session is killed if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise


def load(url: str, body: bytes, content_type: str, clients: int, requests: int) -> dict:
    """``clients`` threads x ``requests`` POST /predict each, all at once: throughput, latency, errors, batch size."""
    host, port = url.removeprefix("http://").split(":")
    answers, ready = [], threading.Barrier(clients + 1)

    def client():
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        ready.wait()
        for _ in range(requests):
            began = time.perf_counter()
            try:
                connection.request("POST", "/predict", body, {"Content-Type": content_type})
                response = connection.getresponse()
                document = json.loads(response.read())
                ok = response.status == 200
                answers.append((time.perf_counter() - began, ok, document.get("batch_size", 0) if ok else 0))
            except (OSError, http.client.HTTPException, ValueError):
                answers.append((time.perf_counter() - began, False, 0))
                connection.close()
                connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    latencies = sorted(seconds for seconds, _, _ in answers)
    batches = [size for _, ok, size in answers if ok]
    return {
        "requests": len(answers),
        "requests_per_s": len(answers) / wall,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "errors": sum(not ok for _, ok, _ in answers),
        "mean_batch_size": len(batches) / sum(1 / size for size in batches) if batches else 0.0,
    }


def forward_ms_per_image(ckpt_path: str, batch: int, repeats: int = 40) -> float:
    """The model's own ``predict_step`` (its test-time augmentation) on ``batch`` images, in this process with
    torch's default threads as the inference process has: milliseconds of compute per image."""
    import torch

    from fashion_mnist_lightning.extras.loading import load_classifier

    model = load_classifier(ckpt_path)[0]
    images = torch.randint(0, 256, (batch, *model.image_shape), dtype=torch.uint8)  # (batch, C, H, W)
    with torch.inference_mode():
        for _ in range(5):
            model.predict_step(images, 0)
        began = time.perf_counter()
        for _ in range(repeats):
            model.predict_step(images, 0)
    return 1000 * (time.perf_counter() - began) / repeats / batch


def test_image_png() -> bytes:
    """The first Fashion-MNIST test image as a PNG file."""
    sys.path.insert(0, str(ROOT / "src"))
    from PIL import Image

    from fashion_mnist_lightning.data.files import load_cache

    buffer = io.BytesIO()
    Image.fromarray(load_cache(ROOT / "data")["test_images"][0].numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", default="best", help="best / last (the newest run in lightning_logs) or a path")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=100, help="per client")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    body, figures, network, checkpoint = test_image_png(), {name: [] for name in SERVERS}, "model", None
    for round_ in range(args.rounds):
        for name, flags in SERVERS.items():
            process, url = start(args.ckpt_path, flags, RESULTS / f"serve_{name}.log")
            try:
                load(url, body, "image/png", args.clients, 5)  # warm-up
                with urllib.request.urlopen(f"{url}/info", timeout=10) as response:
                    info = json.load(response)["model"]
                network, checkpoint = info["model"], info["checkpoint"]
                figures[name].append(load(url, body, "image/png", args.clients, args.requests))
            finally:
                stop(process)
            print(f"round {round_ + 1} {name:16s} {json.dumps(figures[name][-1])}", flush=True)
    summary = {
        name: {key: statistics.median(r[key] for r in rounds) for key in rounds[0]} for name, rounds in figures.items()
    }
    summary["speedup"] = summary["batching"]["requests_per_s"] / summary["one_per_forward"]["requests_per_s"]
    # what batching can save at most: the forward pass's cost per image alone, one image vs a full batch. The
    # HTTP path's cost per request is the same for both servers, so the speed-up stays below this ceiling.
    compute = {size: forward_ms_per_image(checkpoint, size) for size in (1, 16)}
    summary["forward_ms_per_image"] = {"batch_1": compute[1], "batch_16": compute[16]}
    summary["speedup_ceiling"] = compute[1] / compute[16]
    result = {
        "command": " ".join(["python", "benchmarks/serve.py", *sys.argv[1:]]),
        "network": network,
        "clients": args.clients,
        "requests_per_client": args.requests,
        "cpus": os.cpu_count(),
        "median": summary,
        "rounds": figures,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"serve_{network}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {RESULTS / f'serve_{network}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
