"""Study reports and dashboards: the numbers by hand, the files on a real tiny study, the CLI."""

from __future__ import annotations

import base64
import html as html_lib
import re
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import optuna
import pytest
from markdown_it import MarkdownIt
from mlflow.tracking import MlflowClient
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from blocknas.blocks import ArchConfig
from blocknas.search.cli import main
from blocknas.search.figures import pyplot
from blocknas.search.report import (
    block_frequency,
    hypervolume_2d,
    hypervolume_history,
    param_importances,
    write_report,
)
from blocknas.search.study import draw_front, run_search
from blocknas.search.study.attrs import SCREEN_POOL_ATTR, SCREEN_PROXY_ATTR
from blocknas.search.tracking import (
    DashboardError,
    StudyTracker,
    check_host,
    free_port,
    start_mlflow_server,
    wait_until_up,
)
from tests.helpers.configs import tiny_config
from tests.helpers.mlflow import children

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

SECTIONS = (
    "## Accuracy vs latency",
    "## Which block wins, per latency budget",
    "## Pareto front",
    "## Blocks on the front vs all trials",
    "## Parameter importances",
    "## Hypervolume",
    "## Study settings",
    "## Device fingerprint",
)


def arch_dict(*blocks: str) -> dict:
    stages = [{"block": b, "out_chs": 8, "stride": 2} for b in blocks]
    return ArchConfig.from_dict({"stages": stages, "input_size": [16, 16], "num_classes": 10}).to_dict()


def synthetic_study(points: list[tuple[float, float]], *, directions: tuple[str, ...] = ("maximize", "minimize")):
    """An in-memory study of complete trials with the given (accuracy, latency), no training."""
    study = optuna.create_study(directions=list(directions))
    study.set_metric_names(["accuracy", "latency_ms"][: len(directions)])
    for i, (acc, lat) in enumerate(points):
        block = ("standard", "separable", "reversed")[i % 3]
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                values=[acc, lat][: len(directions)],
                params={"s0.block": block},
                distributions={"s0.block": CategoricalDistribution(["standard", "separable", "reversed"])},
                user_attrs={"arch": arch_dict(block, "standard"), "latency_ms": lat},
            )
        )
    return study


# -- numbers --------------------------------------------------------------------------------


def test_hypervolume_2d_by_hand() -> None:
    # strips: latency 1..2 at accuracy 0.5, latency 2..4 at accuracy 0.8
    assert hypervolume_2d([(0.5, 1.0), (0.8, 2.0)], (0.0, 4.0)) == pytest.approx(2.1)
    # a dominated point and a point beyond the reference add nothing
    assert hypervolume_2d([(0.5, 1.0), (0.8, 2.0), (0.4, 3.0), (0.9, 5.0)], (0.0, 4.0)) == pytest.approx(2.1)
    assert hypervolume_2d([], (0.0, 4.0)) == 0.0


