"""MLflow, and the only module that imports it: configure, log, register, promote, load.

Every quotacast model is logged as a pyfunc wrapping a plain Python estimator (anything with a
``predict_frame(frame) -> DataFrame | ndarray`` method), so the ``models/`` package stays free
of MLflow and a churn model's pyfunc returns probabilities, not class labels.

Workspaces: the registry is shared, the models are not. A :class:`Workspace` value names one
data source's models; a model of kind ``churn`` is then registered as
``quotacast-<workspace>-churn``, tagged ``quotacast.workspace`` and ``quotacast.kind``, and only
that name is ever read, so a champion is used only on the workspace it was trained for. The
default workspace (and library use without a workspace) keeps the unscoped names of before
workspaces, ``quotacast-<kind>``: existing registries keep working unchanged, and no other
workspace ever reads them. Every function that reads or writes the registry takes an optional
``workspace=``: a process serving several workspaces (the service) passes it each time; a
command line, which works for one, sets it once with :func:`configure` (the value used when
none is passed).

Registry conventions: models are registered as ``quotacast-<kind>``; a fresh training run's
version gets the alias ``challenger``; ``champion`` moves only through :func:`promote`, which
compares the challenger with the champion *on the challenger's holdout*. The training pipeline
scores the current champion on that same holdout and records it on the new version, so the
promotion gate needs no data and compares like with like.

Reading never creates a registry: while a ``sqlite:///`` registry file does not exist, the
reads (champions, promotion, the reachability probe) answer "no registry there" without
touching it; only :func:`log_and_register` (training) creates one. A file that is not an MLflow
database, or a server that does not answer, raises :class:`RegistryUnavailableError`.

Models that travel: every model is logged with the quotacast code it unpickles (the packages
``engine``, ``features``, ``models`` and ``service`` as MLflow ``code_paths``, put first on
``sys.path`` when the model loads) and pinned requirements of what that code and the pickle
import (the installed versions, those of ``constraints.txt``), never ``quotacast`` itself, which
no package index has. So ``mlflow.pyfunc.spark_udf`` scores it on Spark workers and
``mlflow models serve`` starts it from a virtual environment holding only its
``requirements.txt``. Where the model files go: a ``sqlite:///`` store keeps them beside the
database file; another database URL puts them under the ``artifacts`` location given to
:func:`configure` (``QUOTACAST_MLFLOW_ARTIFACTS``) and refuses to train without one (MLflow would
write them to ``./mlruns`` of whichever machine trained); an ``http(s)://`` tracking server
stores them in its own (proxied) artifact store, and nothing is written locally.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import cloudpickle
import mlflow
import mlflow.pyfunc
import pandas as pd
import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.pyfunc import PythonModel
from mlflow.utils.logging_utils import MLFLOW_LOGGING_STREAM

from engine.config import Settings, SetupError

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "ChampionMissingError",
    "FramePredictor",
    "LoadedModel",
    "PromotionDecision",
    "RegisteredRun",
    "RegistryMissingError",
    "RegistryUnavailableError",
    "Workspace",
    "active_workspace",
    "base_name",
    "beats",
    "beats_baseline",
    "champion_kinds",
    "configure",
    "current_workspace",
    "load_champion",
    "log_and_register",
    "missing_registry",
    "model_name",
    "promote",
    "registry_problem",
    "registry_reachable",
    "score_on_spark",
    "use_workspace",
]

CHAMPION = "champion"
CHALLENGER = "challenger"
_PREFIX = "quotacast-"
# Tags on a model version that make the promotion gate possible.
TAG_METRIC = "quotacast.metric"
TAG_GREATER_IS_BETTER = "quotacast.greater_is_better"
TAG_VALUE = "quotacast.metric_value"
TAG_HOLDOUT = "quotacast.holdout"
TAG_CHAMPION_VERSION = "quotacast.champion_version"
TAG_CHAMPION_VALUE = "quotacast.champion_metric_value"
# The simplest baseline's gate metric on the same holdout: a version that does not beat it is
# registered (the evidence is worth keeping) but never promoted, not even as the first champion.
TAG_BASELINE = "quotacast.baseline"
TAG_BASELINE_VALUE = "quotacast.baseline_metric_value"
# Tags on a registered model: whose it is.
TAG_WORKSPACE = "quotacast.workspace"
TAG_KIND = "quotacast.kind"



@dataclass(frozen=True)
class Workspace:
    """The models of one data source in the shared registry: a value, passed down.

    Attributes:
        name: the workspace (None: library use without one, the unscoped names).
        adopt_unscoped: ``name`` is the default workspace, whose models keep the unscoped names
            of before workspaces (``quotacast-<kind>``, tagged with the workspace when trained
            now).
    """

    name: str | None = None
    adopt_unscoped: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.name or None)
        object.__setattr__(self, "adopt_unscoped", bool(self.adopt_unscoped and self.name))

    @classmethod
    def of(cls, settings: Settings, data: str | None = None) -> Workspace:
        """The workspace of a command or a service on ``data`` (default: the ``data``
        setting), per :meth:`engine.config.Settings.workspace_of` and ``owns_unscoped``."""
        name = settings.workspace_of(data)
        return cls(name, settings.owns_unscoped(name))

    @property
    def scope(self) -> str | None:
        """The infix of its registered names (None: the unscoped names)."""
        return None if self.adopt_unscoped else self.name

    def model_name(self, kind: str) -> str:
        """``churn`` -> ``quotacast-<workspace>-churn`` (``quotacast-churn`` unscoped)."""
        if kind.startswith(_PREFIX):
            return kind
        return f"{_PREFIX}{self.scope}-{kind}" if self.scope else f"{_PREFIX}{kind}"


# The workspace used when a call names none (set by :func:`configure` / :func:`use_workspace`;
# a command line works for one workspace). A process holding several passes them explicitly.
_default = Workspace()


def _space(workspace: Workspace | str | None) -> Workspace:
    """The workspace a call means: the one given (a bare name is a scoped workspace), else the
    configured default."""
    if workspace is None:
        return _default
    return workspace if isinstance(workspace, Workspace) else Workspace(workspace)


class FramePredictor(Protocol):
    """What quotacast estimators offer to be served: a frame in, predictions out."""

    def predict_frame(self, frame: pd.DataFrame) -> Any: ...


class ChampionMissingError(LookupError):
    """No version of a model carries the ``champion`` alias yet."""


class RegistryMissingError(ChampionMissingError):
    """The registry file does not exist (a misspelt path, or nothing trained yet): no champion,
    and nothing was created by asking."""


class RegistryUnavailableError(SetupError, RuntimeError):
    """The tracking server or database did not answer: not the same as "no champion", and
    never a reason to fall back silently."""

SETTING = "QUOTACAST_MLFLOW_TRACKING_URI"


# What the registry answers when the model or its alias does not exist (file, SQL and REST
# stores alike); any other failure means it could not be asked.
_MISSING_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})


# What can go wrong while asking the registry, besides a plain "does not exist" answer.
_ASKING = (MlflowException, OSError, sa.exc.SQLAlchemyError)


def _unavailable(exc: Exception) -> RegistryUnavailableError:
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(exc).__name__
    uri = mlflow.get_registry_uri()
    if _sqlite_file(uri) is not None:
        return RegistryUnavailableError(
            f"the model registry {_sqlite_file(uri)} ({SETTING}) could not be read "
            f"({first[:200]}): if it is damaged, restore it from a backup or point {SETTING} at "
            "another file (training creates a new one)")
    return RegistryUnavailableError(
        f"the model registry at {describe_uri(uri)} did not answer "
        f"({first[:200]}); check {SETTING} and that the server is up")


def _sqlite_file(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` tracking URI (None for servers and in-memory stores)."""
    if not uri.startswith("sqlite:///") or uri in ("sqlite:///", "sqlite:///:memory:"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


def _client() -> MlflowClient:
    """A client of the configured registry (opening a SQLite store already reads it)."""
    try:
        return MlflowClient()
    except _ASKING as exc:
        raise _unavailable(exc) from exc


def missing_registry() -> Path | None:
    """The registry file the configured URI names, when it does not exist (else None)."""
    path = _sqlite_file(mlflow.get_tracking_uri())
    return path if path is not None and not path.exists() else None


def _no_registry(path: Path, kind: str) -> RegistryMissingError:
    return RegistryMissingError(
        f"there is no model registry at {path} ({SETTING}); nothing was created. Check the "
        f"path, or train a model: `quotacast train {_command_args(kind)}` creates it there")


class _FrameModel(PythonModel):
    """Pyfunc adapter: delegates to the wrapped estimator's ``predict_frame``."""

    def __init__(self, estimator: FramePredictor):
        self.estimator = estimator

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        return self.estimator.predict_frame(model_input)


@dataclass(frozen=True)
class RegisteredRun:
    """What a training run produced: the run, the registered version and its metrics."""

    run_id: str
    model_name: str
    version: str
    metrics: dict[str, float]


@dataclass(frozen=True)
class PromotionDecision:
    """Whether ``champion`` moved, and why, in plain words."""

    promoted: bool
    version: str
    reason: str


@dataclass(frozen=True)
class LoadedModel:
    """A served model: the estimator itself and where it came from."""

    estimator: Any
    model_name: str
    version: str
    run_id: str
    metrics: dict[str, float]
    holdout: str = ""


def current_workspace() -> str | None:
    """The name of the workspace :func:`configure` was given (None: unscoped names)."""
    return _default.name


def active_workspace() -> Workspace:
    """The workspace used by calls that name none (:func:`configure`)."""
    return _default


def base_name(kind: str) -> str:
    """The unscoped name of a model kind (``churn`` -> ``quotacast-churn``)."""
    return kind if kind.startswith(_PREFIX) else f"{_PREFIX}{kind}"


def model_name(kind: str, workspace: Workspace | str | None = None) -> str:
    """The registered model name of a quotacast model kind in ``workspace`` (default: the
    configured one; a bare name is a scoped workspace): ``churn`` ->
    ``quotacast-<workspace>-churn``, or ``quotacast-churn`` without a workspace."""
    return _space(workspace).model_name(kind)


def _in_workspace(space: Workspace) -> str:
    """`` in workspace W`` for messages (empty without a workspace)."""
    return f" in workspace {space.name}" if space.name else ""


def _train_hint(kind: str) -> str:
    """The command's first word (the workspace is named by :func:`_data_hint`)."""
    return "quotacast "


def _data_hint(space: Workspace) -> str:
    """Where the training command must run: on the workspace's data, or naming it."""
    return (f" (on the data of workspace {space.name}: `--data` of that data, or the global "
            f"`--workspace {space.name}`)") if space.name else ""


def _command_args(kind: str) -> str:
    """The CLI words that name a model kind: ``forecast-W-product`` -> ``forecast --freq W
    --level product`` (one forecaster per frequency and level group)."""
    model, _, rest = kind.partition("-")
    if not rest:
        return kind
    freq, _, group = rest.partition("-")
    return f"{model} --freq {freq}" + ("" if group in ("", "company") else f" --level {group}")


ARTIFACTS_SETTING = "QUOTACAST_MLFLOW_ARTIFACTS"
# Where new experiments of a database store put their model files (:func:`configure`).
_artifacts: str | None = None


def _is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _location(artifacts: str) -> str:
    """A URI for the artifacts setting: URIs as given, a plain path made absolute."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", artifacts):
        return artifacts.rstrip("/")
    return Path(artifacts).expanduser().resolve().as_uri()


def _artifact_root(tracking_uri: str, artifacts: str | None = None) -> str | None:
    """Where a new experiment keeps its model files (None: the tracking server's own store).

    A tracking server decides itself (its proxied artifact store: nothing is written here); a
    database store uses ``artifacts`` when given, else a SQLite store keeps them beside its file
    (``mlruns/`` next to ``mlflow.db``); any other database without ``artifacts`` raises
    :class:`engine.config.SetupError` rather than let MLflow write them to ``./mlruns`` of the
    machine that trains, where no other machine finds them.
    """
    if _is_server(tracking_uri):
        return None
    if artifacts:
        return _location(artifacts)
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0]).resolve()
        return (db.parent / "mlruns").as_uri()
    raise SetupError(
        f"the model registry {describe_uri(tracking_uri)} is a database, and {ARTIFACTS_SETTING} "
        "is not set: model files would go to ./mlruns of this machine, where no other machine "
        f"finds them. Set {ARTIFACTS_SETTING} to a location every machine reads (s3://..., a "
        "shared directory), or point QUOTACAST_MLFLOW_TRACKING_URI at an `mlflow server` "
        "(docs/team-setup.md)")


def use_workspace(workspace: Workspace | str | None, adopt_unscoped: bool = False) -> None:
    """Read and register the models of ``workspace`` when a call names none (None: the
    unscoped names).

    ``adopt_unscoped``: ``workspace`` is the default one, whose models keep the unscoped names
    of before workspaces (``quotacast-<kind>``, tagged with the workspace when trained now).
    """
    global _default
    _default = (workspace if isinstance(workspace, Workspace)
                else Workspace(workspace, adopt_unscoped))


def configure(tracking_uri: str, workspace: Workspace | str | None = None,
              adopt_unscoped: bool = False, artifacts: str | None = None) -> None:
    """Point MLflow's tracking store and model registry at ``tracking_uri``, for the models of
    ``workspace`` (see :func:`use_workspace`).

    ``artifacts``: where new experiments of a database store keep their model files (the
    ``mlflow_artifacts`` setting; see :func:`_artifact_root`); a tracking server uses its own.
    """
    global _artifacts
    use_workspace(workspace, adopt_unscoped)
    _artifacts = artifacts or None
    if _is_server(tracking_uri):
        # MLflow's default retries make a dead server take minutes to report; callers (the
        # service's readiness, the CLI) want an answer in seconds.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        # MLflow prints "View run ... at: <url>" on stdout after every run logged to a
        # server, into a command's --json output; the command names the run itself.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # A model's files (its code among them) are fetched on every load: no progress bars on
    # the terminal of a command that reads a champion.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    # MLflow's start-up chatter (schema migrations, the CloudPickle notice about our own models
    # in our own registry) buries the summary people read; warnings and errors still show.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)


@contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """MLflow's own event prints ("Successfully registered model ...", "Created version ...")
    off while it runs: the command says what was registered in its own words."""
    was = MLFLOW_LOGGING_STREAM.enabled
    MLFLOW_LOGGING_STREAM.enabled = False
    try:
        yield
    finally:
        MLFLOW_LOGGING_STREAM.enabled = was


def _experiment_id(name: str) -> str:
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    root = _artifact_root(mlflow.get_tracking_uri(), _artifacts)
    location = f"{root}/{name}" if root else None
    return str(mlflow.create_experiment(name, artifact_location=location))


def _log_files(artifacts: Mapping[str, Path | pd.DataFrame | dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name, item in artifacts.items():
            if isinstance(item, Path):
                mlflow.log_artifact(str(item))
                continue
            path = Path(tmp) / name
            if isinstance(item, pd.DataFrame):
                item.to_csv(path, index=False)
            else:
                path.write_text(json.dumps(item, indent=2, default=str))
            mlflow.log_artifact(str(path))


def log_and_register(
    kind: str,
    estimator: FramePredictor,
    *,
    input_example: pd.DataFrame,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    gate_metric: str,
    greater_is_better: bool,
    holdout: str,
    champion_value: float | None = None,
    baseline: tuple[str, float] | None = None,
    artifacts: Mapping[str, Path | pd.DataFrame | dict[str, Any]] | None = None,
    tags: Mapping[str, str] | None = None,
    workspace: Workspace | None = None,
) -> RegisteredRun:
    """Log a trained estimator with its evidence, register it and alias it ``challenger``.

    Args:
        kind: model kind (``churn``, ``forecast``, ``win``); also the experiment name.
        estimator: the fitted estimator; its ``predict_frame`` is what the pyfunc serves.
        input_example: a few rows of real input, for the signature and the example.
        params: training parameters.
        metrics: holdout metrics; must contain ``gate_metric``.
        gate_metric: the metric the promotion gate compares.
        greater_is_better: direction of ``gate_metric``.
        holdout: a fingerprint of the holdout the metrics were measured on.
        champion_value: the current champion's ``gate_metric`` on the same holdout, if any.
        baseline: ``(name, value)`` of the simplest baseline's ``gate_metric`` on the same
            holdout; :func:`promote` refuses a version that does not strictly beat it.
        artifacts: files, frames (saved as CSV) or dicts (saved as JSON) to attach to the run.
        tags: extra run tags.
        workspace: whose model it is (default: the configured workspace).
    """
    space = _space(workspace)
    name = space.model_name(kind)
    output = estimator.predict_frame(input_example)
    signature = infer_signature(input_example, output)
    run_tags = dict(tags or {})
    experiment = kind
    if space.name:
        run_tags[TAG_WORKSPACE] = space.name
        if space.scope:
            experiment = f"{space.scope}/{kind}"
    python_model = _FrameModel(estimator)
    requirements = pip_requirements(python_model)
    with (mlflow.start_run(experiment_id=_experiment_id(experiment), tags=run_tags) as run,
          tempfile.TemporaryDirectory() as code):
        mlflow.log_params({k: _param(v) for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        _log_files(artifacts or {})
        with _quiet_mlflow():
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=python_model,
                signature=signature,
                input_example=input_example,
                registered_model_name=name,
                pip_requirements=requirements,
                code_paths=code_paths(Path(code)),
            )
    version = str(info.registered_model_version)
    champion = _alias_version(name, CHAMPION)
    version_tags = {
        TAG_METRIC: gate_metric,
        TAG_GREATER_IS_BETTER: str(greater_is_better),
        TAG_VALUE: repr(float(metrics[gate_metric])),
        TAG_HOLDOUT: holdout,
    }
    if baseline is not None:
        version_tags[TAG_BASELINE] = baseline[0]
        version_tags[TAG_BASELINE_VALUE] = repr(float(baseline[1]))
    if champion is not None and champion_value is not None:
        version_tags[TAG_CHAMPION_VERSION] = champion
        version_tags[TAG_CHAMPION_VALUE] = repr(float(champion_value))
    client = _client()
    if space.name:
        version_tags[TAG_WORKSPACE] = space.name
        client.set_registered_model_tag(name, TAG_WORKSPACE, space.name)
        client.set_registered_model_tag(name, TAG_KIND, kind)
    for key, value in version_tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, CHALLENGER, version)
    return RegisteredRun(run.info.run_id, name, version, {k: float(v) for k, v in metrics.items()})


# The quotacast packages, logged as code with every model (a model's pickle names their
# classes); ``rules`` holds data files only, and the code is the same on every floor.
CODE_PACKAGES = ("engine", "features", "models", "service")


def code_paths(into: Path) -> list[str]:
    """Copies of the quotacast packages in ``into`` (without byte code), for ``code_paths``:
    MLflow stores them in the model's ``code/`` directory and puts that first on ``sys.path``
    wherever the model loads (MLflow's documented way to ship a model's own code)."""
    paths = []
    for package in CODE_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        source = Path(next(iter(spec.submodule_search_locations)))
        target = into / package
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        paths.append(str(target))
    return paths


class _Discard(io.RawIOBase):
    """A file that keeps nothing: the pass is for the modules, not the bytes."""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        # protocol 5 hands large arrays over as a PickleBuffer, which has no len()
        return memoryview(data).nbytes


class _ModuleRecorder(cloudpickle.Pickler):
    """A pickling pass that notes the module of every class, function and object pickled."""

    def __init__(self) -> None:
        super().__init__(_Discard(), protocol=cloudpickle.DEFAULT_PROTOCOL)
        self.modules: set[str] = set()

    def reducer_override(self, obj: Any) -> Any:
        named = (obj if isinstance(obj, type) or (callable(obj) and hasattr(obj, "__qualname__"))
                 else type(obj))
        module = getattr(named, "__module__", None)
        if isinstance(module, str):
            self.modules.add(module)
        return super().reducer_override(obj)


def pickled_modules(obj: Any) -> set[str]:
    """The modules unpickling ``obj`` imports (those of its classes and functions)."""
    recorder = _ModuleRecorder()
    recorder.dump(obj)
    return recorder.modules


def _module_file(module: str) -> Path | None:
    """The source file of one of our modules (without importing it)."""
    top = module.split(".")[0]
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))).parent
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_imports(module: str, path: Path) -> set[str]:
    """The modules ``module`` imports when it is imported (module level, outside
    ``if TYPE_CHECKING:``), with the packages of each."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parent = ".".join(parts[: len(parts) - node.level + 1])
                    base = f"{parent}.{base}" if base else parent
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If):
                test = ast.unparse(node.test)
                if "TYPE_CHECKING" not in test:
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.With):
                visit(node.body)

    visit(tree.body)
    return found


