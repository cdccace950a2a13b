"""In a real browser: the MLflow UI over a tiny study's runs, and the HTML report.

Uses Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them with apt) through
Selenium; nothing is downloaded at run time. Skipped when they are missing, failed instead
when ``BLOCKNAS_REQUIRE_SERVICES=1`` (CI). Screenshots go to ``$BLOCKNAS_SCREENSHOTS`` when set,
else to a temporary folder. With ``BLOCKNAS_SCREENSHOT_CONFIG=configs/default.yaml`` the tests
run over that study in ``./runs`` instead of a tiny one (resuming it, so a finished study runs
no trial): that is how the docs' images in ``docs/img`` are made.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blocknas.search.report import report_study
from blocknas.search.study import SearchResult, load_study_config, run_search
from blocknas.search.tracking import (
    free_port,
    launch_mlflow_server,
    resolve_tracking_uri,
    runs_page_url,
    stop,
    wait_until_up,
)
from tests.conftest import seed_mlflow_store
from tests.helpers.configs import tiny_config

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# A closed network stalls Chromium's background services; these keep it to the page.
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
WINDOW = (1200, 800)
WAIT_S = 30
STUDY = "browser"
SHOT_CONFIG = os.environ.get("BLOCKNAS_SCREENSHOT_CONFIG")  # a study config to shoot instead of the tiny study
REPORT_SECTIONS = {  # section id in report.html -> its screenshot (docs/guides/reports.md)
    "accuracy-vs-latency": None,  # in report.png, the page's first screen
    "pareto-front": "report_front.png",
    "blocks-on-the-front-vs-all-trials": "report_blocks.png",
    "parameter-importances": "report_importances.png",
    "hypervolume": "report_hypervolume.png",
    "study-settings": "report_settings.png",
    "device-fingerprint": "report_fingerprint.png",
}


IMAGE_COLOURS_JS = """
return Array.from(document.images).map(img => {
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const ctx = canvas.getContext('2d'); ctx.drawImage(img, 0, 0);
  const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data, seen = new Set();
  for (let i = 0; i < px.length; i += 4 * 53) seen.add(px[i] + ',' + px[i + 1] + ',' + px[i + 2]);
  return seen.size;
});
"""  # distinct colours in a sample of each image's pixels: a blank figure has one or two


def require_browser() -> None:
    """Skip without Chromium, its driver or Selenium; fail instead when ``BLOCKNAS_REQUIRE_SERVICES=1``."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[dev]')")
    if not missing:
        return
    message = f"browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
    if os.environ.get("BLOCKNAS_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message}, and BLOCKNAS_REQUIRE_SERVICES=1 requires it")
    pytest.skip(message)


def make_driver(profile: Path, window: tuple[int, int] = WINDOW) -> Any:
    """Headless Debian Chromium through Debian's chromedriver, with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not try to download drivers
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROME_FLAGS, f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


def save_png(png: bytes, folder: Path, name: str) -> Path:
    """A screenshot as a small PNG (128-colour palette, optimized)."""
    from PIL import Image

    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.convert("P", palette=Image.Palette.ADAPTIVE, colors=128).save(path, optimize=True)
    return path


def wait_for(driver: Any, condition: Any, what: str, timeout_s: float = WAIT_S) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s).until(condition, f"waited {timeout_s:.0f} s for {what}")


def xpath_present(xpath: str) -> Any:
    from selenium.webdriver.common.by import By

    def found(driver: Any) -> Any:
        elements = [e for e in driver.find_elements(By.XPATH, xpath) if e.is_displayed()]
        return elements[0] if elements else False

    return found


# -- the MLflow UI --------------------------------------------------------------------------


def open_runs_page(driver: Any, page_url: str, parent_name: str, mode: str = "TABLE") -> None:
    """The runs table (``page_url`` from ``runs_page_url``), the parent run expanded to show its trials."""
    from selenium.webdriver.common.by import By

    driver.get(f"{page_url}&compareRunsMode={mode}")
    parent = wait_for(driver, xpath_present(f"//a[contains(., '{parent_name}')]"), f"parent run {parent_name}")
    for close in driver.find_elements(By.XPATH, "//button[@aria-label='Close']"):  # the assistant side panel
        if close.is_displayed():
            close.click()
    if not driver.find_elements(By.XPATH, "//a[contains(., 'trial-0000')]"):
        parent.find_element(By.XPATH, "./ancestor::div[@role='gridcell']//button").click()
    wait_for(driver, xpath_present("//a[contains(., 'trial-0000')]"), "the trial runs under the parent")


def show_columns(driver: Any, hide: tuple[str, ...], show: tuple[str, ...]) -> None:
    """Toggle runs-table columns in the "Columns" menu."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.find_element(By.XPATH, "//button[contains(., 'Columns')]").click()
    menu = wait_for(driver, xpath_present("//div[@role='dialog']"), "the columns menu")
    for name in (*hide, *show):
        item = menu.find_element(By.XPATH, f".//*[normalize-space(text())='{name}']")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", item)
        item.click()
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    for name in show:
        wait_for(driver, xpath_present(f"//div[@role='columnheader' and contains(., '{name}')]"), f"column {name}")


