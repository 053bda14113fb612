"""The page in a real browser: headless Debian Chromium driven by selenium against ``crystalforge serve``.

Starts the real server (a subprocess on a free loopback port, the embedded model), then
submits a bad composition and a run, watches the progress reach the end, sorts the table,
opens two candidates, checks the 3D canvas has drawn, downloads a CIF and reads it with
pymatgen. Screenshots go to docs/guide/img/ (used by docs/guide/web.md).
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IMG = REPO / "docs" / "guide" / "img"
CHROMIUM = os.environ.get("CRYSTALFORGE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CRYSTALFORGE_CHROMEDRIVER", "/usr/bin/chromedriver")

pytestmark = pytest.mark.slow
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install -e '.[test]'")
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(f"no headless browser: {CHROMIUM} and {CHROMEDRIVER} are needed "
                "(Debian: apt-get install chromium chromium-driver; scripts/setup.sh does it as root)",
                allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    log = open(runs.parent / "serve.log", "w+")
    process = subprocess.Popen([sys.executable, "-m", "crystalforge", "serve", "--host", "127.0.0.1",
                                "--port", str(port), "--runs", str(runs), "--device", "cpu", "--batch-size", "1"],
                               stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                log.seek(0)
                pytest.fail(f"crystalforge serve did not start:\n{log.read()}")
            time.sleep(0.3)
    yield url, runs
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # software WebGL (SwiftShader): CI machines have no GPU
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1800",
                "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
                "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    from selenium.webdriver.chrome.service import Service

    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    yield driver
    driver.quit()


def drawn_fraction(png: bytes) -> tuple[float, int]:
    """Return the fraction of non-white pixels and the number of distinct colours of a screenshot."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    pixels = list(image.get_flattened_data() if hasattr(image, "get_flattened_data") else image.getdata())
    coloured = [p for p in pixels if min(p) < 235]
    return len(coloured) / len(pixels), len(set(coloured))


def text(driver, css: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, css).text


