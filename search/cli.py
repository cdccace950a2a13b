"""The ``blocknas`` command line: thin wrappers over the library, one subcommand each.

Bad input of any kind (config, dataset, storage, tracking) prints one paragraph naming
what and where, and exits with status 2. Ctrl-C / SIGTERM end the current trial cleanly
(its MLflow run is marked KILLED) and exit with 130.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Sequence

from blocknas.search.interrupts import install_interrupt_handlers

__all__ = ["main"]


def _user_errors() -> tuple[type[BaseException], ...]:
    from blocknas.blocks import ConfigError
    from blocknas.search.data import DataError
    from blocknas.search.latency.agent_client import AGENT_ERRORS
    from blocknas.search.tracking import StorageError, TrackingError
    from blocknas.search.tracking.faults import StorageFault
    from blocknas.search.training import CheckpointError
    from blocknas.search.training.export import ExportError

    return (
        ConfigError,
        FileNotFoundError,
        DataError,
        StorageError,
        StorageFault,
        TrackingError,
        CheckpointError,
        ExportError,
        *AGENT_ERRORS,
    )


def _in_flags(exc: Exception, command: str) -> Exception:
    """A changed study definition's ways on, worded as this command's flags."""
    from blocknas.search.study.definition import ChangedDefinition

    if not isinstance(exc, ChangedDefinition):
        return exc
    rename = "--name or name:" if command == "ablate" else "--study-name or name:"
    return exc.worded(rename=rename, override="--allow-changed-definition")


def add_study_flags(parser: argparse.ArgumentParser) -> None:
    """The study's config file and the flags that say where the study lives (they override the file)."""
    parser.add_argument("--config", required=True, help="study YAML (e.g. configs/default.yaml)")
    parser.add_argument("--storage", help="Optuna storage: journal path, sqlite:///, postgresql://, redis://")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///runs/mlflow.db)")
    parser.add_argument("--study-name", dest="name", help="override the study name")


def add_study_overrides(parser: argparse.ArgumentParser) -> None:
    """The flags every study-running command shares (they override the config file)."""
    add_study_flags(parser)
    parser.add_argument("--n-trials", type=int, help="total trials wanted in the study (all workers)")
    parser.add_argument("--timeout", type=float, dest="timeout_s", help="stop starting trials after this many seconds")
    parser.add_argument("--seed", type=int, help="seed of the sampler and of every trial's training (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--allow-changed-definition",
        action="store_true",
        help="resume a study although its data, training, latency, objective or constraints changed",
    )
    parser.add_argument("--no-summary", action="store_true", help=argparse.SUPPRESS)  # workers: one summary, at the end


