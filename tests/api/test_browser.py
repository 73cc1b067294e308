"""The web page in a real browser: headless Chromium (Selenium) against uvicorn on a free loopback port.

Skips only when selenium, chromium or chromedriver is not installed (CI: ``.ci/install-browser.sh``). Paths
default to Debian's ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` (override: ``CEVIT_CHROMIUM``,
``CEVIT_CHROMEDRIVER``). Set ``CEVIT_SCREENSHOT_DIR`` to keep phone- and desktop-sized screenshots.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from conftest import SAMPLE_FACE, write_test_video

CHROMIUM = Path(os.environ.get("CEVIT_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CEVIT_CHROMEDRIVER", "/usr/bin/chromedriver"))
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync")  # fmt: skip

pytest.importorskip("fastapi", reason="the 'api' extra (fastapi) is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="the 'api' extra (uvicorn) is not installed")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
if not CHROMIUM.is_file() or not CHROMEDRIVER.is_file():
    pytest.skip(
        f"chromium ({CHROMIUM}) or chromedriver ({CHROMEDRIVER}) is not installed "
        "(apt-get install chromium chromium-driver, or .ci/install-browser.sh)",
        allow_module_level=True,
    )

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

NO_FACE = "No face found"  # what the page shows instead of a verdict when the report's status is "no_face"


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    """uvicorn serving the app (random-weight model) in a thread; yields (base URL, uploads folder)."""
    from cevit.api import create_app
    from cevit.inference.pipeline import load_model

    uploads = tmp_path_factory.mktemp("uploads")
    app = create_app(detector=load_model(weights=tiny_checkpoint, device="cpu"), tmp_dir=uploads)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(500):
        if srv.started:
            break
        time.sleep(0.02)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", uploads
    srv.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never download anything
    downloads = tmp_path_factory.mktemp("downloads")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_argument("--window-size=1280,900")
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})  # fmt: skip
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    driver.downloads = downloads  # type: ignore[attr-defined]
    _viewport(driver, 390, 844, mobile=True)  # phone-sized
    yield driver
    driver.quit()


def _viewport(driver, width: int, height: int, *, mobile: bool) -> None:
    """Emulate a screen size (a headless window cannot be made narrower than about 500 px)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})  # fmt: skip
    driver.execute_script("window.dispatchEvent(new Event('resize'))")


def _screenshot(driver, name: str, width: int, *, mobile: bool) -> None:
    """The whole page at ``width`` CSS px, saved to $CEVIT_SCREENSHOT_DIR when it is set."""
    folder = os.environ.get("CEVIT_SCREENSHOT_DIR")
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    _viewport(driver, width, 600, mobile=mobile)
    time.sleep(0.3)  # let the chart redraw at the new width
    height = driver.execute_script("return document.documentElement.scrollHeight")
    _viewport(driver, width, height, mobile=mobile)
    driver.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.3)
    driver.save_screenshot(str(Path(folder) / f"{name}.png"))


def _canvas_ink(driver, css: str) -> int:
    """How many pixels of the first canvas matching ``css`` are not transparent."""
    return driver.execute_script(
        "const c = document.querySelector(arguments[0]);"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n;", css)  # fmt: skip


def _upload(driver, base: str, path: Path) -> str:
    driver.get(base + "/")
    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "model").text.startswith("Model:"))
    driver.find_element(By.ID, "file").send_keys(str(path))
    WebDriverWait(driver, 40).until(lambda d: d.find_element(By.ID, "verdict").text in ("REAL", "FAKE", NO_FACE))
    return driver.find_element(By.ID, "verdict").text


def test_image_upload_shows_the_verdict(server, browser):
    base, uploads = server
    verdict = _upload(browser, base, SAMPLE_FACE)
    assert browser.find_element(By.ID, "result").is_displayed()
    assert browser.find_element(By.ID, "confidence").text.endswith("% confidence")
    facts = browser.find_element(By.ID, "facts").text
    assert "astronaut.jpg" in facts and "Processing time" in facts
    faces = browser.find_elements(By.CSS_SELECTOR, "#faces figure")
    assert len(faces) == 1
    WebDriverWait(browser, 5).until(lambda d: _canvas_ink(d, "#faces canvas") > 1000)  # face cropped in the page
    assert not browser.find_element(By.ID, "chart-box").is_displayed()  # no per-frame chart for an image

    browser.find_element(By.ID, "download").click()
    target = browser.downloads / "astronaut.jpg.cevit.json"
    WebDriverWait(browser, 10).until(lambda d: target.is_file() and target.stat().st_size > 0)
    report = json.loads(target.read_text())
    assert report["source"] == "astronaut.jpg" and report["prediction"] == verdict

    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []  # no script errors, no blocked (CSP) or failed resource loads
    _screenshot(browser, "image-phone", 390, mobile=True)
    _screenshot(browser, "image-desktop", 1280, mobile=False)
    assert sorted(uploads.iterdir()) == []


