"""`fashion-mnist serve`: a trained checkpoint behind an HTTP API and a web page (LitServe, dynamic batching).

  GET  /          the web page: pick, drop or photograph an image, see the model's input and the probabilities
  POST /predict   an image (raw bytes, multipart/form-data or JSON base64) -> JSON class, probability, all
                  probabilities; several images in one request -> {"predictions": [...]}
  GET  /health    "ok" once the model is loaded (for a load balancer)
  GET  /info      model class, checkpoint, class names, input shape (C, H, W), package version

Binds to 127.0.0.1 (this machine only) unless --host says otherwise. Ctrl-C or SIGTERM stops it: requests in
flight are answered first.
"""

import argparse
import contextlib
import os
import signal
import socket
import sys
import threading
import time
import traceback
from importlib import resources
from pathlib import Path

from fashion_mnist_lightning import __version__
from fashion_mnist_lightning.errors import UserError
from fashion_mnist_lightning.extras.loading import datamodule_class, load_classifier
from fashion_mnist_lightning.module import FashionMNISTClassifier
from fashion_mnist_lightning.runs.folders import resolve_checkpoint

HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # what LitServe binds to: this machine, or every IPv4 / IPv6 interface
ALIASES = {"localhost": "127.0.0.1"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fashion-mnist serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--ckpt_path", required=True, help="a .ckpt written by `fashion-mnist fit`, or best / last")
    p.add_argument("--host", default="127.0.0.1", help=f"one of {', '.join(HOSTS)} (default: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max_batch_size", type=int, default=16, help="requests merged into one forward pass")
    p.add_argument("--batch_timeout", type=float, default=0.005, help="seconds to wait for a batch to fill")
    p.add_argument("--max_upload_mb", type=float, default=8.0, help="largest request body (MB)")
    p.add_argument("--max_images", type=int, default=64, help="most images in one request")
    p.add_argument("--max_pixels", type=int, default=40_000_000, help="largest image (width x height) decoded")
    p.add_argument("--workers", type=int, default=1, help="inference processes (each holds a copy of the model)")
    p.add_argument("--threads", type=int, help="torch threads per inference process (default: torch's, one per core)")
    p.add_argument("--log_level", default="warning", choices=["debug", "info", "warning", "error"])
    return p


def check(args: argparse.Namespace) -> None:
    """One line for each value LitServe or uvicorn would only reject with a traceback, or after start-up."""
    if args.host not in HOSTS:
        raise UserError(f"--host {args.host}: pass one of {', '.join(HOSTS)} (127.0.0.1 serves this machine only)")
    if not 1024 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: pass a port from 1024 to 65535")
    for name in ("max_batch_size", "max_images", "max_pixels", "workers", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name} {getattr(args, name)}: pass a whole number of at least 1")
    if not 0 <= args.batch_timeout < 1 or args.max_upload_mb <= 0:
        raise UserError("--batch_timeout is seconds in [0, 1) and --max_upload_mb a positive size")
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((args.host, args.port))
        except OSError as err:
            raise UserError(f"cannot listen on {args.host}:{args.port} ({err.strerror}); pass another --port") from None


def main(argv: list[str] | None = None) -> int:
    """Check the arguments and load the checkpoint here (a mistake is one line, exit 2), then run the server in a
    child process of its own session and wait for it. Ctrl-C in a terminal signals a whole process group, and
    LitServe's helper processes must not get it, or a request in flight loses its queue: this process turns Ctrl-C
    and SIGTERM into one SIGTERM for the server, which stops its HTTP processes first (they answer what is in
    flight) and its model last."""
    args = parser().parse_args(argv)
    args.host = ALIASES.get(args.host, args.host)
    check(args)
    try:
        import litserve  # noqa: F401
    except ImportError:
        raise UserError("serve needs LitServe: pip install 'fashion-mnist-lightning[serve]'") from None
    ckpt_path = resolve_checkpoint(args.ckpt_path)
    model, checkpoint = load_classifier(ckpt_path)  # weights_only: a checkpoint that would run code is refused
    fashion_like = bool(getattr(datamodule_class(checkpoint), "fashion_like_predict", False))
    sys.stdout.flush(), sys.stderr.flush()
    child = os.fork()
    if child == 0:  # the server
        code = 1
        try:
            os.setsid()  # the server and its processes: out of the terminal's process group
            code = serve(args, model, ckpt_path, fashion_like)
        except BaseException:  # a failure of the server itself (a bug): its traceback, then exit 1
            traceback.print_exc()
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os._exit(code)
    stops = []

    def forward(signum, frame):  # the first Ctrl-C / SIGTERM: a graceful stop; a second one: stop everything now
        stops.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGTERM) if len(stops) == 1 else os.killpg(child, signal.SIGKILL)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    with contextlib.suppress(ProcessLookupError):  # whatever the server's session still holds (none after a clean
        os.killpg(child, signal.SIGKILL)  # stop): nothing keeps the port after this command has returned
    return 128 + stops[-1] if len(stops) > 1 else code