def imported_packages(modules: set[str]) -> set[str]:
    """The top-level third-party packages that importing ``modules`` imports: ours are followed
    through their module-level imports (and their parent packages), others named as they are."""
    external: set[str] = set()
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module in seen or not module:
            continue
        seen.add(module)
        top = module.split(".")[0]
        if top not in CODE_PACKAGES:
            external.add(top)
            continue
        parts = module.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        path = _module_file(module)
        if path is not None:
            todo.extend(_module_imports(module, path))
    return {top for top in external
            if top not in sys.stdlib_module_names and top not in ("builtins", "__main__")}


@functools.cache
def _distributions() -> Mapping[str, list[str]]:
    """Top-level package -> the installed distributions providing it (read once)."""
    return metadata.packages_distributions()


def pip_requirements(model: Any) -> list[str]:
    """Pinned requirements of what loading ``model`` imports: the distributions of the packages
    its pickle and the quotacast modules it names import, at their installed versions (those of
    ``constraints.txt``). quotacast itself travels as code (:func:`code_paths`)."""
    owners = _distributions()
    pins: set[str] = set()
    for top in imported_packages(pickled_modules(model)):
        for dist in owners.get(top, []):
            if dist.lower() == "quotacast":
                continue
            try:
                pins.add(f"{dist}=={metadata.version(dist)}")
            except metadata.PackageNotFoundError:
                continue
    return sorted(pins, key=str.lower)