def table_cells(driver: Any) -> dict[str, dict[str, str]]:
    """``run id -> column id -> text`` of the runs table (AG Grid splits a row into pinned and centre parts)."""
    return driver.execute_script(
        """
        const out = {};
        document.querySelectorAll("div[role=row][row-id]").forEach(row => {
            const cells = out[row.getAttribute("row-id")] = out[row.getAttribute("row-id")] || {};
            row.querySelectorAll("div[role=gridcell]").forEach(c => { cells[c.getAttribute("col-id")] = c.innerText.trim(); });
        });
        return out;
        """
    )


def show_scatter_chart(driver: Any, x: str, y: str) -> Any:
    """In the chart view: add a scatter chart of metric ``x`` against ``y`` over all runs, open it full screen."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, "//button[contains(., 'Add chart')]").click()
    wait_for(driver, xpath_present("//*[@role='menuitem' and contains(., 'Scatter chart')]"), "chart types").click()
    dialog = wait_for(driver, xpath_present("//div[@role='dialog' and contains(., 'X axis')]"), "the chart dialog")
    for select_id, metric in (("dubois-select-1", x), ("dubois-select-2", y)):
        box = dialog.find_element(By.ID, select_id)
        box.find_element(By.XPATH, "./ancestor::div[contains(@class, 'select-selector')]").click()
        driver.switch_to.active_element.send_keys(metric)
        option = f"//div[contains(@class, 'select-item-option') and normalize-space(.)='{metric}']"
        wait_for(driver, xpath_present(option), f"option {metric}").click()
    dialog.find_element(By.XPATH, ".//button[normalize-space(.)='Add chart']").click()
    driver.find_element(
        By.XPATH, "//button[@aria-label='Toggle visibility of runs']"
    ).click()  # charts show 10 by default
    wait_for(driver, xpath_present("//*[@role='menuitemradio' and normalize-space(.)='Show all runs']"), "menu").click()
    title = f"{x} vs. {y}"
    wait_for(driver, xpath_present("//input[@placeholder='Search metric charts']"), "chart search").send_keys(x)
    card = wait_for(driver, xpath_present(f"//h4[normalize-space(.)='{title}']"), "the scatter chart").find_element(
        By.XPATH, "./ancestor::div[@data-testid='experiment-view-compare-runs-card']"
    )
    card.find_element(By.XPATH, ".//button[@data-component-id='fullscreen_button_chartcard']").click()
    full = f"//div[@role='dialog' and .//*[normalize-space(text())='{title}']]"
    chart = wait_for(driver, xpath_present(full), "the full-screen chart")
    wait_for(driver, lambda d: chart.find_elements(By.CSS_SELECTOR, ".scatterlayer .point"), "the chart's points")
    return chart


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(os.environ.get("BLOCKNAS_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    require_browser()
    driver = make_driver(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The module's working directory (``runs/`` lands there); the current one in screenshot mode."""
    require_browser()
    folder = Path.cwd() if SHOT_CONFIG else tmp_path_factory.mktemp("browser-study")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield folder


@pytest.fixture(scope="module")
def mlflow_ui(workdir: Path, empty_mlflow_store: Path) -> Iterator[str]:
    """An MLflow server over the study's store, booting while the study runs (it takes as long)."""
    uri = resolve_tracking_uri(None, workdir / "runs")
    if not (workdir / "runs" / "mlflow.db").exists():  # made here, so the server and the study don't race
        seed_mlflow_store(empty_mlflow_store, workdir)
    process, url = launch_mlflow_server(uri, port=free_port())
    try:
        yield url
    finally:
        stop(process)


