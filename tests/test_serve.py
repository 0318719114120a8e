"""`fashion-mnist serve` as a user runs it: the API and its answers (equal to `fashion-mnist predict`'s), bad input
that never takes it down, dynamic batching under concurrency, the web page in a real browser, the README's curl
lines as written, and Ctrl-C / SIGTERM finishing the requests in flight."""

import base64
import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from conftest import ROOT, TRACEBACK, Workspace, wait_for
from fashion_mnist_lightning.data.files import CLASS_NAMES, load_cache
from helpers.serving import bench, csv_probabilities, multipart, predict, request

TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def images(tmp_path_factory, real_data_dir) -> Path:
    """Real test images as files: six Fashion-MNIST PNGs (test/00000_<label>.png ...) and one of them as a colour
    JPEG on a white background at 180x150 (what a phone photo of a product looks like)."""
    folder = tmp_path_factory.mktemp("images")
    arrays = load_cache(real_data_dir)
    for i in range(6):
        label = int(arrays["test_labels"][i])
        Image.fromarray(arrays["test_images"][i].numpy()).save(folder / f"{i:05d}_{label}.png")
    grey = Image.fromarray(255 - arrays["test_images"][0].numpy()).resize((150, 180))
    grey.convert("RGB").save(folder / "photo.jpg", quality=92)
    return folder


@pytest.fixture(scope="module")
def served(tmp_path_factory, trained):
    """`fashion-mnist serve --ckpt_path <the trained run's best> --port P`, started in a clone-like folder."""
    workspace = Workspace(tmp_path_factory.mktemp("serve"))
    ckpt = next((trained / "checkpoints").glob("epoch*.ckpt"))
    process, url = bench.start(str(ckpt), [], workspace.path / "serve.log", cwd=workspace.path)
    yield {"process": process, "url": url, "log": workspace.path / "serve.log", "ckpt": ckpt, "ws": workspace}
    if process.poll() is None:
        assert bench.stop(process) == 0


@pytest.fixture(scope="module")
def reference(served, images) -> dict[str, list[float]]:
    """`fashion-mnist predict` on the image folder, as a user runs it: {file: probabilities} from its CSV."""
    workspace = served["ws"]
    workspace.run(f"fashion-mnist predict --config configs/default.yaml --ckpt_path {served['ckpt']} "
                  f"--data.predict_dir {images}")  # fmt: skip
    csv_path = max(served["ckpt"].parents[1].glob("evaluations/predict_*/predictions.csv"), key=os.path.getmtime)
    return csv_probabilities(csv_path)


def probabilities(answer: dict) -> list[float]:
    return [answer["probabilities"][name] for name in CLASS_NAMES]


def close(a: list[float], b: list[float]) -> bool:
    return max(abs(x - y) for x, y in zip(a, b, strict=True)) <= TOLERANCE


# ----------------------------------------------------------------------------------------------------
# the API


def test_health_info_and_the_page_are_served_without_any_outside_resource(served):
    url = served["url"]
    assert request(url, "GET", "/health") == (200, "ok")
    status, info = request(url, "GET", "/info")
    model = info["model"]
    assert status == 200 and model["model"] == "SeedCNN" and model["class_names"] == list(CLASS_NAMES)
    assert model["input_shape"] == [1, 28, 28] and model["checkpoint"] == str(served["ckpt"].resolve())
    assert model["version"] and model["tta"]
    status, page = request(url, "GET", "/")
    assert status == 200 and 'type="file"' in page and 'capture="environment"' in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # no CDN: works offline


def test_every_request_form_gives_predicts_probabilities(served, images, reference):
    url, files = served["url"], sorted(images.iterdir())
    for path in files:  # raw bytes, one image per request
        status, answer = predict(url, path.read_bytes(), "image/jpeg" if path.suffix == ".jpg" else "image/png")
        assert status == 200 and close(probabilities(answer), reference[path.name]), path.name
        assert answer["class"] == CLASS_NAMES[answer["index"]] and answer["probability"] == max(probabilities(answer))
    body, kind = multipart([("images", p.name, p.read_bytes()) for p in files])  # the batch form
    status, answer = predict(url, body, kind)
    assert status == 200 and [a["file"] for a in answer["predictions"]] == [p.name for p in files]
    assert all(close(probabilities(a), reference[a["file"]]) for a in answer["predictions"])
    body, kind = multipart([("image", files[1].name, files[1].read_bytes())])  # curl -F image=@file
    status, answer = predict(url, body, kind)
    assert status == 200 and answer["file"] == files[1].name and close(probabilities(answer), reference[files[1].name])
    document = {"images": [base64.b64encode(p.read_bytes()).decode() for p in files[:2]]}
    status, answer = predict(url, json.dumps(document).encode(), "application/json")
    assert status == 200 and close(probabilities(answer["predictions"][1]), reference[files[1].name])
    status, answer = request(url, "POST", "/predict?input=true", files[-1].read_bytes(), "image/jpeg")
    shown = Image.open(io.BytesIO(base64.b64decode(answer["input"].removeprefix("data:image/png;base64,"))))
    assert shown.size == (28, 28) and shown.mode == "L"  # the converted input the page shows