def _param(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) else json.dumps(value, default=str)


def _by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The model version carrying ``alias``; None when there is none. Raises
    :class:`RegistryUnavailableError` when the registry cannot be asked."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in _MISSING_CODES:
            return None
        raise _unavailable(exc) from exc
    except _ASKING as exc:
        raise _unavailable(exc) from exc


def _alias_version(name: str, alias: str) -> str | None:
    mv = _by_alias(_client(), name, alias)
    return None if mv is None else str(mv.version)


def beats(value: float, baseline: float, greater_is_better: bool) -> bool:
    """The promotion gate's one comparison: strictly better than the baseline."""
    return bool(value > baseline if greater_is_better else value < baseline)


def beats_baseline(tags: Mapping[str, str]) -> tuple[bool, str]:
    """Whether a version's gate metric strictly beats its simplest baseline on the same holdout.

    Versions registered without a baseline pass (nothing to compare with).
    """
    if TAG_BASELINE_VALUE not in tags:
        return True, "no baseline recorded"
    metric = tags[TAG_METRIC]
    value, base = float(tags[TAG_VALUE]), float(tags[TAG_BASELINE_VALUE])
    ok = beats(value, base, greater_is_better=tags[TAG_GREATER_IS_BETTER] == "True")
    relation = "beats" if ok else "does not beat"
    return ok, (f"{metric} {value:.4f} {relation} the baseline {tags.get(TAG_BASELINE, '?')}'s "
                f"{base:.4f} on the same holdout")