def test_hypervolume_history_matches_optuna() -> None:
    points = [(0.5, 2.0), (0.6, 3.0), (0.4, 1.0), (0.55, 2.5), (0.9, 4.0), (0.2, 0.5)]
    study = synthetic_study(points)
    hv = hypervolume_history(study)
    assert hv is not None
    assert hv.reference == (0.0, pytest.approx(4.4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ax = optuna.visualization.matplotlib.plot_hypervolume_history(study, reference_point=list(hv.reference))
    expected = list(ax.lines[0].get_ydata())
    assert hv.values == pytest.approx(expected)
    assert hv.trials == list(range(len(points)))
    assert hv.values == sorted(hv.values), "hypervolume never decreases"
    assert hypervolume_history(synthetic_study([(0.5, 1.0)], directions=("maximize",))) is None


def test_block_frequency_counts_front_and_all() -> None:
    trials = [
        create_trial(state=TrialState.COMPLETE, values=[0.5], user_attrs={"arch": arch_dict(*blocks)})
        for blocks in (("standard", "separable"), ("standard", "standard"), ("reversed", "separable"))
    ]
    counts = {(c.stage, c.block): c for c in block_frequency(trials, trials[:1])}
    assert (counts[0, "standard"].front, counts[0, "standard"].all, counts[0, "standard"].all_total) == (1, 2, 3)
    assert counts[0, "reversed"].front == 0 and counts[0, "reversed"].all_share == pytest.approx(1 / 3)
    assert counts[1, "separable"].front_share == 1.0 and counts[1, "separable"].all == 2
    assert next((c.stage, c.block) for c in block_frequency(trials, [])) == (0, "standard")


def test_importances_with_conditional_params_and_too_few_trials() -> None:
    few = synthetic_study([(0.5, 1.0), (0.6, 2.0)])
    assert all("too few trials: 2" in imp.missing for imp in param_importances(few))

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        block = trial.suggest_categorical("s0.block", ["standard", "inverted_residual"])
        width = trial.suggest_int("s0.out_chs", 8, 64)
        expand = trial.suggest_float("s0.inverted_residual.expand_ratio", 1, 6) if block == "inverted_residual" else 1
        return width / 64 + 0.01 * expand, width * expand

    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    study.set_metric_names(["accuracy", "latency_ms"])
    study.optimize(objective, n_trials=30)
    accuracy, latency = param_importances(study)
    assert accuracy.objective == "accuracy" and latency.objective == "latency_ms"
    assert not accuracy.missing and not latency.missing
    assert "s0.inverted_residual.expand_ratio" in latency.values, "conditional parameters are assessed"
    assert max(accuracy.values, key=accuracy.values.get) == "s0.out_chs"
    assert sum(latency.values.values()) == pytest.approx(1.0)


# -- reports --------------------------------------------------------------------------------


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def test_report_of_a_tiny_study(in_tmp_dir: Path) -> None:
    result = run_search(tiny_config(name="rep", n_trials=4), progress=False)
    code = main(["report", "--study-name", "rep"])
    assert code == 0
    folder = in_tmp_dir / "runs" / "rep" / "report"
    markdown = (folder / "summary.md").read_text()
    for heading in SECTIONS:
        assert heading in markdown
    client = MlflowClient(result.tracking_uri)
    experiment_id = client.get_run(result.parent_run_id).info.experiment_id
    for row in result.front:
        assert f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{row.run_id}" in markdown
        p90 = client.get_run(row.run_id).data.metrics["latency_p90_ms"]
        assert f"| {p90:.4g} |" in markdown
    assert "reference point **accuracy 0, latency" in markdown
    assert "latency.fp.cpu_model" not in markdown and "| cpu_model |" in markdown
    assert "| latency.runtime | onnxruntime |" in markdown

    html = (folder / "report.html").read_text()
    assert "<script" not in html and "<link" not in html and 'src="http' not in html
    images = _images(html)
    assert len(images) == 4 and all(img.startswith(b"\x89PNG") and len(img) > 5000 for img in images)
    assert "accuracy: not computed, too few trials: 4 complete trial(s)" in markdown
    for name in ("pareto_front.png", "blocks_scatter.png", "blocks.png", "hypervolume.png"):
        assert (folder / name).read_bytes().startswith(b"\x89PNG")
    logged = {a.path for a in client.list_artifacts(result.parent_run_id, "report")}
    assert {"report/report.html", "report/summary.md", "report/pareto_front.png"} <= logged


def test_report_single_objective_and_empty_studies(tmp_path: Path) -> None:
    single = synthetic_study([(0.5, 1.0), (0.7, 2.0), (0.6, 0.5)], directions=("maximize",))
    result = write_report(single, tmp_path / "single")
    markdown = result.markdown.read_text()
    assert "## Best trial" in markdown and "| 1 | 0.7000 |" in markdown
    assert "Hypervolume needs two objectives" in markdown and (tmp_path / "single" / "history.png").is_file()
    assert "too few trials" in markdown

    empty = optuna.create_study(directions=["maximize", "minimize"])
    result = write_report(empty, tmp_path / "empty")
    markdown = result.markdown.read_text()
    assert "No complete trials yet" in markdown and "No complete feasible trial yet" in markdown
    assert len(_images(result.html.read_text())) == 1, "only the (empty) scatter"


def test_report_marks_over_budget_trials(tmp_path: Path) -> None:
    study = synthetic_study([(0.5, 1.0), (0.6, 2.0)])
    study.add_trial(
        create_trial(
            state=TrialState.PRUNED,
            user_attrs={"arch": arch_dict("reversed", "reversed"), "latency_ms": 9.0, "over_budget": "params=9 > 1"},
            system_attrs={"constraints": [8.0]},
        )
    )
    markdown = write_report(study, tmp_path).markdown.read_text()
    assert "trials: 3 (2 complete, 1 over budget)" in markdown
    assert "| 0 | reversed | 0/2 (0%) | 1/3 (33%) |" in markdown


def test_scatter_counts_over_budget_trials_without_latency(tmp_path: Path) -> None:
    study = synthetic_study([(0.5, 1.0), (0.6, 2.0)])
    over = {"arch": arch_dict("reversed", "reversed"), "over_budget": "params=9 > 1"}
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={**over, "latency_ms": 9.0}))
    for _ in range(2):  # rejected on params before any latency was measured
        study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs=over))
    fig, ax = pyplot().subplots()
    draw_front(study, ax)
    handles, labels = ax.get_legend_handles_labels()
    crosses = handles[labels.index("over budget (not trained); 2 more without latency, not drawn")]
    assert crosses.get_offsets().tolist() == [[9.0, 0.0]]
    assert ax.get_xlabel() == "measured latency p50 (ms)"
    pyplot().close(fig)

    markdown = write_report(study, tmp_path).markdown.read_text()
    assert "2 candidate(s) rejected on parameters or MACs have no latency: counted in the legend." in markdown
    assert "Latency is the measured median (p50)." in markdown

    only_unplaced = synthetic_study([])
    only_unplaced.add_trial(create_trial(state=TrialState.PRUNED, user_attrs=over))
    fig, ax = pyplot().subplots()
    draw_front(only_unplaced, ax)
    assert ax.get_legend_handles_labels()[1] == ["over budget (not trained); 1 more without latency, not drawn"]
    pyplot().close(fig)