def test_generate_watch_sort_view_download(server, browser):
    url, runs = server
    IMG.mkdir(parents=True, exist_ok=True)
    wait = WebDriverWait(browser, 30)
    browser.get(url)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#f-search option")) >= 4)
    # the form comes from the registries: strategies, their options, scorers, checks
    assert browser.find_element(By.CSS_SELECTOR, "#search-options input[name='search.top_k']")
    assert "random" in [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#f-scorer option")]

    # a bad composition: the CLI's one-line message, no run started
    browser.find_element(By.ID, "f-compositions").send_keys("Xq2O3")
    browser.find_element(By.ID, "f-submit").click()
    wait.until(lambda d: text(d, "#form-error"))
    assert text(browser, "#form-error") == "composition 'Xq2O3' names an unknown element 'Xq'"
    assert not any(runs.iterdir())

    # a real run: CaTiO3 in Pm-3m, 3 candidates, ranked by the random scorer
    field = browser.find_element(By.ID, "f-compositions")
    field.clear()
    field.send_keys("CaTiO3")
    browser.find_element(By.ID, "f-spacegroup").send_keys("Pm-3m")
    n = browser.find_element(By.ID, "f-n")
    n.clear()
    n.send_keys("3")
    browser.execute_script("var s = document.getElementById('f-scorer'); s.value = 'random';"
                           "s.dispatchEvent(new Event('change'));")
    browser.find_element(By.ID, "f-submit").click()
    WebDriverWait(browser, 30).until(lambda d: "running" in text(d, "#progress-text") or "done" in text(d, "#progress-text"))
    assert text(browser, "#form-error") == ""
    WebDriverWait(browser, 240, poll_frequency=0.5).until(lambda d: text(d, "#progress-text").startswith("done: 3/3"))
    progress = text(browser, "#progress-text")
    assert "structures/s" in progress and "valid" in progress
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#cands tbody tr")) == 3)

    # sort by volume, both ways (the table is redrawn as results arrive: read and click through the page's own DOM)
    time.sleep(1.0)
    click = ("var name = arguments[0]; var th = Array.from(document.querySelectorAll('#cands th'))"
             ".filter(function (h) { return h.textContent.indexOf(name) === 0; })[0]; th.click();")
    read = ("var ths = Array.from(document.querySelectorAll('#cands th'));"
            "var k = ths.findIndex(function (h) { return h.textContent.indexOf('volume') === 0; });"
            "return Array.from(document.querySelectorAll('#cands tbody tr')).map(function (r) {"
            "  return r.children[k].textContent; }).filter(Boolean).map(Number);")
    browser.execute_script(click, "volume")
    ascending = browser.execute_script(read)
    assert len(ascending) >= 2 and ascending == sorted(ascending)
    assert "sorted-asc" in browser.find_element(By.CSS_SELECTOR, "#cands th[data-key='volume']").get_attribute("class")
    browser.execute_script(click, "volume")
    assert browser.execute_script(read) == sorted(ascending, reverse=True)
    browser.execute_script(click, "rank")  # back to the ranking: valid first

    # open the best candidate on the left, the second on the right (shift-click)
    rows = browser.find_elements(By.CSS_SELECTOR, "#cands tbody tr")
    first, second = rows[0].get_attribute("data-name"), rows[1].get_attribute("data-name")
    rows[0].click()
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    row_b = browser.find_element(By.CSS_SELECTOR, f"#cands tbody tr[data-name='{second}']")  # the table was redrawn
    ActionChains(browser).key_down(Keys.SHIFT).click(row_b).key_up(Keys.SHIFT).perform()
    wait.until(lambda d: text(d, "#viewer-a .cf-viewer-title") == first and text(d, "#viewer-b .cf-viewer-title") == second)
    time.sleep(1.5)
    browser.execute_script("window.scrollTo(0, 0); document.querySelector('.table-wrap').scrollLeft = 0")
    browser.save_screenshot(str(IMG / "web-page.png"))  # before element screenshots scroll the page
    stage = browser.find_element(By.CSS_SELECTOR, "#viewer-a .cf-viewer-stage")
    fraction, colours = drawn_fraction(stage.screenshot_as_png)
    assert fraction > 0.02 and colours > 20, f"the 3D view looks blank ({fraction:.3f} drawn, {colours} colours)"
    legend = text(browser, "#viewer-a .cf-viewer-legend")
    assert {"Ca", "Ti", "O"} <= set(legend.split())
    checks = text(browser, "#checks-a")
    assert "space_group" in checks and "bond_length" in checks

    # supercell toggle on the left viewer draws more
    browser.find_element(By.CSS_SELECTOR, "#viewer-a .cf-btn").click()
    time.sleep(1.5)
    assert browser.find_element(By.CSS_SELECTOR, "#viewer-a .cf-btn").get_attribute("aria-pressed") == "true"
    super_fraction, _ = drawn_fraction(stage.screenshot_as_png)
    assert super_fraction > 0.02
    browser.find_element(By.ID, "viewers").screenshot(str(IMG / "web-compare.png"))
    plots = browser.find_element(By.ID, "plots")
    browser.execute_script("arguments[0].scrollIntoView(true)", plots)
    plots.screenshot(str(IMG / "web-plots.png"))

    # download the CIF of the left candidate and read it with pymatgen
    link = browser.find_element(By.CSS_SELECTOR, "#downloads-a a[data-format='.cif']")
    link.click()
    target = browser.downloads / f"{first}.cif"
    deadline = time.time() + 20
    while not target.is_file() and time.time() < deadline:
        time.sleep(0.2)
    assert target.is_file(), f"no download: {list(browser.downloads.iterdir())}"
    from pymatgen.core import Structure

    structure = Structure.from_file(str(target))
    assert structure.composition.reduced_formula == "CaTiO3"
    assert target.read_text() == (runs / next(runs.iterdir()).name / f"{first}.cif").read_text()

    # the run history lists it with its settings
    history = text(browser, "#run-list")
    assert "CaTiO3" in history and "top-k" in history and "random" in history
    shutil.rmtree(browser.downloads, ignore_errors=True)


def test_api_docs_render_offline(server, browser):
    url, _ = server
    browser.get(url + "docs")
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
    paths = {e.text.replace("\u200b", "") for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/api/runs", "/api/runs/{run_id}", "/api/runs/{run_id}/files/{name}"} <= paths


def test_view_page_draws_offline(browser, tmp_path):
    """``crystalforge view`` writes a page that draws from file://, with nothing fetched."""
    import sys

    from conftest import PEROV_CSV, read_csv_slice

    material_id, cif = read_csv_slice(PEROV_CSV, 0, 1)[0]
    source = tmp_path / f"{material_id}.cif"
    source.write_text(cif)
    page = tmp_path / "view.html"
    subprocess.run([sys.executable, "-m", "crystalforge", "view", str(source), "-o", str(page)], check=True,
                   cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True)
    browser.get(page.as_uri())
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".cf-viewer-stage canvas"))
    time.sleep(1.0)
    stage = browser.find_element(By.CSS_SELECTOR, ".cf-viewer-stage")
    fraction, colours = drawn_fraction(stage.screenshot_as_png)
    assert fraction > 0.02 and colours > 20, f"the 3D view looks blank ({fraction:.3f} drawn, {colours} colours)"
    assert "space_group" in browser.find_element(By.CSS_SELECTOR, "table.cf-checks").text
    browser.find_element(By.CSS_SELECTOR, ".cf-card").screenshot(str(IMG / "web-view-page.png"))