@pytest.fixture(scope="module")
def study(workdir: Path, mlflow_ui: str) -> tuple[SearchResult, Path]:
    """A six-trial study (enough for parameter importances) (or ``$BLOCKNAS_SCREENSHOT_CONFIG``'s); returns once the MLflow server answers too."""
    config = load_study_config(SHOT_CONFIG) if SHOT_CONFIG else tiny_config(name=STUDY, n_trials=6)
    result = run_search(config, progress=False)
    wait_until_up(f"{mlflow_ui}/health", timeout_s=120)
    return result, workdir


# -- tests ----------------------------------------------------------------------------------


def test_mlflow_ui_shows_study_and_trial_runs(
    browser: Any, study: tuple[SearchResult, Path], mlflow_ui: str, shots: Path
) -> None:
    from mlflow.tracking import MlflowClient
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    result, _ = study
    name = result.study.study_name
    client = MlflowClient(result.tracking_uri)
    page = runs_page_url(mlflow_ui, result.tracking_uri, name)
    assert page is not None
    open_runs_page(browser, page, f"study-{name}")
    show_columns(browser, hide=("Dataset", "Source", "Models"), show=("accuracy", "latency_ms"))

    cells = table_cells(browser)
    assert f"study-{name}" in cells[result.parent_run_id]["attributes.`Run Name`"]
    plotted = 0
    for trial in result.study.trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        shown = cells[run.info.run_id]
        assert run.info.run_name.startswith(f"trial-{trial.number:04d}-")
        assert run.info.run_name in shown["attributes.`Run Name`"]
        metrics = [m for m in ("accuracy", "latency_ms") if m in run.data.metrics]  # over budget: never trained
        for metric in metrics:
            assert float(shown[f"metrics.`{metric}`"]) == pytest.approx(run.data.metrics[metric], rel=1e-6)
        plotted += len(metrics) == 2
    ActionChains(browser).move_to_element(
        browser.find_element(By.XPATH, "//*[contains(text(), 'matching runs')]")
    ).perform()
    save_png(browser.get_screenshot_as_png(), shots, "mlflow_runs.png")

    open_runs_page(browser, page, f"study-{name}", mode="CHART")
    chart = show_scatter_chart(browser, x="latency_ms", y="accuracy")
    points = chart.find_elements(By.CSS_SELECTOR, ".scatterlayer .point")
    assert len(points) == plotted > 0, "one point per trained trial (the parent run has no metrics)"
    save_png(browser.get_screenshot_as_png(), shots, "mlflow_chart.png")


def test_html_report_renders(browser: Any, study: tuple[SearchResult, Path], mlflow_ui: str, shots: Path) -> None:
    from selenium.webdriver.common.by import By

    result, folder = study
    runs = folder / "runs"
    name = result.study.study_name
    report = report_study(name, storage_url=str(runs / "optuna.journal"), runs_dir=runs, ui_base=mlflow_ui)
    browser.get_log("browser")  # drop the MLflow page's messages
    browser.get(report.html.resolve().as_uri())
    wait_for(browser, xpath_present("//h1[contains(., 'Study report')]"), "the report")
    for section in REPORT_SECTIONS:
        assert browser.find_elements(By.ID, section), f"section {section} missing"
    for figure in ("accuracy-vs-latency", "blocks-on-the-front-vs-all-trials", "parameter-importances", "hypervolume"):
        assert browser.find_elements(By.XPATH, f"//section[@id='{figure}']//img"), f"no figure in {figure}"
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('alt'), i.complete, i.naturalWidth, i.naturalHeight])"
    )
    referenced = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", report.markdown.read_text())
    assert len(images) == len(referenced) >= 3
    for alt, complete, width, height in images:
        assert complete and width > 100 and height > 100, f"image {alt!r} did not render"
    colours = browser.execute_script(IMAGE_COLOURS_JS)
    assert all(n >= 3 for n in colours), f"a blank figure: distinct colours per image {colours}"
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    trial_links = browser.find_elements(By.XPATH, "//section[@id='pareto-front']//a[contains(@href, '/runs/')]")
    assert len(trial_links) == len(result.front)
    save_png(browser.get_screenshot_as_png(), shots, "report.png")
    for section, file_name in REPORT_SECTIONS.items():
        if file_name:
            save_png(browser.find_element(By.ID, section).screenshot_as_png, shots, file_name)

    first = result.front[0]
    trial_links[0].click()  # the link opens the trial's run in the MLflow UI
    run_name = f"trial-{first.trial:04d}-{first.arch.short_hash()}"
    wait_for(browser, xpath_present(f"//*[normalize-space(text())='{run_name}']"), f"run page of {run_name}")
    assert first.run_id in browser.current_url