def _gate(tags: dict[str, str], champion: str) -> tuple[bool, str]:
    metric = tags[TAG_METRIC]
    challenger_value = float(tags[TAG_VALUE])
    if tags.get(TAG_CHAMPION_VERSION) != champion:
        return False, (
            f"the challenger was not compared with champion v{champion} on its holdout "
            "(the champion changed since it was trained); retrain, or use --force"
        )
    champion_value = float(tags[TAG_CHAMPION_VALUE])
    higher = tags[TAG_GREATER_IS_BETTER] == "True"
    ok = challenger_value >= champion_value if higher else challenger_value <= champion_value
    relation = "at least as good as" if ok else "worse than"
    return ok, (
        f"{metric} {challenger_value:.4f} is {relation} champion v{champion}'s "
        f"{champion_value:.4f} on the same holdout ({tags[TAG_HOLDOUT]})"
    )


def promote(kind: str, version: str | None = None, force: bool = False,
            workspace: Workspace | None = None) -> PromotionDecision:
    """Move ``champion`` to the challenger (or ``version``) if it is at least as good.

    The comparison uses the champion's metric measured on the challenger's holdout, recorded at
    training time. ``force`` skips the gate. ``workspace``: whose model (default: the
    configured workspace).
    """
    space = _space(workspace)
    absent = missing_registry()
    if absent is not None:
        raise _no_registry(absent, kind)
    client = _client()
    name = space.model_name(kind)
    candidate = version or _alias_version(name, CHALLENGER)
    if candidate is None:
        raise ChampionMissingError(
            f"no challenger for {base_name(kind)}{_in_workspace(space)}: run "
            f"`{_train_hint(kind)}train {_command_args(kind)}` first{_data_hint(space)}"
            + _unscoped_note(client, kind, CHALLENGER, space)
            + _elsewhere_note(client, kind, space))
    try:
        tags = dict(client.get_model_version(name, candidate).tags)
    except MlflowException as exc:
        if exc.error_code in _MISSING_CODES:
            raise ChampionMissingError(f"{name} has no version {candidate}") from None
        raise _unavailable(exc) from exc
    except _ASKING as exc:
        raise _unavailable(exc) from exc
    champion = _alias_version(name, CHAMPION)
    if champion == candidate:
        return PromotionDecision(False, candidate, f"v{candidate} is already the champion")
    beats, against_baseline = beats_baseline(tags)
    if force:
        ok, reason = True, "forced (--force): the gate was skipped"
        if not beats:
            reason += f"; beware, {against_baseline}"
    elif not beats:
        ok, reason = False, (f"{against_baseline}: a model no better than its simplest baseline "
                             "is never promoted (the commands that need it use their fallback)")
    elif champion is None:
        ok, reason = True, "there was no champion yet"
    else:
        ok, reason = _gate(tags, champion)
    if ok:
        client.set_registered_model_alias(name, CHAMPION, candidate)
    return PromotionDecision(ok, candidate, reason)