def study_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The study config file with the command-line overrides applied (those the command has)."""
    from blocknas.search.study import load_study_config

    flags = vars(args)
    return load_study_config(args.config).with_overrides(
        n_trials=flags.get("n_trials"),
        timeout_s=flags.get("timeout_s"),
        storage=args.storage,
        tracking_uri=args.tracking_uri,
        name=args.name,
        seed=flags.get("seed"),
        parallel=flags.get("parallel"),
    )


def _pin_threads() -> None:
    """Honour ``BLOCKNAS_THREADS`` (set by ``blocknas workers``) for training threads."""
    import os

    if os.environ.get("BLOCKNAS_THREADS"):
        import torch

        torch.set_num_threads(int(os.environ["BLOCKNAS_THREADS"]))


def add_search_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_overrides(parser)
    parser.add_argument(
        "--parallel",
        type=_parallel_flag,
        help="trials at once on this machine, as worker processes: auto (default: as many as the cores allow, "
        "or the config's parallel:) or a number (1: this process alone)",
    )


def _parallel_flag(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give auto or a number of workers (1 or more)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: give auto or a number of workers (1 or more)")
    return value


def cmd_search(args: argparse.Namespace) -> int:
    from blocknas.search.report import print_search_summary
    from blocknas.search.study import available_cores, plan_parallel, run_search
    from blocknas.search.study.workers import held_until_released

    if not held_until_released():  # a worker of a parallel search whose first worker found a problem
        return 0
    config = study_config(args)
    plan = plan_parallel(
        config.parallel, n_trials=config.n_trials, threads=config.train.threads, cores=available_cores()
    )
    if plan.workers > 1:
        return _search_in_parallel(args, config, plan)
    _pin_threads()
    result = run_search(config, progress=not args.no_progress, allow_changed_definition=args.allow_changed_definition)
    if not args.no_summary:
        print_search_summary(result, config)
    return 0


def _search_in_parallel(args: argparse.Namespace, config, plan) -> int:  # type: ignore[no-untyped-def]
    """This process is the first worker: it checks and sets up the study (so bad input is reported once),
    then starts the others on the study's storage, runs trials beside them and prints one summary."""
    import subprocess

    import torch

    from blocknas.search.report import print_search_summary
    from blocknas.search.study import run_search
    from blocknas.search.study.runner import search_result
    from blocknas.search.study.workers import release_workers, start_workers, stop_workers, wait_workers

    logging.getLogger(__name__).info(
        "%d trials at once (%s), %d training thread(s) each", plan.workers, plan.why, plan.threads
    )
    if plan.oversubscribed:
        logging.getLogger(__name__).warning(
            "%d workers × %d threads exceed the %d cores: trials will slow each other down",
            plan.workers,
            plan.threads,
            plan.cores,
        )
    torch.set_num_threads(plan.threads)
    # the others load their libraries meanwhile, held until the study is checked and set up here
    worker_args = [*search_argv(args), "--no-summary", *([] if args.no_progress else ["--no-progress"])]
    others: list[subprocess.Popen[bytes]] = start_workers(
        plan.workers - 1, worker_args, threads=plan.threads, held=True
    )
    try:
        run_search(
            config,
            progress=not args.no_progress,
            allow_changed_definition=args.allow_changed_definition,
            on_ready=lambda: release_workers(others),
        )
    except BaseException:
        stop_workers(others)
        raise
    code = wait_workers(others)
    if code == 0 and not args.no_summary:  # one summary of the study, once every worker is done
        print_search_summary(search_result(config), config)
    return code


def add_workers_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--workers", type=int, default=2, help="number of local worker processes")
    add_study_overrides(parser)


def cmd_workers(args: argparse.Namespace) -> int:
    from blocknas.blocks import ConfigError
    from blocknas.search.report import print_search_summary
    from blocknas.search.study.runner import search_result
    from blocknas.search.study.workers import MAX_WORKERS, launch_workers

    if not 1 <= args.workers <= MAX_WORKERS:
        raise ConfigError(f"{args.workers} workers requested; give -n 1 or more, up to {MAX_WORKERS}", path="--workers")
    config = study_config(args)  # validate once here: a bad config is one error, not N
    code = launch_workers(args.workers, [*search_argv(args), "--no-summary"])
    if code == 0:  # one summary of the study, not one per worker
        print_search_summary(search_result(config), config)
    return code


def search_argv(args: argparse.Namespace) -> list[str]:
    """The ``blocknas search`` arguments equivalent to ``args`` (for identical workers)."""
    argv = ["--config", args.config]
    flags = {
        "--n-trials": args.n_trials,
        "--timeout": args.timeout_s,
        "--storage": args.storage,
        "--tracking-uri": args.tracking_uri,
        "--study-name": args.name,
        "--seed": args.seed,
    }
    for flag, value in flags.items():
        if value is not None:
            argv += [flag, str(value)]
    if args.allow_changed_definition:
        argv.append("--allow-changed-definition")
    return [*argv, "--no-progress"] if args.no_progress else argv


