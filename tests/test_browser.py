"""The pages in a real headless Chromium (Debian's chromium + chromium-driver, via selenium).

Against a real gunicorn on 127.0.0.1: both pages load with no console errors, the form gives
the right sum (a 64-bit pair too) with a step for every bit, and Swagger UI lists every
operation of /openapi.json and runs a prediction with "Try it out". Screenshots are saved under
$BROWSER_ARTIFACTS (default: artifacts/, which ignores itself), and copied to docs/images/
when UPDATE_DOC_SCREENSHOTS=1.

Without chromium these tests skip, except where CI=true or REQUIRE_BROWSER=1 (set by .ci/run):
there they fail, so a CI run cannot pass without having looked at the pages.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests import servers

pytestmark = [pytest.mark.browser, pytest.mark.integration]

CHROMIUM = ("chromium", "chromium-browser")
CHROMEDRIVER = "chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000")
WAIT = 20.0  # seconds for a page to do what it should
EDITOR = "textarea.body-param__text"  # Swagger UI's request body editor


def required() -> bool:
    """CI (or a developer who asks) must run these tests rather than skip them."""
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
               for name in ("CI", "REQUIRE_BROWSER"))


def unavailable(reason: str) -> None:
    """Skip here, fail in CI."""
    if required():
        pytest.fail(f"browser tests are required here (CI or REQUIRE_BROWSER) but {reason}")
    pytest.skip(reason)


def artifacts_dir() -> Path:
    """Where screenshots go: $BROWSER_ARTIFACTS, else artifacts/ in the checkout."""
    path = Path(os.environ.get("BROWSER_ARTIFACTS") or servers.ROOT / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    ignore = path / ".gitignore"  # test output, never committed: the folder ignores itself
    if path == servers.ROOT / "artifacts" and not ignore.exists():
        ignore.write_text("*\n")
    return path


def screenshot(driver: Any, name: str, whole: bool = True, publish: bool = True) -> Path:
    """Save the whole page (or the window), and refresh the docs' copy when asked to."""
    if whole:
        width = driver.execute_script("return document.documentElement.scrollWidth")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(max(1400, min(width, 2400)), max(900, min(height + 140, 4000)))
    path = artifacts_dir() / name
    driver.save_screenshot(str(path))
    if publish and os.environ.get("UPDATE_DOC_SCREENSHOTS") == "1":
        images = servers.ROOT / "docs" / "images"
        images.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, images / name)
    driver.set_window_size(1400, 1000)
    return path


@pytest.fixture(scope="module")
def webdriver_module() -> Any:
    """selenium, or a skip (a failure in CI) when it or the browser is missing."""
    try:
        from selenium import webdriver
    except ImportError:
        unavailable("selenium is not installed (make install-dev)")
    if not any(shutil.which(name) for name in CHROMIUM) or not shutil.which(CHROMEDRIVER):
        unavailable("chromium and chromedriver are not installed "
                    "(apt-get install chromium chromium-driver)")
    return webdriver


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Server]:
    """One gunicorn for the module."""
    with servers.running_server(tmp_path_factory.mktemp("browser")) as running:
        yield running