def load_champion(kind: str, alias: str = CHAMPION,
                  workspace: Workspace | None = None) -> LoadedModel:
    """Load the estimator that carries ``alias`` (default ``champion``) from the registry, of
    ``workspace`` (default: the configured workspace).

    Raises:
        ChampionMissingError: no version carries the alias (callers may fall back).
        RegistryUnavailableError: the registry did not answer (callers must not fall back).
    """
    absent = missing_registry()
    if absent is not None:
        raise _no_registry(absent, kind)
    space = _space(workspace)
    client = _client()
    name = space.model_name(kind)
    mv = _by_alias(client, name, alias)
    if mv is None:
        hint = _train_hint(kind)
        raise ChampionMissingError(
            f"no {alias} for {base_name(kind)}{_in_workspace(space)} yet: run "
            f"`{hint}train {_command_args(kind)}` then "
            f"`{hint}promote {_command_args(kind)}`{_data_hint(space)}"
            + _unscoped_note(client, kind, alias, space)
        )
    try:
        pyfunc = _load_here(f"models:/{name}@{alias}")
        run = client.get_run(mv.run_id) if mv.run_id else None
    except _ASKING as exc:
        raise _unavailable(exc) from exc
    estimator = pyfunc.unwrap_python_model().estimator
    metrics = dict(run.data.metrics) if run else {}
    holdout = (mv.tags or {}).get(TAG_HOLDOUT, "")
    return LoadedModel(estimator, name, str(mv.version), mv.run_id or "", metrics, holdout)