def test_ablation_report_is_included(in_tmp_dir: Path) -> None:
    from PIL import Image

    study = synthetic_study([(0.5, 1.0), (0.6, 2.0)])
    tracker = StudyTracker(f"sqlite:///{in_tmp_dir / 'mlflow.db'}", "abl", runs_dir=in_tmp_dir)
    parent = tracker.ensure_parent(study, params={"design": "one_at_a_time"})
    tracker.log(parent, tags={"blocknas.kind": "ablation"})
    ablation_md = "# Ablation `abl`\n\nBase variant `base`.\n\n## block (base level: standard)\n"
    tracker.log_text(parent, ablation_md, "report/report.md")
    folder = in_tmp_dir / "runs" / "abl" / "report"
    folder.mkdir(parents=True)
    Image.new("RGB", (40, 30), "red").save(folder / "accuracy_vs_latency.png")  # the ablation's own figure
    result = write_report(study, folder, tracker=tracker)
    markdown = result.markdown.read_text()
    assert "- kind: ablation;" in markdown
    assert "## Ablation `abl`" in markdown and "### block (base level: standard)" in markdown
    assert "![ablation: accuracy vs latency](accuracy_vs_latency.png)" in markdown
    assert (folder / "report.md").read_text() == ablation_md, "fetched from the parent run"
    assert len(_images(result.html.read_text())) == 5, "scatters, blocks, hypervolume and the ablation figure"
    assert "<section id='ablation-abl'>" in result.html.read_text()


def _planted(secret: Path) -> str:
    """Markup of every kind a value could try: an image of a local file, raw HTML, a script, a link, a table bar."""
    return (
        f"![leak]({secret}) <img src='{secret}'> <script>alert(1)</script> [go](javascript:alert(1)) "
        "**bold** &lt;b&gt; | cell `code` ~~gone~~ # end"
    )