@pytest.fixture(scope="module")
def driver(webdriver_module: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium with a fresh profile, its console log kept for the tests to read."""
    from selenium.webdriver.chrome.service import Service

    options = webdriver_module.ChromeOptions()
    options.binary_location = next(shutil.which(n) for n in CHROMIUM if shutil.which(n))
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=shutil.which(CHROMEDRIVER))
    browser = webdriver_module.Chrome(options=options, service=service)
    browser.set_page_load_timeout(WAIT)
    try:
        yield browser
    finally:
        browser.quit()


def console_errors(driver: Any) -> list[str]:
    """Console messages at error level since the last call (CSP refusals and 404s among them)."""
    return [entry["message"] for entry in driver.get_log("browser")
            if entry.get("level") == "SEVERE"]


def wait_for(driver: Any, condition: Any, what: str) -> Any:
    """Wait for a condition, failing with what was awaited and the console's errors."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT).until(condition)
    except TimeoutException:
        raise AssertionError(f"timed out waiting for {what}; console: "
                             f"{driver.get_log('browser')}") from None


def shown_sum(driver: Any, a: int, b: int) -> dict[str, Any]:
    """Type a pair into the form, submit, and read what the page shows once it has answered."""
    from selenium.webdriver.common.by import By

    for field, value in (("a", a), ("b", b)):
        box = driver.find_element(By.ID, field)
        box.clear()
        box.send_keys(str(value))
    driver.find_element(By.ID, "add").click()
    expression = f"{a:,} + {b:,}".replace(",", "\u2009")
    wait_for(driver, lambda d: d.find_element(By.ID, "expression").text == expression
             and not d.find_element(By.ID, "result").get_attribute("hidden"),
             f"the page to show {a} + {b}")
    read = driver.execute_script("""
        const rows = {};
        for (const row of document.querySelectorAll('#steps [data-row]')) {
          rows[row.dataset.row] = [...row.querySelectorAll('[data-step]')]
            .map((cell) => [Number(cell.dataset.step), cell.textContent]);
        }
        return {sum: document.getElementById('sum').dataset.value,
                verdict: document.getElementById('verdict').textContent,
                rows, heat: document.querySelectorAll('#steps .heatmap rect').length};
    """)
    return read


def test_home_page_adds_with_the_model(driver: Any, server: servers.Server) -> None:
    from selenium.webdriver.common.by import By

    model = requests.get(server.url + "/v1/model", timeout=10).json()
    driver.get(server.url + "/")
    wait_for(driver, lambda d: d.find_element(By.ID, "sum").get_attribute("data-value"),
             "the first sum (11 + 7) on load")
    wait_for(driver, lambda d: model["version"] in d.find_element(By.ID, "model-facts").text,
             "the active model's version")
    assert driver.find_elements(By.CSS_SELECTOR, "#curve path.loss"), "no training curve"
    assert driver.find_element(By.ID, "gate").text.strip(), "no gate line"
    proof = driver.find_element(By.ID, "certificate").text
    assert proof.startswith("certified: exact at every width"), proof
    assert f"{model['certificate']['classes']} classes" in proof, proof
    hidden = model["hyperparameters"]["hidden_size"]
    pairs = [(11, 7), (255, 1), (2**63 + 12345, 2**62 + 987654321),
             (18_446_744_073_709_551_615 // 3, 12_345_678_901_234_567_890)]
    for a, b in pairs:
        api = requests.post(server.url + "/v1/predict",
                            json={"a": str(a), "b": str(b), "trace": True}, timeout=10).json()
        read = shown_sum(driver, a, b)
        assert read["sum"] == str(a + b), (a, b, read)
        assert read["verdict"] == "correct"
        width = api["bits"]
        assert width == len(api["trace"]) and width >= (a + b).bit_length()
        model_bits = dict(read["rows"]["model bit"])
        assert "".join(model_bits[t] for t in reversed(range(width))) == api["binary"]
        truth = dict(read["rows"]["true sum"])
        assert "".join(truth[t] for t in reversed(range(width))) == format(a + b, f"0{width}b")
        carries = dict(read["rows"]["carry in"])
        assert [int(carries[t]) for t in range(width)] == [s["carry"] for s in api["trace"]]
        assert read["heat"] == width * hidden
    assert max(max(pair) for pair in pairs).bit_length() == 64  # a 64-bit pair among them
    screenshot(driver, "home.png")
    assert console_errors(driver) == []


def test_home_page_refuses_bad_input_and_adds_past_the_trace_width(
    driver: Any, server: servers.Server
) -> None:
    from selenium.webdriver.common.by import By

    driver.get(server.url + "/")
    wait_for(driver, lambda d: d.find_element(By.ID, "sum").get_attribute("data-value"),
             "the first sum on load")
    driver.find_element(By.ID, "a").clear()
    driver.find_element(By.ID, "a").send_keys("12x")
    driver.find_element(By.ID, "add").click()
    error = driver.find_element(By.ID, "error")
    assert error.is_displayed() and "non-negative" in error.text
    wide = 2**300 + 5
    response = requests.post(server.url + "/v1/predict", json={"a": str(wide), "b": "3"},
                             timeout=10).json()
    if response.get("correct") is not True:
        pytest.skip("this model does not add 301-bit numbers exactly")
    shown = shown_sum(driver, wide, 3)
    assert shown["sum"] == str(wide + 3)
    assert not driver.find_element(By.ID, "steps").is_displayed()
    assert console_errors(driver) == []


def test_swagger_ui_lists_every_operation_and_tries_a_prediction(
    driver: Any, server: servers.Server
) -> None:
    from selenium.webdriver.common.by import By

    document = requests.get(server.url + "/openapi.json", timeout=10).json()
    expected = {(method.upper(), path) for path, item in document["paths"].items()
                for method in item if method in ("get", "post", "put", "delete", "patch")}
    assert any(path.startswith("/v1/") for _, path in expected)
    assert any(path.startswith("/v2/") for _, path in expected), "openapi.json lacks /v2"
    driver.get(server.url + "/docs")
    wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= len(expected),
             "Swagger UI to list the operations")
    listed = set()
    for block in driver.find_elements(By.CSS_SELECTOR, ".opblock"):
        method = block.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text
        path = block.find_element(By.CSS_SELECTOR, ".opblock-summary-path").get_attribute(
            "data-path")
        listed.add((method.upper(), path))
    assert listed == expected
    tags = {tag.get_attribute("data-tag")
            for tag in driver.find_elements(By.CSS_SELECTOR, ".opblock-tag")}
    assert {tag["name"] for tag in document.get("tags", [])} <= tags
    screenshot(driver, "docs.png")

    block = driver.find_element(By.ID, "operations-predict-predict")
    block.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
    wait_for(driver, lambda d: block.find_elements(By.CSS_SELECTOR, ".try-out__btn"),
             "the Try it out button")
    block.find_element(By.CSS_SELECTOR, ".try-out__btn").click()
    body = wait_for(driver, lambda d: block.find_element(By.CSS_SELECTOR, EDITOR),
                    "the request body editor")
    body.clear()
    body.send_keys(json.dumps({"a": 1234, "b": "4321"}))
    block.find_element(By.CSS_SELECTOR, ".execute").click()
    live = ".live-responses-table tbody .response-col_status"
    wait_for(driver, lambda d: block.find_elements(By.CSS_SELECTOR, live), "the live response")
    status = block.find_element(By.CSS_SELECTOR, live)
    assert status.text.strip().startswith("200"), status.text
    answer = block.find_element(By.CSS_SELECTOR, ".live-responses-table .microlight").text
    # (Swagger UI re-renders JSON numbers as doubles: past 2**53 it shows them rounded.)
    assert '"decimal": 5555' in answer and '"correct": true' in answer, answer
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", status)
    screenshot(driver, "docs-try-it-out.png", whole=False, publish=False)
    assert console_errors(driver) == []