def _load_here(uri: str) -> Any:
    """Load a model into this process, which already has the quotacast code: the installed
    packages stay the ones imported (MLflow would put the model's own copy first on
    ``sys.path`` for good; a later top-level import would then mix versions)."""
    for package in CODE_PACKAGES:
        importlib.import_module(package)
    path = list(sys.path)
    try:
        return mlflow.pyfunc.load_model(uri)
    finally:
        sys.path[:] = path


def _unscoped_note(client: MlflowClient, kind: str, alias: str, space: Workspace) -> str:
    """When the default workspace's model (the unscoped name) has ``alias``: that it is not
    used in this one."""
    if not space.scope or kind.startswith(_PREFIX):
        return ""
    try:
        old = _by_alias(client, base_name(kind), alias)
    except RegistryUnavailableError:
        return ""
    if old is None:
        return ""
    return (f" (the {alias} {base_name(kind)} v{old.version} belongs to the default workspace, "
            "that of QUOTACAST_DATA or QUOTACAST_DEFAULT_WORKSPACE, and is not used here)")


def _elsewhere_note(client: MlflowClient, kind: str, space: Workspace) -> str:
    """The other workspaces holding a challenger of ``kind``: where the user probably meant."""
    try:
        found = client.search_registered_models(filter_string=f"tags.`{TAG_KIND}` = '{kind}'")
    except _ASKING:
        return ""
    others = sorted(m.tags.get(TAG_WORKSPACE, "") for m in found
                    if CHALLENGER in (m.aliases or {}) and m.name != space.model_name(kind))
    if not others:
        return ""
    return (f"; a challenger was trained in workspace {', '.join(others)}: promote it with "
            f"`quotacast promote {_command_args(kind)} --data D` on the data it was trained on, "
            f"or `quotacast --workspace {others[0]} promote ...`")