def test_report_shows_planted_markup_as_text_and_reads_no_file(in_tmp_dir: Path) -> None:
    secret = in_tmp_dir / "secret.txt"
    secret.write_text("TOPSECRET-c0ffee")
    planted = _planted(secret)
    name = "rep![n](summary.md)<b>x<b><script>alert(1)<script>"  # no "/" nor space: a study name is a folder
    result = run_search(tiny_config(name=name, n_trials=2), progress=False)
    client = MlflowClient(result.tracking_uri)
    client.log_param(result.parent_run_id, "planted", planted)  # a study setting
    child = children(client, result.parent_run_id)[0].info.run_id
    client.set_tag(child, "latency.fp.planted", planted)  # a tag, shown in the fingerprint table
    client.set_tag(child, "latency.fingerprint_id", planted)
    study = result.study
    study.set_metric_names([planted, "latency_ms"])
    arch = arch_dict("standard")
    arch["stages"][0]["block"] = planted
    for i in range(5):  # dominated trials, enough of them for importances: a param and user attributes
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                values=[0.0, 1e6],
                params={planted: i / 5},
                distributions={planted: optuna.distributions.FloatDistribution(0, 1)},
                user_attrs={"arch": arch, "latency_ms": 1e6, f"proxy.{planted}": float(i)},
            )
        )
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={SCREEN_PROXY_ATTR: planted, SCREEN_POOL_ATTR: 4}))

    assert main(["report", "--study-name", name]) == 0
    folder = in_tmp_dir / "runs" / name / "report"
    markdown, html = (folder / "summary.md").read_text(), (folder / "report.html").read_text()
    encoded = base64.b64encode(secret.read_bytes()).decode()
    for text in (markdown, html):
        assert "TOPSECRET" not in text and encoded[:12] not in text, "no file named by data is read"
    figures = [path.read_bytes() for path in folder.glob("*.png")]
    assert sorted(_images(html)) == sorted(figures), "the report's own figures, each once, and nothing else"
    # The Markdown as a permissive viewer renders it (raw HTML on), and the HTML page: no markup from data.
    viewer = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    for rendered in (viewer.render(markdown), html):
        assert not re.search(r"<(script|b>|strong>bold|s>gone|img src='|a href=\"javascript)", rendered)
        assert not re.search(r'<img src="(?!data:image/png;base64,|\w+\.png")', rendered)
    # Each planted value is shown as its characters: setting, tag, fingerprint id, block, parameter,
    # objective (twice), proxy and screening proxy.
    assert html.count(html_lib.escape(planted, quote=False)) >= 9
    assert html_lib.escape(f"study-{name}", quote=False) in html and f"<code>{html_lib.escape(name)}</code>" in html
    assert "| planted | !\\[leak\\](" in markdown and "\\<script>alert(1)\\</script>" in markdown


# -- command line and dashboards ------------------------------------------------------------


def test_report_cli_errors(bare_tmp_dir: Path) -> None:
    assert main(["report"]) == 2
    assert main(["report", "--study-name", "x"]) == 2
    assert not (bare_tmp_dir / "runs").exists(), "looking for a study creates nothing"
    optuna.create_study(
        study_name="other",
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(bare_tmp_dir / "j.log"))),
    )
    assert main(["report", "--study-name", "nope", "--storage", str(bare_tmp_dir / "j.log")]) == 2
    assert main(["dashboard"]) == 2, "no runs store yet"


def test_mlflow_server_refuses_a_remote_uri() -> None:
    with pytest.raises(DashboardError, match="already a tracking server"):
        start_mlflow_server("http://127.0.0.1:1")