def add_validate_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_flags(parser)
    parser.add_argument("--epochs", type=int, help="epochs of the longer training (default 5x the study's)")
    parser.add_argument("--train-images", type=int, help="training images of the longer training (default the study's)")
    parser.add_argument("--random", type=int, help="random complete trials off the front to retrain (default up to 8)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def cmd_validate(args: argparse.Namespace) -> int:
    import dataclasses

    from blocknas.blocks import ConfigError
    from blocknas.search.study import run_validation
    from blocknas.search.tracking import mask_url

    _pin_threads()
    config = study_config(args)
    flags = {"epochs": args.epochs, "train_images": args.train_images, "random": args.random}
    try:
        validate = dataclasses.replace(config.validate, **{k: v for k, v in flags.items() if v is not None})
    except ConfigError as exc:
        raise ConfigError(exc.message, path=f"--{exc.path.replace('_', '-')}") from None
    result = run_validation(dataclasses.replace(config, validate=validate), progress=not args.no_progress)
    print(result.validation.markdown())
    print(f"trained here: {result.trained} of {result.trainings} trainings (the rest were already recorded)")
    print(f"results: {result.folder}/  (validate.md, validate.json, results.jsonl)")
    print(
        f"MLflow run {result.run_id}, child of the study's parent run {result.parent_run_id} "
        f"at {mask_url(result.tracking_uri)}"
    )
    return 0


def add_doctor_arguments(parser: argparse.ArgumentParser) -> None:
    add_location_arguments(parser)
    parser.add_argument(
        "--repair",
        action="store_true",
        help="mend what is reported as repairable (journal damage, a run status against its finished trial); "
        "without it the doctor only reads",
    )


def cmd_doctor(args: argparse.Namespace) -> int:
    from blocknas.blocks import ConfigError
    from blocknas.search.tracking import check_study, mask_url

    name, storage, tracking_uri, runs_dir = study_location(args)
    if not name:
        raise ConfigError("which study? give --study-name NAME or --config FILE", path="--study-name")
    diagnosis = check_study(name, storage_url=storage, tracking_uri=tracking_uri, runs_dir=runs_dir, repair=args.repair)
    for done in diagnosis.repaired:
        print(f"  repaired: {mask_url(done)}")
    print(
        f"study {name}: {diagnosis.trials} trials ({diagnosis.complete} complete), {diagnosis.children} MLflow child runs"
    )
    for problem in diagnosis.problems:
        print(f"  problem: {mask_url(problem)}")
    print("consistent" if diagnosis.ok else f"{len(diagnosis.problems)} problem(s)")
    return 0 if diagnosis.ok else 1


def add_ablate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="ablation YAML (e.g. configs/ablations/seed_blocks.yaml)")
    parser.add_argument("--timeout", type=float, dest="timeout_s", help="stop starting trials after this many seconds")
    parser.add_argument("--storage", help="Optuna storage: journal path, sqlite:///, postgresql://, redis://")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///runs/mlflow.db)")
    parser.add_argument("--name", help="override the ablation (study) name")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def cmd_ablate(args: argparse.Namespace) -> int:
    from blocknas.search.ablation import load_ablation_config, run_ablation
    from blocknas.search.tracking import mask_url

    _pin_threads()
    config = load_ablation_config(args.config).with_overrides(
        timeout_s=args.timeout_s, storage=args.storage, tracking_uri=args.tracking_uri, name=args.name
    )
    result = run_ablation(config, progress=not args.no_progress)
    print(result.markdown)
    print(
        f"report: {config.report_dir}/  (MLflow parent run {result.parent_run_id} at {mask_url(result.tracking_uri)})"
    )
    if not result.complete:
        print("incomplete: rerun the same command to run the missing cells")
    return 0


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="training YAML (e.g. configs/train/default.yaml); the flags override it")
    parser.add_argument(
        "--arch",
        "--from",
        dest="arch",
        help="YAML path, registered model name, <study>/<name> (a discovered one; a unique prefix such as "
        "default/t0012 is enough) or runs:/<run_id>",
    )
    parser.add_argument("--epochs", type=int, help="epochs to train (default: the config's, else 30)")
    parser.add_argument(
        "--dataset",
        help="dataset name (digits, synthetic, cifar10, ...); other data keys come from --config; default: the data "
        "the architecture was searched on (its meta.data), all of it",
    )
    parser.add_argument("--out", dest="out_dir", help="checkpoint folder (default runs/train/<name>)")
    parser.add_argument("--name", help="run name (default: from --arch)")
    parser.add_argument(
        "--seed", type=int, help="seed of the initial weights, batch order and augmentation (default 0)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from <out>/last.pt after a kill")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///runs/mlflow.db)")
    parser.add_argument("--no-tracking", action="store_true", help="no MLflow run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_train(args: argparse.Namespace) -> int:
    from blocknas.search.training import FullTrainConfig, load_train_config, train_full

    _pin_threads()
    config = (load_train_config(args.config) if args.config else FullTrainConfig()).with_overrides(
        arch=args.arch,
        epochs=args.epochs,
        dataset=args.dataset,
        out_dir=args.out_dir,
        name=args.name,
        seed=args.seed,
        tracking_uri=args.tracking_uri,
        tracking=False if args.no_tracking else None,
    )
    result = train_full(config, resume=args.resume, progress=not args.no_progress)
    print(
        f"best val accuracy {result.best_accuracy:.4f} at epoch {result.best_epoch + 1}, "
        f"final {result.final_accuracy:.4f}"
    )
    print(f"weights: {result.weights}  architecture: {result.arch_path}")
    if result.run_id:
        print(f'MLflow run: {result.run_id}  (arch="runs:/{result.run_id}")')
    return 0


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    from blocknas.search.export_formats import FORMATS

    parser.add_argument("--checkpoint", required=True, help="weights (best.safetensors) or training state (best.pt)")
    parser.add_argument("--arch", help="architecture (default: arch.yaml beside the checkpoint)")
    parser.add_argument("--out", dest="out_dir", help="output folder (default: <checkpoint folder>/export)")
    parser.add_argument(
        "--formats", nargs="+", choices=FORMATS, default=list(FORMATS), help="files to write (default: all of them)"
    )
    parser.add_argument("--batch-size", type=int, default=1, help="batch size of the timing (ONNX: any batch)")
    parser.add_argument("--threads", type=int, default=1, help="threads of the timing")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest allowed difference from PyTorch outputs")


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from blocknas.search.latency import LatencyTarget
    from blocknas.search.training import export_checkpoint

    checkpoint = Path(args.checkpoint)
    arch = args.arch or checkpoint.parent / "arch.yaml"
    if not args.arch and not Path(arch).is_file():
        raise FileNotFoundError(f"no --arch given and no arch.yaml beside {checkpoint}")
    target = LatencyTarget().replace(batch_size=args.batch_size, threads=args.threads)
    result = export_checkpoint(
        arch,
        checkpoint,
        args.out_dir or checkpoint.parent / "export",
        formats=args.formats,
        target=target,
        atol=args.atol,
    )
    for fmt, path in result.files.items():
        print(
            f"{fmt}: {path}  max |diff| vs PyTorch {result.max_abs_diff[fmt]:.2g}  "
            f"latency p50 {result.latency[fmt].p50_ms:.4f} ms"
        )
    print(f"latency: {result.latency_path}")
    return 0


def add_location_arguments(parser: argparse.ArgumentParser) -> None:
    """Where an existing study lives: its config file, or its name and stores."""
    parser.add_argument("--config", help="study YAML: its name, storage, tracking URI and runs_dir are used")
    parser.add_argument("--study-name", dest="name", help="the study (needed without --config)")
    parser.add_argument("--storage", help="Optuna storage (default <runs-dir>/optuna.journal)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///<runs-dir>/mlflow.db)")
    parser.add_argument("--runs-dir", help="runs folder (default runs, or the config's)")


def study_location(args: argparse.Namespace) -> tuple[str | None, str, str, str]:
    """``(study name, storage URL, tracking URI, runs dir)`` from ``--config`` and the flags."""
    from blocknas.search.files import check_safe_name
    from blocknas.search.study import load_study_config
    from blocknas.search.study.config import default_storage_url
    from blocknas.search.tracking import resolve_tracking_uri

    if args.config:
        config = load_study_config(args.config).with_overrides(
            name=args.name, storage=args.storage, tracking_uri=args.tracking_uri, runs_dir=args.runs_dir
        )
        uri = resolve_tracking_uri(config.tracking_uri, config.runs_dir)
        return config.name, config.storage_url, uri, config.runs_dir
    runs_dir = args.runs_dir or "runs"
    if args.name:  # used as a folder name as it is, with no config to check it
        check_safe_name(args.name, path="--study-name", folder=runs_dir)
    storage = args.storage or default_storage_url(runs_dir)
    return args.name, storage, resolve_tracking_uri(args.tracking_uri, runs_dir), runs_dir


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    add_location_arguments(parser)
    parser.add_argument("--ui-base", default="http://127.0.0.1:5000", help="MLflow UI address for run links")


def cmd_report(args: argparse.Namespace) -> int:
    from blocknas.blocks import ConfigError
    from blocknas.search.report import report_study

    name, storage, tracking_uri, runs_dir = study_location(args)
    if not name:
        raise ConfigError("which study? give --study-name NAME or --config FILE", path="--study-name")
    result = report_study(name, storage_url=storage, tracking_uri=tracking_uri, runs_dir=runs_dir, ui_base=args.ui_base)
    print(f"report:  {result.html}")
    print(f"summary: {result.markdown}")
    print(f"figures: {', '.join(str(p) for p in result.files if p.suffix == '.png')}")
    if result.parent_run_id:
        print(f"logged on MLflow parent run {result.parent_run_id} (artifacts report/)")
    return 0


def add_dashboard_arguments(parser: argparse.ArgumentParser) -> None:
    add_location_arguments(parser)
    parser.add_argument("--optuna", action="store_true", help="optuna-dashboard on the study storage instead of MLflow")
    parser.add_argument(
        "--host",
        help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 opens it to the network)",
    )
    parser.add_argument("--port", type=int, help="port (default 5000 for MLflow, 8080 for optuna-dashboard)")