def champion_kinds(family: str, workspace: Workspace | None = None) -> list[str]:
    """The kinds of ``family`` (``forecast``: ``forecast``, ``forecast-W-company``...) that
    have a champion in ``workspace``, sorted; empty when the registry holds none or does not
    answer (the caller's own loading then says why)."""
    space = _space(workspace)
    prefix = space.model_name(family)
    if missing_registry() is not None:
        return []
    try:
        found = _client().search_registered_models(filter_string=f"name LIKE '{prefix}%'")
    except (RegistryUnavailableError, *_ASKING):
        return []
    # LIKE's ``_`` matches any character: keep the names that really start with the prefix.
    kinds = {m.name[len(prefix) - len(family):] for m in found
             if m.name.startswith(prefix) and CHAMPION in (m.aliases or {})}
    pattern = re.compile(rf"{re.escape(family)}(-[A-Z]-[A-Za-z0-9_.-]+)?")
    return sorted(k for k in kinds if pattern.fullmatch(k))


def load_pyfunc(kind: str, alias: str = CHAMPION, workspace: Workspace | None = None) -> Any:
    """The registered model as MLflow's generic pyfunc (what other tools would load)."""
    absent = missing_registry()
    if absent is not None:
        raise _no_registry(absent, kind)
    return _load_here(f"models:/{model_name(kind, workspace)}@{alias}")