def test_dashboard_refuses_a_host_it_cannot_listen_on(in_tmp_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboard", "--optuna", "--host", "192.0.2.1"]) == 2, "TEST-NET-1: never an address here"
    err = capsys.readouterr().err
    assert "blocknas dashboard: error: --host: cannot listen on '192.0.2.1'" in err and err.count("\n") == 1, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "99999"], "--port: 99999 must be >= 1 and <= 65,535"),
        (["--optuna", "--port", "0"], "--port: 0 must be >= 1"),
        (["--optuna", "--storage", "runs/optuna.jornal"], "no study storage at runs/optuna.jornal"),
        (["--optuna", "--storage", "sqlite:///runs/optuna.db"], "no study storage at runs/optuna.db"),
    ],
    ids=["port-mlflow", "port-optuna", "journal-typo", "sqlite-typo"],
)
def test_dashboard_refuses_a_bad_port_or_storage_before_starting(args: list[str], message: str, tmp_path: Path) -> None:
    """A real ``blocknas dashboard``: one line, exit 2, nothing created (a mistyped journal path was
    created and served as an empty dashboard; port 99999 failed after 60 s with the child's traceback)."""
    command = [sys.executable, "-m", "blocknas.search.cli", "dashboard", *args]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == f"blocknas dashboard: error: {message}\n" or (
        message in done.stderr and done.stderr.count("\n") == 1
    ), done.stderr
    assert not done.stdout and list(tmp_path.iterdir()) == [], "nothing served, nothing created"


# None: the default host. 127.0.0.2 is loopback too (Linux routes all of 127/8 to lo), but a
# server there does not answer on 127.0.0.1, so the flag demonstrably reached the server.
HOSTS = [None, "127.0.0.2"]


def _host(host: str | None) -> str:
    if host is None:
        return "127.0.0.1"
    try:
        return check_host(host)
    except ValueError:
        pytest.skip(f"{host} is not a local address on this system")


def _serve(args: list[str], cwd: Path, port: int, ready_path: str, expect: str, host: str | None = None) -> str:
    """Run ``scripts/dashboard.py ARGS [--host HOST] --port PORT`` until ``ready_path`` answers and ``expect`` is printed."""
    script = Path(__file__).resolve().parents[3] / "scripts" / "dashboard.py"
    log_path = cwd / f"dashboard-{port}.log"
    base = f"http://{_host(host)}:{port}"
    host_args = [] if host is None else ["--host", host]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(script), *args, *host_args, "--port", str(port)], cwd=cwd, stdout=log, stderr=log
        )
        try:
            wait_until_up(f"{base}{ready_path}", proc, timeout_s=120)
            deadline = time.monotonic() + 30
            while expect not in log_path.read_text() and time.monotonic() < deadline:
                time.sleep(0.2)
            with urllib.request.urlopen(f"{base}{ready_path}", timeout=5) as response:
                body = response.read().decode()
            if host is not None:
                with pytest.raises(OSError):
                    urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}", timeout=5)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                pytest.fail(f"the dashboard ignored SIGTERM for 30 s:\n{log_path.read_text()[-2000:]}")
    assert expect in log_path.read_text(), log_path.read_text()[-2000:]
    return body


# The host is resolved once for both dashboards: the default is checked on optuna-dashboard (a
# 12-s start), the flag on MLflow too (a 20-40-s start on 2 busy cores).
@pytest.mark.parametrize("host", HOSTS[1:], ids=["--host"])
def test_mlflow_dashboard_prints_the_study_runs_page(in_tmp_dir: Path, host: str | None) -> None:
    uri = f"sqlite:///{in_tmp_dir / 'runs' / 'mlflow.db'}"
    experiment_id = MlflowClient(uri).create_experiment("shown")
    port = free_port()
    page = f"http://{_host(host)}:{port}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    _serve(["--study-name", "shown"], in_tmp_dir, port, "/health", f"runs of study shown: {page}", host)


@pytest.mark.parametrize("host", HOSTS, ids=["default-host", "--host"])
def test_optuna_dashboard_serves_the_study(bare_tmp_dir: Path, host: str | None) -> None:
    journal = bare_tmp_dir / "runs" / "optuna.journal"
    journal.parent.mkdir()
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    optuna.create_study(study_name="shown", storage=storage)
    port = free_port()
    expect = f"optuna-dashboard: http://{_host(host)}:{port}"
    body = _serve(["--optuna"], bare_tmp_dir, port, "/api/studies", expect, host)
    assert '"shown"' in body
