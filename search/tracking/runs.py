"""MLflow tracking: one experiment per study, one parent run per study, one child run per trial.

Manual logging through ``MlflowClient`` (not optuna-integration's deprecated callback), so
many workers can attach children to the same parent. The parent run id lives in the Optuna
study's user attributes; the child run id in the trial's, and the trial number in the run's tags.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import socket
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import optuna
import requests
from mlflow.entities import Metric, Param, RunTag
from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_TIMEOUT, MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from optuna.trial import TrialState

from blocknas.search.files import file_lock

from .attrs import PARENT_RUN_ATTR, PARENT_TOKEN_ATTR, RUN_ID_ATTR
from .faults import StorageFault
from .masking import mask_url
from .names import ROLE_TAG, RUN_KEY_TAG, STATE_KILLED, STATE_TAG, STUDY_TAG, TRIAL_NUMBER_TAG, tag_equals

__all__ = [
    "RETRY_WINDOW_ENV",
    "RUN_STATUSES",
    "StudyTracker",
    "TrackingError",
    "TrackingOutage",
    "check_reachable",
    "check_tracking_store",
    "resolve_tracking_uri",
]

log = logging.getLogger(__name__)

_BATCH = 100  # MLflow's log_batch limit per kind

RUN_STATUSES: dict[TrialState, tuple[str, ...]] = {
    TrialState.RUNNING: ("RUNNING",),
    TrialState.COMPLETE: ("FINISHED",),
    TrialState.PRUNED: ("FINISHED",),  # pruned or over budget: the run itself ended well
    TrialState.FAIL: ("KILLED", "FAILED"),
}
"""The MLflow run statuses that agree with each Optuna trial state; a run that disagrees with its
finished trial is set to the first (a failed trial's worker was killed before it could end the run)."""


class TrackingError(RuntimeError):
    """The MLflow tracking server or store cannot be used."""


class TrackingOutage(StorageFault, TrackingError):
    """The tracking server stayed unreachable for the whole retry window during a trial.

    A :class:`~blocknas.search.tracking.faults.StorageFault`: the trial it cut short is failed
    and queued for retry (never counted), and the worker exits 2 with this paragraph.
    """


RETRY_WINDOW_ENV = "BLOCKNAS_TRACKING_RETRY_S"
"""How long (seconds, default 120) a trial's tracking write keeps retrying an unreachable server."""
DEFAULT_RETRY_WINDOW_S = 120.0
_T = TypeVar("_T")


def retry_window_s() -> float:
    """:data:`RETRY_WINDOW_ENV`'s window, else :data:`DEFAULT_RETRY_WINDOW_S`.

    Raises:
        TrackingError: The variable is set to something that is not a number of seconds >= 0.
    """
    text = os.environ.get(RETRY_WINDOW_ENV, "").strip()
    if not text:
        return DEFAULT_RETRY_WINDOW_S
    try:
        window = float(text)
    except ValueError:
        window = -1.0
    if not window >= 0:  # also NaN
        raise TrackingError(f"{RETRY_WINDOW_ENV}={text!r} is not a number of seconds >= 0: set it to e.g. 120")
    return window


def _transient(exc: BaseException) -> bool:
    """Whether ``exc`` (MLflow's, which carries the HTTP library's as context) says the server was not
    reached or did not answer: refused, reset, timed out, or too many 5xx/429 answers."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError)):
            return True
        current = current.__cause__ or current.__context__
    return False


def resolve_tracking_uri(configured: str | None, runs_dir: str | Path = "runs") -> str:
    """Configured URI, else ``$MLFLOW_TRACKING_URI``, else a SQLite store under ``runs_dir``."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    path = Path(runs_dir).resolve() / "mlflow.db"
    return f"sqlite:///{path}"


CONNECT_TIMEOUT_S = 5.0  # no connection within this: unreachable, said at once
ANSWER_TIMEOUT_S = 60.0  # a connected server may be slow to answer (starting up, busy): waited for


def check_reachable(
    uri: str, *, timeout_s: float = CONNECT_TIMEOUT_S, answer_timeout_s: float = ANSWER_TIMEOUT_S
) -> None:
    """Fail fast on an unreachable server (MLflow itself retries for minutes), but wait for a slow one.

    First a TCP connection to the server's host and port within ``timeout_s`` (skipped when an
    HTTP proxy carries the request): a refused, unroutable or silent address fails here. Then one
    read-only request through MLflow's own client (one experiment listed, one retry, up to
    ``answer_timeout_s``), so it reaches every server MLflow reaches, with the same credentials:
    ``http://user:pw@host`` and ``$MLFLOW_TRACKING_USERNAME``/``PASSWORD`` or ``TOKEN``. A server
    that accepts connections but answers late (one still starting, or busy with many workers)
    is not called unreachable: a 5-s limit on the answer failed workers that way.
    """
    if not uri.startswith(("http://", "https://")):
        return
    parts = urllib.parse.urlsplit(uri)
    try:
        host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:  # e.g. a "#", "?" or "/" left unencoded in the password ends the host part early
        raise TrackingError(
            mask_url(
                f"MLflow tracking URI {uri} cannot be read ({exc}): percent-encode a '#', '?' or '/' in its password "
                "(%23, %3F, %2F)"
            )
        ) from None
    if not _proxied(parts.scheme, host):
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
        except OSError as exc:
            raise TrackingError(mask_url(f"MLflow tracking server {uri} is not reachable: {exc}")) from None
    try:
        with _http_limits(timeout_s=answer_timeout_s, max_retries=1):
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:
        raise TrackingError(mask_url(f"MLflow tracking server {uri} is not reachable: {exc}")) from None


def _proxied(scheme: str, host: str) -> bool:
    """Whether requests (MLflow's HTTP library) sends a request to ``host`` through a proxy."""
    return scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(host)


def check_tracking_store(uri: str) -> None:
    """Check, creating nothing, that ``uri`` can be used: a server answers, a SQLite file's folder can be made.

    Raises:
        TrackingError: The server is unreachable, or the SQLite file or its folder is not writable.
    """
    check_reachable(uri)
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri.removeprefix("sqlite:///"))
    existing = next(p for p in (path, *path.parents) if p.exists())  # the store itself, or where it would go
    folder = existing != path
    if existing.is_dir() != folder or not os.access(existing, os.W_OK | (os.X_OK if folder else 0)):
        what = "folder" if folder else "file"
        raise TrackingError(mask_url(f"cannot use MLflow tracking store {uri}: {existing} is not a writable {what}"))