def bad_requests(images: Path, tmp: Path) -> list[tuple[str, str, str, bytes, str | None, int]]:
    """(what, method, path, body, content type, expected status)."""
    png = (images / "00000_9.png").read_bytes()
    Image.new("1", (8000, 6000)).save(tmp / "large.png")  # 48 MP: over --max_pixels (40 MP), a few kB on disk
    Image.new("1", (14000, 14000)).save(tmp / "bomb.png")  # 196 MP: Pillow's own decompression-bomb limit
    many, kind = multipart([("images", f"{i}.png", png) for i in range(65)])
    return [
        ("not an image", "POST", "/predict", b"hello, I am text", "image/png", 400),
        ("an empty body", "POST", "/predict", b"", "image/png", 400),
        ("a truncated file", "POST", "/predict", png[: len(png) // 2], "image/png", 400),
        ("over --max_pixels", "POST", "/predict", (tmp / "large.png").read_bytes(), "image/png", 413),
        ("a decompression bomb", "POST", "/predict", (tmp / "bomb.png").read_bytes(), "image/png", 413),
        ("an oversized upload", "POST", "/predict", os.urandom(9_000_000), "image/png", 413),
        ("a wrong content type", "POST", "/predict", png, "text/plain", 415),
        ("no content type", "POST", "/predict", png, None, 415),
        ("a batch over --max_images", "POST", "/predict", many, kind, 413),
        ("JSON that is not JSON", "POST", "/predict", b"{images: ", "application/json", 400),
        ("JSON without images", "POST", "/predict", b'{"pictures": []}', "application/json", 400),
        ("an empty list of images", "POST", "/predict", b'{"images": []}', "application/json", 400),
        ("base64 that is not", "POST", "/predict", b'{"image": "%%%"}', "application/json", 400),
        ("an empty part", "POST", "/predict", *multipart([("image", "empty.png", b"")]), 400),
        ("an unknown route", "GET", "/nothing-here", b"", None, 404),
        ("a wrong method", "DELETE", "/predict", b"", None, 405),
        ("GET on /predict", "GET", "/predict", b"", None, 405),
    ]


def test_bad_input_is_one_line_4xx_and_the_server_keeps_answering(served, images, reference, tmp_path):
    url, good = served["url"], images / "00001_2.png"
    for what, method, path, body, kind, expected in bad_requests(images, tmp_path):
        status, answer = request(url, method, path, body, kind)
        assert status == expected, f"{what}: {status} {answer}"
        assert isinstance(answer, dict) and "\n" not in str(answer["detail"]), f"{what}: {answer}"
        assert request(url, "GET", "/health") == (200, "ok"), f"after {what}"
        status, answer = predict(url, good.read_bytes())
        assert status == 200 and close(probabilities(answer), reference[good.name]), f"after {what}"
    assert not TRACEBACK.search(served["log"].read_text()), served["log"].read_text()[-3000:]


def test_bad_requests_sent_among_good_ones_spoil_none_of_the_good_ones(served, images, tmp_path):
    """A bad request must never reach a batch: LitServe fails every request of a batch when one of them fails."""
    url, bad, done = served["url"], bad_requests(images, tmp_path), threading.Event()

    def send_bad():
        while not done.is_set():
            for _, method, path, body, kind, expected in bad:
                assert request(url, method, path, body, kind)[0] == expected

    senders = [threading.Thread(target=send_bad) for _ in range(2)]
    for sender in senders:
        sender.start()
    figures = bench.load(url, (images / "00000_9.png").read_bytes(), "image/png", clients=6, requests=15)
    done.set()
    for sender in senders:
        sender.join(timeout=120)
    assert figures["errors"] == 0, figures


def no_server_on(port: str) -> bool:
    """No process of a server on ``port`` is left, and the port can be listened on again."""
    if subprocess.run(["pgrep", "-f", f"--port {port}"], capture_output=True).stdout:
        return False
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        return probe.connect_ex(("127.0.0.1", int(port))) != 0


def test_a_second_ctrl_c_stops_at_once_and_a_killed_parent_takes_the_server_with_it(served, tmp_path):
    for how in ("double Ctrl-C", "kill -9 of the command"):
        process, url = bench.start(str(served["ckpt"]), [], tmp_path / "serve.log", cwd=tmp_path)
        port = url.rsplit(":", 1)[1]
        if how == "double Ctrl-C":
            os.killpg(process.pid, signal.SIGINT)
            time.sleep(0.3)
            os.killpg(process.pid, signal.SIGINT)
            assert process.wait(timeout=60) in (0, 130)
        else:
            process.kill()
            process.wait(timeout=30)
        wait_for(lambda port=port: no_server_on(port), 30, f"every server process to exit after a {how}")


def test_concurrent_clients_are_batched_into_shared_forward_passes(served, images):
    figures = bench.load(served["url"], (images / "00000_9.png").read_bytes(), "image/png", clients=16, requests=8)
    assert figures["requests"] == 128 and figures["errors"] == 0, figures
    assert figures["mean_batch_size"] > 1, figures


def test_the_readme_curl_lines_run_as_written(served, images, tmp_path):
    section = ROOT.joinpath("README.md").read_text().split("## Serving", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in re.findall(r"^curl .*$", section, flags=re.M)]
    assert len(lines) >= 4, lines
    for name in ("shoe.png", "shirt.png"):
        shutil.copy(images / ("00000_9.png" if name == "shoe.png" else "00001_2.png"), tmp_path / name)
    for line in lines:
        argv = shlex.split(line.replace("http://127.0.0.1:8000", served["url"]))
        result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{line}: {result.stderr}"
        if line.endswith("/health"):
            assert result.stdout == "ok", result.stdout
            continue
        answer = json.loads(result.stdout)
        assert {"class", "predictions", "model"} & set(answer), f"{line}: {answer}"


# ----------------------------------------------------------------------------------------------------
# a real browser


@pytest.mark.slow
def test_the_page_in_headless_chromium_classifies_an_uploaded_image(served, images, reference):
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        message = "Debian's chromium and chromium-driver are needed (.ci/run installs them)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    name = next(
        n
        for n, p in sorted(reference.items())
        if n.endswith(".png") and CLASS_NAMES[int(n[6])] == CLASS_NAMES[max(range(10), key=p.__getitem__)]
    )  # fmt: skip  (an image the model gets right)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=900,1100"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    try:
        browser.set_page_load_timeout(60)
        browser.get(served["url"] + "/")
        WebDriverWait(browser, 30).until(lambda b: "classes" in b.find_element(By.ID, "model").text)
        browser.find_element(By.ID, "file").send_keys(str(images / name))
        WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "result").get_attribute("data-class"))
        shown = browser.find_element(By.ID, "result").get_attribute("data-class")
        bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
        model_input = browser.find_element(By.ID, "input-image")
        assert browser.execute_script("return arguments[0].naturalWidth", model_input) == 28
        artifacts = Path(os.environ.get("TEST_ARTIFACTS", ROOT / "build" / "test-artifacts"))
        artifacts.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(artifacts / "serve-page.png"))
    finally:
        browser.quit()
    assert shown == CLASS_NAMES[int(name[6])] and len(bars) == 10
    assert (artifacts / "serve-page.png").stat().st_size > 10_000