def cmd_dashboard(args: argparse.Namespace) -> int:
    from pathlib import Path

    from blocknas.blocks.schema import check_range
    from blocknas.search.tracking import DashboardError, check_host, mask_url, runs_page_url, start_mlflow_server, stop
    from blocknas.search.tracking.dashboard import DEFAULT_HOST, run_optuna_dashboard
    from blocknas.search.tracking.storage import check_local_store

    host = check_host(DEFAULT_HOST if args.host is None else args.host)
    if args.port is not None:
        check_range(args.port, "--port", 1, 65_535)
    name, storage, tracking_uri, _ = study_location(args)
    if args.optuna:
        check_local_store(storage, "study storage")  # optuna would create a mistyped one and serve it empty
        port = args.port or 8080
        print(f"optuna-dashboard: http://{host}:{port}  (storage {mask_url(storage)}; Ctrl-C stops it)", flush=True)
        run_optuna_dashboard(storage, host=host, port=port)
        return 0
    if tracking_uri.startswith(("http://", "https://")):
        print(f"MLflow: {mask_url(tracking_uri)} is already a tracking server: open it in a browser")
        return 0
    store = Path(tracking_uri.removeprefix("sqlite:///"))
    if tracking_uri.startswith("sqlite:///") and not store.is_file():
        raise FileNotFoundError(f"no MLflow runs store at {store}: run a search first (make search)")
    try:
        process, url = start_mlflow_server(tracking_uri, host=host, port=args.port or 5000)
    except DashboardError as exc:
        print(
            f"blocknas dashboard: error: mlflow server did not start ({exc}); is the port taken? try --port",
            file=sys.stderr,
        )
        return 1
    print(f"MLflow: {url}  (runs store {mask_url(tracking_uri)}; Ctrl-C stops it)", flush=True)
    page = runs_page_url(url, tracking_uri, name) if name else None
    print(
        f"runs of study {name}: {page}" if page else "open an experiment, then 'Model training' for its runs",
        flush=True,
    )
    try:
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop(process)