def serve(args: argparse.Namespace, model: FashionMNISTClassifier, ckpt_path: Path, fashion_like: bool) -> int:
    import litserve as ls

    from fashion_mnist_lightning.serving.api import ClassifierAPI
    from fashion_mnist_lightning.serving.middleware import UploadsToInputs

    shape = list(model.image_shape)  # (C, H, W)
    info = {"model": type(model.network).__name__, "checkpoint": str(ckpt_path.resolve()), "class_names":
            list(model.class_names), "input_shape": shape, "tta": model.tta, "tta_below": model.tta_below,
            "version": __version__}  # fmt: skip
    uploads = {"path": "/predict", "shape": shape, "fashion_like": fashion_like, "max_images": args.max_images,
               "max_pixels": args.max_pixels, "max_bytes": int(args.max_upload_mb * 1e6)}  # fmt: skip
    api = ClassifierAPI(
        str(ckpt_path), max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout, threads=args.threads
    )
    server = ls.LitServer(
        api, accelerator="auto", workers_per_device=args.workers, model_metadata=info,
        middlewares=[(UploadsToInputs, uploads)], fast_queue=True,
    )  # fmt: skip
    add_page(server.app)
    stop_on_sigterm(parent=os.getppid())
    url = f"http://{'127.0.0.1' if args.host != '::' else '[::1]'}:{args.port}"
    print(f"serving {info['model']} from {ckpt_path} at {url}  (page: {url}/, API: POST {url}/predict; "
          "Ctrl-C stops)", file=sys.stderr, flush=True)  # fmt: skip
    server.run(host=args.host, port=args.port, log_level=args.log_level, generate_client_file=False)
    print("server stopped", file=sys.stderr, flush=True)
    return 0


def stop_on_sigterm(parent: int) -> None:
    """SIGTERM (from the waiting parent) -> KeyboardInterrupt in this process: LitServe's graceful shutdown. The
    HTTP processes LitServe forks inherit the handler and just exit (uvicorn re-raises the signal once it has
    drained). If the parent is gone (killed), the server stops within a second instead of living on."""
    server = os.getpid()

    stopping = []

    def stop(signum, frame):
        if os.getpid() != server:
            sys.exit(0)
        if not stopping:  # once: a second KeyboardInterrupt inside LitServe's shutdown would leave its HTTP process
            stopping.append(signum)
            raise KeyboardInterrupt

    def watch_parent():
        while os.getppid() == parent:
            time.sleep(1)
        os.kill(server, signal.SIGTERM)  # a real signal: it also interrupts the main thread's blocking wait

    signal.signal(signal.SIGTERM, stop)
    threading.Thread(target=watch_parent, daemon=True, name="parent-watch").start()


def add_page(app) -> None:
    """GET / -> the web page (page.html, package data), in place of LitServe's plain-text greeting."""
    from fastapi.responses import HTMLResponse

    html = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) != "/"]
    app.add_api_route("/", lambda: HTMLResponse(html), methods=["GET"], include_in_schema=False)


if __name__ == "__main__":  # errors are printed by the command's one path: run it as `fashion-mnist serve`
    from fashion_mnist_lightning.cli import main as command

    sys.exit(command(["serve", *sys.argv[1:]]))