def test_video_upload_draws_the_frame_chart(server, browser, face_rgb, tmp_path):
    import numpy as np

    base, uploads = server
    frame = np.ascontiguousarray(face_rgb[:256, :256])
    blank = np.full_like(frame, 90)
    video = write_test_video(tmp_path / "clip.mp4", [frame, frame, blank, frame, frame, frame])
    _viewport(browser, 390, 844, mobile=True)
    _upload(browser, base, video)
    assert browser.find_element(By.ID, "chart-box").is_displayed()
    assert _canvas_ink(browser, "#chart") > 500
    assert "6 sampled" in browser.find_element(By.ID, "facts").text
    captions = [f.text for f in browser.find_elements(By.CSS_SELECTOR, "#faces figcaption")]
    assert captions and all("frame" in c for c in captions)
    _screenshot(browser, "video-phone", 390, mobile=True)
    _screenshot(browser, "video-desktop", 1280, mobile=False)
    assert sorted(uploads.iterdir()) == []


def _heat_visible(driver) -> bool:
    """Whether the first heat-map overlay is displayed over its thumbnail and its PNG has decoded."""
    return driver.execute_script(
        "const img = document.querySelector('#faces figure img.heat');"
        "if (!img || !img.complete || img.naturalWidth === 0) return false;"
        "const r = img.getBoundingClientRect(), c = img.parentElement.querySelector('canvas').getBoundingClientRect();"
        "return getComputedStyle(img).display !== 'none' && Math.abs(r.top - c.top) < 1 && Math.abs(r.left - c.left) < 1"
        "  && Math.abs(r.width - c.width) < 1 && r.width > 20;")  # fmt: skip


def test_heat_maps_on_request_over_the_face_thumbnails_and_a_timeline(server, browser, face_rgb, tmp_path):
    import numpy as np

    base, uploads = server
    _viewport(browser, 1280, 900, mobile=False)
    for path in (SAMPLE_FACE, None):
        if path is None:  # a video: the timeline PNG as well
            frame = np.ascontiguousarray(face_rgb[:256, :256])
            path = write_test_video(tmp_path / "heat.mp4", [frame, frame, np.full_like(frame, 90), frame])
        browser.get(base + "/")
        WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "model").text.startswith("Model:"))
        browser.find_element(By.CSS_SELECTOR, "details.options summary").click()
        browser.find_element(By.ID, "explain").click()
        browser.find_element(By.ID, "file").send_keys(str(path))
        WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "verdict").text in ("REAL", "FAKE"))
        WebDriverWait(browser, 10).until(_heat_visible)
        assert browser.find_element(By.ID, "heat-row").is_displayed()
        assert "attention" in browser.find_element(By.ID, "heat-method").text or "gradcam" in browser.find_element(
            By.ID, "heat-method").text  # fmt: skip
        browser.find_element(By.ID, "heat-toggle").click()  # off: the plain thumbnail again
        WebDriverWait(browser, 5).until(lambda d: not _heat_visible(d))
        browser.find_element(By.ID, "heat-toggle").click()
        WebDriverWait(browser, 5).until(_heat_visible)
    timeline = browser.find_element(By.ID, "timeline")
    WebDriverWait(browser, 10).until(lambda d: d.execute_script(
        "const t = document.getElementById('timeline'); return t.complete && t.naturalWidth > 0;"))  # fmt: skip
    assert timeline.is_displayed()
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    _screenshot(browser, "heat-desktop", 1280, mobile=False)
    assert sorted(uploads.iterdir()) == []


def test_no_face_is_shown_as_no_face_found_not_as_real(server, browser, tmp_path):
    import numpy as np
    from PIL import Image

    base, uploads = server
    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(gray)
    _viewport(browser, 1280, 900, mobile=False)
    assert _upload(browser, base, gray) == NO_FACE
    verdict = browser.find_element(By.ID, "verdict")
    assert verdict.get_attribute("class").split() == ["verdict", "NO_FACE"]
    real_green = browser.execute_script(
        "const probe = document.createElement('div'); probe.className = 'verdict REAL'; document.body.append(probe);"
        "const c = getComputedStyle(probe).backgroundColor; probe.remove(); return c;")  # fmt: skip
    assert verdict.value_of_css_property("background-color") != real_green  # neutral, not the REAL colour
    confidence = browser.find_element(By.ID, "confidence").text
    assert "%" not in confidence and "No verdict" in confidence  # no "99.0 % confidence"
    assert browser.find_element(By.ID, "faces-title").text == "No face detected"
    assert browser.find_elements(By.CSS_SELECTOR, "#faces figure") == []
    assert "no face" in browser.find_element(By.ID, "facts").text
    # The downloaded JSON keeps the report as it is: status no_face next to the 1.1 keys (REAL, 0.99).
    browser.find_element(By.ID, "download").click()
    target = browser.downloads / "gray.png.cevit.json"
    WebDriverWait(browser, 10).until(lambda d: target.is_file() and target.stat().st_size > 0)
    report = json.loads(target.read_text())
    assert (report["status"], report["prediction"], report["confidence"]) == ("no_face", "REAL", 0.99)
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    _screenshot(browser, "no-face-phone", 390, mobile=True)
    assert sorted(uploads.iterdir()) == []