def add_latency_agent_arguments(parser: argparse.ArgumentParser) -> None:
    from blocknas.search.agent_flags import add_agent_arguments

    add_agent_arguments(parser)


def cmd_latency_agent(args: argparse.Namespace) -> int:
    from blocknas.search.latency.agent import agent_settings, serve_agent

    serve_agent(agent_settings(args), announce=lambda line: print(line, flush=True))
    return 0


def add_latency_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="latency_command", required=True, help="what to do (each has --help)")
    calibrate = _add_command(
        sub, "latency calibrate", "calibrate a per-block lookup table on a device, through its agent"
    )
    calibrate.add_argument("--agent", required=True, help="http://HOST:PORT of the latency agent on the device")
    calibrate.add_argument("--token-env", help="environment variable holding the agent's token")
    calibrate.add_argument("--out", required=True, help="folder of the table file (named by the device's fingerprint)")
    calibrate.add_argument("--config", help="study YAML: its latency settings (threads, batch, protocol) and space")
    calibrate.add_argument("--space", help="space to draw the networks from (default: the config's, else mobile32)")
    calibrate.add_argument("--networks", type=int, default=10, help="networks that fill and fit the table")
    calibrate.add_argument("--held-out", type=int, default=10, help="other networks it must then predict")
    calibrate.add_argument("--seed", type=int, default=0, help="seed of the networks drawn")
    for flag, what, default in (("--input-size", "input size (square)", 32), ("--in-chans", "input channels", 3)):
        calibrate.add_argument(
            flag, type=int, help=f"{what} where the space leaves it to the data (default: the config's, else {default})"
        )
    calibrate.add_argument(
        "--num-classes", type=int, default=10, help="classes where the space leaves them (default 10)"
    )
    calibrate.set_defaults(latency_handler=cmd_latency_calibrate)
    script = _add_command(
        sub, "latency agent-script", "write the latency agent as one file (needs ONNX Runtime and NumPy)"
    )
    script.add_argument("--out", default="blocknas-agent.pyz", help="file to write (default blocknas-agent.pyz)")
    script.set_defaults(latency_handler=cmd_latency_agent_script)