@contextlib.contextmanager
def _http_limits(*, timeout_s: float, max_retries: int) -> Iterator[None]:
    """MLflow's HTTP timeout and retry count for the block (MLflow reads them from the environment per request)."""
    limits = {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(timeout_s)), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(max_retries)}
    saved = {key: os.environ.get(key) for key in limits}
    os.environ.update(limits)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _sqlite_init_lock(uri: str) -> contextlib.AbstractContextManager[None]:
    """Serialize first use of a local SQLite store: MLflow migrates a new database on first
    use, and two workers migrating the same file at once corrupt it ("duplicate column")."""
    if not uri.startswith("sqlite:///"):
        return contextlib.nullcontext()
    return file_lock(uri.removeprefix("sqlite:///") + ".lock")


class StudyTracker:
    """MLflow bookkeeping for one study.

    Args:
        tracking_uri: Where runs go (a ``sqlite:///`` store, a server URL, ...).
        experiment: Experiment name (the study name).
        runs_dir: Local folder for artifacts when the store is a local SQLite file.
    """

    def __init__(self, tracking_uri: str, experiment: str, *, runs_dir: str | Path = "runs") -> None:
        check_reachable(tracking_uri)
        if mask_url(tracking_uri) != tracking_uri:  # MLflow prints "View run … at: <this URI>/#/…" as runs end
            os.environ[MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.name] = "true"
        if tracking_uri.startswith("sqlite:///"):
            Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = tracking_uri
        self.retry_window_s = retry_window_s()
        self._down = False  # an outage was declared: the next write tries once, not for a whole window
        try:
            with _sqlite_init_lock(tracking_uri):
                self.client = MlflowClient(tracking_uri=tracking_uri)
                self.experiment_id = self._experiment(experiment, Path(runs_dir))
        except Exception as exc:
            raise TrackingError(mask_url(f"cannot use MLflow tracking store {tracking_uri}: {exc}")) from None

    def _experiment(self, name: str, runs_dir: Path) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return str(found.experiment_id)
        local = self.tracking_uri.startswith("sqlite:")
        location = (runs_dir.resolve() / "artifacts").as_uri() if local else None
        try:
            return str(self.client.create_experiment(name, artifact_location=location))
        except Exception:  # another worker created it between our lookup and create
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)

    # -- parent run ---------------------------------------------------------------------

    def ensure_parent(self, study: optuna.Study, *, params: Mapping[str, Any]) -> str:
        """The study's parent run id: the stored one, else one a worker left before storing it, else a new one.

        Creates at most one parent run as long as workers call it only while set-up is theirs
        (:func:`~blocknas.search.tracking.claims.complete_setup`) or after it is complete:
        each step is checked first, so a worker taking over from a dead one finishes its run.
        """
        run_id = study.user_attrs.get(PARENT_RUN_ATTR)
        if run_id:
            self._reopen(run_id)
            return str(run_id)
        token = study.user_attrs.get(PARENT_TOKEN_ATTR)
        if token is None:  # unique to this Optuna study: a parent of an earlier study of that name is not it
            token = uuid.uuid4().hex
            study.set_user_attr(PARENT_TOKEN_ATTR, token)
        left = self._keyed_run(PARENT_TOKEN_ATTR, token)
        if left:
            run_id = left
            log.info("reusing MLflow parent run %s of study %s, left by a worker that died", run_id, study.study_name)
        else:
            run_id = self.create_keyed_run(
                PARENT_TOKEN_ATTR,
                token,
                run_name=f"study-{study.study_name}",
                tags={ROLE_TAG: "study", STUDY_TAG: study.study_name},
            )
            log.info("created MLflow parent run %s for study %s", run_id, study.study_name)
        if not self.client.get_run(run_id).data.params:
            self.log(run_id, params=params)
        study.set_user_attr(PARENT_RUN_ATTR, run_id)
        return str(run_id)

    def has_artifact(self, run_id: str, path: str) -> bool:
        """Whether the run has an artifact at ``path`` (a top-level file name)."""
        return any(info.path == path for info in self.client.list_artifacts(run_id))

    def _reopen(self, run_id: str) -> None:
        if self.client.get_run(run_id).info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")

    def finish_parent(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    # -- writes that outlive a lost answer or a short outage -------------------------------

    def _retrying(self, what: str, call: Callable[[], _T]) -> _T:
        """``call()`` (MLflow requests) without MLflow's own retries, retried here while the server is unreachable.

        MLflow's client retries a POST whose answer was lost, so a run-create could make two runs
        behind our back; here each attempt is one request, and the caller makes its retry safe
        (:meth:`create_keyed_run` looks its key up first; tags, params, metrics and ends repeat harmlessly).
        Retries back off up to 10 s apart for :attr:`retry_window_s`; then :class:`TrackingOutage`.
        After an outage the next write tries once, so a trial cut short does not wait a window per write.
        """
        deadline = time.monotonic() + (0.0 if self._down else self.retry_window_s)
        delay = 0.5
        while True:
            try:
                with _http_limits(timeout_s=MLFLOW_HTTP_REQUEST_TIMEOUT.get(), max_retries=0):
                    result = call()
            except Exception as exc:
                if not _transient(exc):
                    raise
                left = deadline - time.monotonic()
                if left <= 0:
                    self._down = True
                    raise TrackingOutage(
                        mask_url(
                            f"the MLflow tracking server {self.tracking_uri} did not answer for "
                            f"{self.retry_window_s:g} s ({what}: {str(exc).splitlines()[0]}). A trial it cut short "
                            "is failed and queued for retry, not counted. What to do: check that the server is up "
                            f"and reachable from here ({RETRY_WINDOW_ENV} sets how long a write keeps retrying). "
                            "Nothing finished is lost: rerun the same command then, and the study continues."
                        )
                    ) from exc
                log.warning("MLflow tracking server unreachable (%s); retrying for up to %.0f s more", what, left)
                time.sleep(min(delay, left))
                delay = min(delay * 2, 10.0)
                continue
            self._down = False
            return result

    def _keyed_run(self, key_tag: str, key: str) -> str | None:
        """The id of the live run tagged ``key_tag`` = ``key`` (the oldest, were there several), else None."""
        found = self.client.search_runs(
            [self.experiment_id], tag_equals(key_tag, key), max_results=1, order_by=["attributes.start_time ASC"]
        )
        return str(found[0].info.run_id) if found else None

    def create_keyed_run(self, key_tag: str, key: str, *, run_name: str, tags: Mapping[str, str]) -> str:
        """Create a run tagged ``key_tag`` = ``key``, at most one per key: the id of the one made.

        Each attempt after the first looks the key up first and adopts the run a create whose
        answer was lost made, so a lost answer or an outage never leaves a second run.
        """
        attempted = False

        def create_or_adopt() -> str:
            nonlocal attempted
            if attempted and (found := self._keyed_run(key_tag, key)) is not None:
                log.info("adopting MLflow run %s: a create whose answer was lost made it", found)
                return found
            attempted = True
            run = self.client.create_run(self.experiment_id, run_name=run_name, tags={**tags, key_tag: key})
            return str(run.info.run_id)

        return self._retrying(f"creating run {run_name}", create_or_adopt)

    def create_run(self, *, run_name: str, tags: Mapping[str, str]) -> str:
        """Create a run once, however its answers fare: :meth:`create_keyed_run` under a fresh :data:`RUN_KEY_TAG`."""
        return self.create_keyed_run(RUN_KEY_TAG, uuid.uuid4().hex, run_name=run_name, tags=tags)

    # -- child runs ---------------------------------------------------------------------

    def start_child(
        self, parent_run_id: str, trial: optuna.trial.BaseTrial, run_name: str, tags: Mapping[str, str]
    ) -> str:
        """Create the child run of ``trial`` (once: :meth:`create_run`) and record each id on the other."""
        run_id = self.create_run(
            run_name=run_name,
            tags={
                MLFLOW_PARENT_RUN_ID: parent_run_id,
                MLFLOW_RUN_NAME: run_name,
                TRIAL_NUMBER_TAG: str(trial.number),
                **tags,
            },
        )
        try:
            trial.set_user_attr(RUN_ID_ATTR, run_id)
        except BaseException:  # the study storage lost or refused: the run would stay RUNNING, found by no one
            with contextlib.suppress(Exception):
                self.end_run(run_id, "KILLED")
            raise
        return run_id

    def end_run(self, run_id: str, status: str) -> None:
        self._retrying(f"ending run {run_id}", lambda: self.client.set_terminated(run_id, status=status))

    def log(
        self,
        run_id: str,
        *,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, Any] | None = None,
        step: int = 0,
    ) -> None:
        """Log params, metrics (at ``step``) and tags in batches."""
        now = int(time.time() * 1000)
        param_list = [Param(k, _param_text(v)) for k, v in (params or {}).items()]
        metric_list = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items() if v is not None]
        tag_list = [RunTag(k, mask_url(str(v))[:5000]) for k, v in (tags or {}).items()]
        # One round trip per 100 of each kind: a store transaction costs more than its rows.
        for params_, metrics_, tags_ in itertools.zip_longest(
            _chunks(param_list), _chunks(metric_list), _chunks(tag_list)
        ):
            self._retrying(
                f"logging to run {run_id}",
                functools.partial(
                    self.client.log_batch, run_id, metrics=metrics_ or [], params=params_ or [], tags=tags_ or []
                ),
            )

    def run_tags(self, run_id: str) -> dict[str, str]:
        """The tags of run ``run_id``."""
        return dict(self._retrying(f"reading run {run_id}", lambda: self.client.get_run(run_id).data.tags))

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._retrying(f"logging {artifact_file}", lambda: self.client.log_text(run_id, mask_url(text), artifact_file))

    def log_file(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self._retrying(f"logging {path}", lambda: self.client.log_artifact(run_id, str(path), artifact_path))

    def children(self, parent_run_id: str) -> list[Any]:
        """All child runs of a parent (any status)."""
        query = tag_equals(MLFLOW_PARENT_RUN_ID, parent_run_id)
        runs: list[Any] = []
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], query, max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def settle_run(self, run_id: str, state: TrialState) -> str | None:
        """Give a finished trial's run a status that agrees with the trial's (:data:`RUN_STATUSES`).

        Optuna's state is the truth: a worker killed between ending the run and telling Optuna
        (or the other way round) leaves them disagreeing. Returns what changed, or ``None``.
        """
        status, agreeing = self.client.get_run(run_id).info.status, RUN_STATUSES[state]
        if status in agreeing:
            return None
        if state == TrialState.FAIL:
            self.client.set_tag(run_id, STATE_TAG, STATE_KILLED)
        if status == "RUNNING":
            self.client.set_terminated(run_id, status=agreeing[0])
        else:  # an ended run keeps its end time
            self.client.update_run(run_id, status=agreeing[0])
        return f"run {run_id}: status {status} -> {agreeing[0]}"

    def close_orphans(self, study: optuna.Study) -> int:
        """Settle the runs that killed workers left disagreeing with their finished trials (:meth:`settle_run`)."""
        closed = 0
        for trial in study.get_trials(deepcopy=False):
            run_id = trial.user_attrs.get(RUN_ID_ATTR)
            if run_id and trial.state.is_finished() and self.settle_run(run_id, trial.state):
                closed += 1
        return closed


def _param_text(value: Any) -> str:
    return mask_url(str(value))[:6000]


def _chunks(items: list[Any]) -> Iterable[list[Any]]:
    for i in range(0, len(items), _BATCH):
        yield items[i : i + _BATCH]