# ----------------------------------------------------------------------------------------------------
# refusals before start-up (in-process: nothing is served)


def test_values_the_server_would_reject_are_one_line_exit_2(served, in_process, tmp_path):
    ckpt = served["ckpt"]
    assert "--host 10.1.2.3" in in_process(f"fashion-mnist serve --ckpt_path {ckpt} --host 10.1.2.3", 2).error
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert "another --port" in in_process(f"fashion-mnist serve --ckpt_path {ckpt} --port {port}", 2).error
    assert "--port 80" in in_process(f"fashion-mnist serve --ckpt_path {ckpt} --port 80", 2).error
    assert "--max_batch_size 0" in in_process(f"fashion-mnist serve --ckpt_path {ckpt} --max_batch_size 0", 2).error
    assert "does not exist" in in_process(f"fashion-mnist serve --ckpt_path {tmp_path}/none.ckpt", 2).error

    import torch

    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": {}, "payload": threading.Lock}, unsafe)  # unpickling it would import a callable
    assert "not a readable checkpoint" in in_process(f"fashion-mnist serve --ckpt_path {unsafe}", 2).error


# ----------------------------------------------------------------------------------------------------
# stopping: last, it ends the module's server


def test_ctrl_c_answers_the_requests_in_flight_then_exits_0_leaving_no_process(served, images):
    process, url = served["process"], served["url"]
    body, answers = (images / "00000_9.png").read_bytes(), []
    clients = [threading.Thread(target=lambda: answers.append(predict(url, body)[0])) for _ in range(12)]
    for client in clients:
        client.start()
    time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)  # SIGINT to the whole process group: what Ctrl-C in a terminal does
    for client in clients:
        client.join(timeout=60)
    assert process.wait(timeout=60) == 0
    output = served["log"].read_text()
    assert answers.count(200) == len(answers) == 12, answers
    assert "server stopped" in output and not TRACEBACK.search(output), output[-3000:]
    wait_for(lambda: no_server_on(url.rsplit(":", 1)[1]), 30, "every server process to exit")