def cmd_latency(args: argparse.Namespace) -> int:
    return int(args.latency_handler(args))


def cmd_latency_calibrate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from blocknas.blocks import ConfigError
    from blocknas.blocks.schema import check_range
    from blocknas.search.latency import LatencyTarget, NetworkShape, calibrate_table
    from blocknas.search.latency.calibrate import MAX_CALIBRATION_NETWORKS
    from blocknas.search.latency.target import check_agent_url
    from blocknas.search.seeding import check_seed
    from blocknas.search.study import load_study_config
    from blocknas.spaces import SearchSpace

    check_range(args.networks, "--networks", 1, MAX_CALIBRATION_NETWORKS)
    check_range(args.held_out, "--held-out", 2, MAX_CALIBRATION_NETWORKS)
    check_seed(args.seed, "--seed")
    for flag, value in (("--input-size", args.input_size), ("--in-chans", args.in_chans)):
        if value is not None:
            check_range(value, flag, 1, 4096)
    check_range(args.num_classes, "--num-classes", 1, 100_000)
    check_agent_url(args.agent, "--agent")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ConfigError(f"{args.out} is a file; give a folder for the table", path="--out")
    config = load_study_config(args.config) if args.config else None
    data_size = config.data.input_size if config and config.data.input_size else (32, 32)
    size = (args.input_size, args.input_size) if args.input_size else tuple(data_size)
    in_chans = args.in_chans or (config.data.in_chans if config and config.data.in_chans else 3)
    base = config.latency if config else LatencyTarget()
    target = base.replace(agent=args.agent, token_env=args.token_env, mode="measured", table=None)
    space = SearchSpace.load(args.space or (config.space_path() if config else "mobile32"))
    shape = NetworkShape((int(size[0]), int(size[1])), in_chans, args.num_classes)
    result = calibrate_table(
        target, space, out_dir=args.out, n_networks=args.networks, n_held_out=args.held_out, seed=args.seed, shape=shape
    )
    table, accuracy = result.table, result.accuracy
    print(f"table:  {table.path}  ({len(table)} entries, {table.n_calibration_points} calibration networks)")
    print(f"device: {table.fingerprint.get('cpu_model', '?')} (fingerprint {table.fingerprint_id}) at {args.agent}")
    print(
        f"held-out accuracy: {accuracy['within_10pct']:.0%} of {accuracy['n_held_out']} networks within ±10 %, "
        f"Kendall τ {accuracy['kendall_tau']:.3f}, median |error| {accuracy['median_abs_rel_error']:.1%}"
    )
    print(f"use it offline: latency: {{mode: predicted, table: {table.path}}}")
    return 0


def cmd_latency_agent_script(args: argparse.Namespace) -> int:
    from blocknas.blocks import ConfigError
    from blocknas.search.latency import write_agent_zipapp

    try:
        path = write_agent_zipapp(args.out)
    except OSError as exc:
        raise ConfigError(f"cannot write {args.out}: {exc.strerror or exc}", path="--out") from None
    print(f"latency agent: {path}  (copy it to the device; run: python3 {path.name} --help)")
    return 0


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="study or ablation YAML whose data: section names the dataset")


def cmd_data(args: argparse.Namespace) -> int:
    from blocknas.search.data import fetch_dataset, read_data_section

    print(fetch_dataset(read_data_section(args.config)))
    return 0


def add_space_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["describe"], help="describe: size, parameter names and choices, cost range")
    parser.add_argument("space", help="a shipped space (tiny, mobile32) or a space YAML file")
    parser.add_argument("--samples", type=int, default=200, help="random networks the cost range is drawn from")