_SPARK_TYPES = {"float64": "double", "datetime64[ns]": "timestamp_ntz", "bool": "boolean"}


def score_on_spark(session: Any, frame: pd.DataFrame, kind: str, version: str, key: str,
                   result_type: str, workspace: Workspace | None = None) -> pd.DataFrame:
    """``frame`` scored on Spark by the registered version ``version`` of ``kind`` through
    ``mlflow.pyfunc.spark_udf`` (the model's own logged code, run by the workers' Python):
    the ``key`` column and the fields of ``result_type`` (``"name type, ..."``), one row per
    row of ``frame`` in its order. Columns other than floats and dates travel as text."""
    from pyspark.sql import functions as F

    schema = ", ".join(f"`{c}` {_SPARK_TYPES.get(str(t), 'string')}"
                       for c, t in frame.dtypes.items())
    text = [c for c, t in frame.dtypes.items() if str(t) not in _SPARK_TYPES]
    plain = frame.astype(dict.fromkeys(text, object))
    for column in text:  # missing text as None (Arrow refuses a float NaN in a text column)
        values = plain[column].to_numpy(dtype=object, copy=True)
        values[pd.isna(values)] = None
        plain[column] = values
    uri = f"models:/{model_name(kind, workspace)}/{version}"
    try:
        with _quiet_mlflow():
            udf = mlflow.pyfunc.spark_udf(session, uri, result_type=result_type,
                                          env_manager="local")
    except _ASKING as exc:
        raise _unavailable(exc) from exc
    data = session.createDataFrame(plain, schema=schema)
    fields = [part.strip().split()[0] for part in result_type.split(",")]
    scored = (data.withColumn("_scored", udf(F.struct(*[F.col(f"`{c}`") for c in frame.columns])))
              .select(key, *[F.col(f"_scored.{f}").alias(f) for f in fields]).toPandas())
    by_key = scored.set_index(key)
    return by_key.loc[frame[key].to_numpy()].reset_index()


def registry_problem() -> str | None:
    """Why the registry cannot be asked, in plain words naming the setting; None when it
    answers. A registry file that does not exist answers "no models" (and is not created)."""
    if missing_registry() is not None:
        return None
    try:
        _client().search_registered_models(max_results=1)
    except RegistryUnavailableError as exc:
        return str(exc)
    except _ASKING as exc:
        return str(_unavailable(exc))
    return None


def registry_reachable() -> bool:
    """True when the tracking server or database answers (see :func:`registry_problem`)."""
    return registry_problem() is None


def describe_uri(uri: str) -> str:
    """A short, password-free description of a tracking URI for messages."""
    parsed = urlparse(uri)
    return f"{parsed.scheme}://{parsed.hostname or ''}{parsed.path}"
