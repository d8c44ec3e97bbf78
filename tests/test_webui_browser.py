"""The web UI in a real browser (Debian's chromium driven by Playwright): train, watch, chat, export.

Screenshots of every tab go to test-artifacts/ (gitignored) so a person can look at the page.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import LF_DATA, REPO
from vision_models import vl_dir  # noqa: F401 (a fixture)

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-sync"]

pytest.importorskip("gradio")
if not CHROMIUM.is_file():
    # CI installs chromium (see .ci/run), so there a missing browser is a failure, not a skip.
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing; install Debian's chromium and chromium-driver")
    pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium chromium-driver)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir, vl_dir):
    """`tunesmith webui` as a user starts it, with a dataset folder holding identity.json."""
    root = tmp_path_factory.mktemp("webui")
    data = root / "data"
    data.mkdir()
    shutil.copy(REPO.parent / "shared/assets/data/llamafactory/identity.json", data / "identity.json")
    (data / "dataset_info.json").write_text(json.dumps({"identity": {"file_name": "identity.json"}}))
    port = _free_port()
    log = open(root / "server.log", "w")
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "tunesmith", "webui", "--port", str(port), "--runs-dir", str(root / "runs"),
         # the models lie outside the folder the UI starts in
         "--allowed-root", str(tiny_model_dir), "--allowed-root", str(vl_dir)],
        cwd=root, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for(url, process, root / "server.log")
        yield {"url": url, "root": root, "data": data, "model": tiny_model_dir, "vision_model": vl_dir,
               "started": started}
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _wait_for(url: str, process, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"webui exited early:\n{log.read_text()}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"webui did not answer at {url}:\n{log.read_text()}")


@pytest.fixture(scope="module")
def browser_page(server):
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        yield page
        browser.close()


@pytest.fixture
def page(browser_page, request):
    """The shared page; when a test fails, a screenshot of the moment and the server log are kept."""
    failed_before = request.session.testsfailed
    yield browser_page
    if request.session.testsfailed > failed_before:
        _shot(browser_page, f"failure-{request.node.name}")


def _open(page, server) -> float:
    """Load the page; seconds until the Start button can be clicked."""
    began = time.perf_counter()
    page.goto(server["url"])
    page.locator("#start").wait_for(state="visible")
    page.wait_for_function("() => !document.querySelector('#start').disabled")
    return time.perf_counter() - began


def _fill(page, elem_id: str, text: str, submit: bool = False) -> None:
    """Type `text` and make sure it stays: a field inside an accordion that has just been opened can be
    re-mounted with its old value right after it is typed into, so re-type until the value holds."""
    box = page.locator(f"#{elem_id}").locator("input, textarea").first
    for _ in range(5):
        box.fill(text)
        box.press("Tab")  # commits the value to Gradio (its change event) before anything else is clicked
        page.wait_for_timeout(400)
        if box.input_value() == text:
            break
    if submit:
        box.press("Enter")


def _choose(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input[role=combobox]").click()
    page.get_by_role("option", name=option, exact=True).click()


def _open_accordion(page, elem_id: str) -> None:
    page.locator(f"#{elem_id} > button").first.click()


def _shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"webui-{name}.png"), full_page=True)


def test_train_watch_reattach_and_chat(server, page):
    seconds = _open(page, server)
    print(f"\npage interactive {seconds:.1f}s after load, "
          f"{time.perf_counter() - server['started']:.1f}s after `tunesmith webui` started")
    _choose(page, "language", "中文")
    page.wait_for_function("() => document.querySelector('#start').innerText.includes('开始')")
    _shot(page, "train-zh")
    _choose(page, "language", "English")
    page.wait_for_function("() => document.querySelector('#start').innerText.includes('Start')")

    _fill(page, "field-model-path", str(server["model"]))
    _fill(page, "field-data-dataset_dir", str(server["data"]), submit=True)
    _choose(page, "field-data-datasets", "identity")
    _open_accordion(page, "group-data")
    _fill(page, "field-data-vars", "{name: Tuna, author: Acme}")
    _fill(page, "field-data-max_length", "128")
    _open_accordion(page, "group-train")
    _fill(page, "field-train-max_steps", "3")
    _fill(page, "field-train-lr", "0.001")
    _fill(page, "run-name", "browser-run")

    page.locator("#preview-data").click()
    page.locator("#samples .textfield").first.wait_for(timeout=120_000)
    page.locator("#preview-command").click()
    page.wait_for_function("() => document.querySelector('#command textarea').value.startsWith('tunesmith train')")
    assert page.locator("#command textarea").input_value().endswith("browser-run/config.yaml")
    assert "model:" in page.locator("#config-yaml").inner_text()  # the editor only draws the lines in view

    page.locator("#estimate").click()
    page.locator("#train-status pre").wait_for(timeout=120_000)  # `tunesmith estimate`'s report
    page.locator("#start").click()
    _wait_for_job(page, "train")
    run_dir = server["root"] / "runs" / "browser-run"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["train"]["max_steps"] == 3 and config["data"]["max_length"] == 128
    assert config["data"]["vars"] == {"name": "Tuna", "author": "Acme"}
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = {m["step"]: m["loss"] for m in metrics if "loss" in m}
    assert sorted(logged) == [1, 2, 3]
    assert _chart_points(page, 3) == pytest.approx(logged, rel=1e-6)
    _shot(page, "train")

    _open(page, server)  # a reopened page finds the job and its curve again
    page.locator("#job-state[data-state=finished]").wait_for()
    assert _chart_points(page, 3) == pytest.approx(logged, rel=1e-6)

    page.locator("#refresh").click()
    _choose(page, "checkpoint", "browser-run")
    page.get_by_role("tab", name="Chat").click()
    _open_accordion(page, "generation-settings")
    _fill(page, "field-generation-max_new_tokens", "12")
    page.locator("#load-model").click()
    page.wait_for_function("() => document.querySelector('#chat-status').innerText.includes('browser-run')",
                           timeout=120_000)
    _fill(page, "message", "Who are you?")
    page.locator("#send").click()
    bot = page.locator("#chatbot .bot").last
    bot.wait_for()
    page.wait_for_function("() => { const b = document.querySelectorAll('#chatbot .bot');"
                           " return b.length && b[b.length - 1].innerText.trim().length > 0; }")
    _shot(page, "chat")
    page.get_by_role("tab", name="Evaluate").click()
    _shot(page, "eval")


def _wait_for_job(page, kind: str) -> None:
    """Wait until the page shows the `kind` job ended, and check it succeeded."""
    page.locator(f"#job-state[data-kind={kind}]:not([data-state=running])").wait_for(timeout=180_000)
    state = page.locator("#job-state").get_attribute("data-state")
    assert state == "finished", page.locator("#log textarea").input_value()


def _chart_points(page, count: int) -> dict[int, float]:
    """{step: loss} of the points the loss chart has drawn, once it shows `count` of them."""
    selector = "#loss-chart [aria-roledescription=point]"
    page.wait_for_function(f"n => document.querySelectorAll('{selector}').length >= n", arg=count, timeout=30_000)
    labels = page.eval_on_selector_all(selector, "marks => marks.map(m => m.getAttribute('aria-label'))")
    fields = [dict(part.split(": ") for part in label.split("; ")) for label in labels]
    return {int(f["step"]): float(f["loss"]) for f in fields if f["series"] == "loss"}


def test_export_from_the_page(server, page):
    page.get_by_role("tab", name="Export").click()
    out = server["root"] / "exported"
    _fill(page, "field-export-out", str(out))
    page.locator("#start-export").click()
    _wait_for_job(page, "export")
    assert (out / "config.json").is_file()
    _shot(page, "export")


def test_vision_options_and_an_image_in_the_chat(server, page):
    """The Train tab's vision panel follows the model path; the Chat tab takes an uploaded image with the next
    message and shows it in the conversation."""
    _open(page, server)
    _fill(page, "field-model-path", str(server["vision_model"]))
    page.locator("#group-vision").wait_for(state="visible")
    _fill(page, "field-model-path", str(server["model"]))
    page.locator("#group-vision").wait_for(state="hidden")
    _fill(page, "field-model-path", str(server["vision_model"]))
    page.get_by_role("tab", name="Chat").click()
    assert not page.locator("#chat-images").is_visible()
    _open_accordion(page, "generation-settings")
    _fill(page, "field-generation-max_new_tokens", "8")
    _fill(page, "field-generation-temperature", "1")
    _fill(page, "field-generation-seed", "0")  # a reply with visible text (greedy, the random model says newlines)
    page.locator("#load-model").click()
    page.locator("#chat-images").wait_for(state="visible", timeout=120_000)
    page.locator("#chat-images input[type=file]").set_input_files(str(LF_DATA / "mllm_demo_data" / "2.jpg"))
    page.locator("#chat-images").get_by_text("2.jpg").first.wait_for()  # uploaded
    _fill(page, "message", "What is in the picture?")
    page.locator("#send").click()
    page.locator("#chatbot img").first.wait_for()  # the image, served from the session's own copy
    page.wait_for_function("() => { const b = document.querySelectorAll('#chatbot .bot');"
                           " return b.length && b[b.length - 1].innerText.trim().length > 0; }")
    _shot(page, "chat-image")