def cmd_space(args: argparse.Namespace) -> int:
    from statistics import median

    from blocknas.blocks.schema import check_range
    from blocknas.spaces import SearchSpace

    check_range(args.samples, "--samples", 1, 100_000)
    space = SearchSpace.load(args.space)
    print(space.describe())
    archs = space.sampled(args.samples)
    costs = [arch.cost() for arch in archs]
    (h, w), first = archs[0].input_size, archs[0]
    print(f"cost of {args.samples} random networks (seed 0) at {first.in_chans}x{h}x{w}, {first.num_classes} classes:")
    for name, values in (("params", [c.params for c in costs]), ("MACs", [c.macs for c in costs])):
        print(f"  {name:<6}  min {min(values):,}  median {median(values):,.0f}  max {max(values):,}")
    return 0


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "search": ("run (or resume) a search study", add_search_arguments, cmd_search),
    "workers": ("run N local worker processes on one study", add_workers_arguments, cmd_workers),
    "validate": (
        "retrain a finished search's front and random trials longer: does its score rank networks right?",
        add_validate_arguments,
        cmd_validate,
    ),
    "doctor": ("check that the Optuna study and its MLflow runs agree", add_doctor_arguments, cmd_doctor),
    "ablate": ("run (or resume) an ablation and write its report", add_ablate_arguments, cmd_ablate),
    "train": ("fully train one architecture, with checkpoints, resume and MLflow", add_train_arguments, cmd_train),
    "export": ("export a checkpoint to ONNX and TorchScript, verified and timed", add_export_arguments, cmd_export),
    "report": ("write the HTML/Markdown report of a study and log it on MLflow", add_report_arguments, cmd_report),
    "dashboard": (
        "serve MLflow (or --optuna: optuna-dashboard) on 127.0.0.1 (or --host)",
        add_dashboard_arguments,
        cmd_dashboard,
    ),
    "latency-agent": (
        "serve latency measurements of ONNX models on this device (127.0.0.1 unless --allow-remote)",
        add_latency_agent_arguments,
        cmd_latency_agent,
    ),
    "latency": (
        "latency tools: calibrate a device's lookup table, write the agent script",
        add_latency_arguments,
        cmd_latency,
    ),
    "data": ("get a config's dataset onto disk if it is not there yet (or say why not)", add_data_arguments, cmd_data),
    "space": ("describe a search space: size, parameter names and choices, cost range", add_space_arguments, cmd_space),
}


EXAMPLES: dict[str, tuple[str, ...]] = {
    "blocknas": (
        "blocknas data --config configs/default.yaml",
        "blocknas search --config configs/default.yaml",
        "blocknas report --config configs/default.yaml",
    ),
    "search": (
        "blocknas search --config configs/default.yaml",
        "blocknas search --config configs/tiny.yaml --n-trials 8 --timeout 300 --study-name tiny2",
        "blocknas search --config configs/default.yaml --storage postgresql://blocknas@db/optuna "
        "--tracking-uri http://mlflow:5000",
    ),
    "workers": (
        "blocknas workers -n 2 --config configs/default.yaml",
        "blocknas workers -n 4 --config configs/tiny.yaml --n-trials 16",
    ),
    "validate": (
        "blocknas validate --config configs/default.yaml",
        "blocknas validate --config configs/default.yaml --epochs 10 --random 4",
    ),
    "doctor": (
        "blocknas doctor --config configs/default.yaml",
        "blocknas doctor --study-name seed_blocks",
        "blocknas doctor --config configs/default.yaml --repair",
    ),
    "ablate": (
        "blocknas ablate --config configs/ablations/seed_blocks.yaml",
        "blocknas ablate --config configs/ablations/seed_blocks_latency.yaml --timeout 3600",
    ),
    "train": (
        "blocknas train --config configs/train/default.yaml --from default/t0000 --epochs 30",
        "blocknas train --config configs/train/default.yaml --from default/t0000 --epochs 30 --resume",
        "blocknas train --from blocknet_mobile --dataset digits --epochs 5 --no-tracking",
    ),
    "export": (
        "blocknas export --checkpoint runs/train/t0000_6ff116f0/best.safetensors",
        "blocknas export --checkpoint runs/train/t0000_6ff116f0/best.pt --formats onnx --batch-size 8",
    ),
    "report": (
        "blocknas report --config configs/default.yaml",
        "blocknas report --study-name default",
        "blocknas report --study-name s --storage postgresql://blocknas@db/optuna --tracking-uri http://mlflow:5000",
    ),
    "dashboard": (
        "blocknas dashboard --config configs/default.yaml",
        "blocknas dashboard --optuna --study-name default",
    ),
    "latency-agent": (
        "blocknas latency-agent",
        "blocknas latency-agent --host 0.0.0.0 --allow-remote --token-env BLOCKNAS_AGENT_TOKEN",
    ),
    "latency": (
        "blocknas latency agent-script --out blocknas-agent.pyz",
        "blocknas latency calibrate --agent http://127.0.0.1:8765 --config configs/default.yaml --out tables/",
    ),
    "latency calibrate": (
        "blocknas latency calibrate --agent http://127.0.0.1:8765 --config configs/default.yaml --out tables/",
        "blocknas latency calibrate --agent http://10.0.0.7:8765 --token-env BLOCKNAS_AGENT_TOKEN "
        "--space mobile32 --input-size 64 --out tables/ --networks 20",
    ),
    "latency agent-script": ("blocknas latency agent-script --out blocknas-agent.pyz",),
    "data": (
        "blocknas data --config configs/default.yaml",
        "blocknas data --config configs/ablations/seed_blocks.yaml",
    ),
    "space": (
        "blocknas space describe mobile32",
        "blocknas space describe tiny --samples 50",
    ),
}
"""Command lines shown at the end of each command's ``--help`` (a test parses every one)."""


def _epilog(words: str) -> str:
    """The end of ``blocknas <words> --help``: its :data:`EXAMPLES` (shown as written, by
    ``argparse.RawDescriptionHelpFormatter``)."""
    return "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[words])


def _add_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], words: str, help_text: str
) -> argparse.ArgumentParser:
    """The (sub-)subcommand ``blocknas <words>``: its ``--help`` says ``help_text`` and ends with its examples."""
    return sub.add_parser(
        words.split()[-1],
        help=help_text,
        description=help_text,
        epilog=_epilog(words),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("blocknas")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blocknas",
        description="Architecture search and ablation of conv blocks.",
        epilog=_epilog("blocknas"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, help="what to do (each has --help)")
    for name, (help_text, add_arguments, handler) in COMMANDS.items():
        command = _add_command(sub, name, help_text)
        add_arguments(command)
        command.set_defaults(handler=handler)
    return parser


def _quiet_third_parties(verbose: bool) -> None:
    """Silence what tells a user nothing: chatty loggers, Optuna's ExperimentalWarning (heartbeats on an
    RDB storage) and MLflow's "View run … at" line after each trial on a server (``--verbose`` keeps the logs)."""
    import os
    import warnings

    import optuna

    for noisy in ("alembic", "mlflow", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not verbose:  # MLflow logs a database error with its traceback, then raises it: the raise is what is reported
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    optuna.logging.set_verbosity(logging.DEBUG if verbose else logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # MLflow's own switch; workers inherit it


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``blocknas`` and of the thin ``scripts/*.py``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    _quiet_third_parties(args.verbose)
    install_interrupt_handlers()
    try:  # from here on a signal is a KeyboardInterrupt: one answered below, even during the imports
        from blocknas.search.tracking import mask_log_records
        from blocknas.search.tracking.masking import remember_secrets

        # Credentials never leave the process: every log record, error and traceback is masked, and
        # the command line's URLs are learned first, in case a driver repeats a password outside one.
        mask_log_records()
        remember_secrets(*(value for value in vars(args).values() if isinstance(value, str)))
        return int(args.handler(args))
    except KeyboardInterrupt:
        print(
            f"blocknas {args.command}: interrupted; finished trials are kept, rerun the same command to resume",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:
        from blocknas.search.tracking import mask_url
        from blocknas.search.tracking.faults import storage_fault

        fault = storage_fault(exc)  # a full disk, a forbidden folder, a lost database: the user must act
        if fault is None and not isinstance(exc, _user_errors()):
            print(mask_url(traceback.format_exc()), file=sys.stderr)  # a bug: its traceback, but not the secrets
            return 1
        print(mask_url(f"blocknas {args.command}: error: {fault or _in_flags(exc, args.command)}"), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
