"""The command's errors: arguments checked before any store is opened, one ``Error:`` style,
option names in messages, unknown models named plainly, no store ever created, URIs MLflow
cannot use named with their source, and another application's database left untouched.

Against real SQLite stores (and a real subprocess for the empty folder, issue 14's Must-show 4).
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from mlflow import MlflowClient

from mlflow_green.cli import main
from mlflow_green.cli.rank import to_json, to_table
from mlflow_green.registry.rank import rank_models
from tests.mlflow_server import free_port, sqlite_db_copy

MODEL = "errors-model"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite store whose registry holds ``errors-model`` versions 1 and 2 (absolute URI)."""
    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{sqlite_db_copy(folder / 'mlflow.db')}"
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.create_experiment("cli-errors", artifact_location=(folder / "a").as_uri())
    client.create_registered_model(MODEL)
    for energy_kwh in (0.002, 0.001):
        run_id = client.create_run(experiment).info.run_id
        client.log_metric(run_id, "accuracy", 0.9)
        client.log_metric(run_id, "green/energy_kwh", energy_kwh)
        client.set_terminated(run_id)
        client.create_model_version(MODEL, f"runs:/{run_id}/model", run_id=run_id)
    return uri


@pytest.fixture
def empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current folder, with no tracking or registry URI in the environment."""
    folder = tmp_path / "empty"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    return folder


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def assert_error(result: Result, *fragments: str) -> str:
    """Exit 2, click's ``Error:`` style, every fragment; no traceback and no ``ERROR:``."""
    output = result.output
    assert result.exit_code == 2, output
    assert output.startswith("Error: ") or "\nError: " in output, output
    assert "ERROR" not in output and "Traceback" not in output, output
    for fragment in fragments:
        assert fragment in output, (fragment, output)
    return output


# -- no store is created: Must-show 4 --------------------------------------------------------


@pytest.mark.parametrize("args", [["rank"], ["gate", MODEL, "1"]])
def test_a_command_in_a_folder_without_a_database_exits_2_and_creates_nothing(
    tmp_path: Path, args: list[str]
) -> None:
    """The real command, as a user runs it: MLflow's default sqlite:///mlflow.db is missing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-m", "mlflow_green.cli", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    message = " ".join(done.stderr.split())
    assert message.startswith("Error: no MLflow store here"), message
    assert "MLflow's default sqlite:///mlflow.db" in message
    assert f"there is no {tmp_path / 'mlflow.db'}" in message
    assert "--tracking-uri" in message and "MLFLOW_TRACKING_URI" in message
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no mlruns


@pytest.mark.parametrize(
    "command",
    [
        ["rank"],
        ["budget", "show", MODEL],
        ["budget", "set", MODEL, "--max-kwh", "1"],
        ["budget", "remove", MODEL],
        ["gate", MODEL, "1"],
        ["promote", MODEL, "1", "--alias", "champion"],
    ],
)
@pytest.mark.parametrize(
    ("where", "uri", "source"),
    [
        ("option", "sqlite:///rel/none.db", "--tracking-uri"),
        ("option", "sqlite:///{tmp}/none.db", "--tracking-uri"),
        ("env", "sqlite:///none.db", "MLFLOW_TRACKING_URI"),
        ("env", "file://{tmp}/mlruns", "MLFLOW_TRACKING_URI"),
    ],
)
def test_a_missing_store_is_named_with_its_source(
    empty: Path, command: list[str], where: str, uri: str, source: str
) -> None:
    uri = uri.replace("{tmp}", str(empty))
    if where == "option":
        result = invoke(*command, "--tracking-uri", uri)
    else:
        result = invoke(*command, env={"MLFLOW_TRACKING_URI": uri})
    output = " ".join(assert_error(result).split())
    assert f"{source} is {uri}, which names no existing" in output, output
    assert "creates no store" in output
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        assert f"relative to the current folder {empty}" in output, output
    assert list(empty.iterdir()) == []


def test_a_missing_registry_store_is_named_as_mlflow_registry_uri(store: str, empty: Path) -> None:
    result = invoke(
        "gate",
        MODEL,
        "1",
        env={"MLFLOW_TRACKING_URI": store, "MLFLOW_REGISTRY_URI": "sqlite:///registry.db"},
    )
    output = " ".join(assert_error(result).split())
    assert f"no SQLite database at {empty / 'registry.db'}" in output
    assert "MLFLOW_REGISTRY_URI is sqlite:///registry.db" in output
    assert list(empty.iterdir()) == []


def test_in_memory_sqlite_is_not_a_missing_file(empty: Path) -> None:
    """``sqlite://`` names no file: it passes this check (:func:`check_store` refuses it)."""
    from mlflow_green.cli._common import require_existing_store

    for uri in ("sqlite://", "sqlite:///:memory:", "http://127.0.0.1:5000", "postgresql://h/db"):
        require_existing_store(uri, "--tracking-uri")
    assert list(empty.iterdir()) == []


# -- arguments are checked before any store is opened ----------------------------------------


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["budget", "set", MODEL, "--max-kwh", "-1"], ["--max-kwh", "got -1", "non-negative"]),
        (["budget", "set", MODEL, "--max-co2eq-kg", "nan"], ["--max-co2eq-kg", "got nan"]),
        (["budget", "set", MODEL, "--max-kwh", "inf"], ["--max-kwh", "got inf"]),
        (["budget", "show", " "], ["NAME ' '"]),
        (["gate", MODEL, "abc"], ["VERSION 'abc'", "version number"]),
        (["gate", MODEL, "0"], ["VERSION '0'"]),
        (["promote", MODEL, "1", "--alias", "latest"], ["--alias 'latest'", "reserved"]),
        (["promote", MODEL, "1", "--alias", "v3"], ["--alias 'v3'", "reserved"]),
        (["promote", MODEL, "1", "--alias", "a b"], ["--alias 'a b'", "letters, digits"]),
        (["rank", "--metric", ""], ["--metric ''"]),
        (["rank", "--model", ""], ["--model ''"]),
        (["rank", "--plot", "{tmp}/no/such/folder/x.png"], ["--plot", "does not exist"]),
    ],
)
@pytest.mark.parametrize("server", ["missing-sqlite", "unreachable"])
def test_bad_arguments_are_refused_before_connecting(
    empty: Path, args: list[str], fragments: list[str], server: str
) -> None:
    """The argument is named, not the store: neither the missing file nor the dead server."""
    uri = "sqlite:///none.db" if server == "missing-sqlite" else f"http://127.0.0.1:{free_port()}"
    args = [a.replace("{tmp}", str(empty)) for a in args]
    output = assert_error(invoke(*args, "--tracking-uri", uri), *fragments)
    assert "none.db" not in output and "unreachable" not in output, output
    assert "max_kwh" not in output and "max_co2eq_kg" not in output
    assert list(empty.iterdir()) == []


# -- unknown models and versions, named plainly ----------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["gate", "no-such-model", "1"],
        ["promote", "no-such-model", "1", "--alias", "champion"],
        ["budget", "show", "no-such-model"],
        ["budget", "set", "no-such-model", "--max-kwh", "1"],
        ["budget", "remove", "no-such-model"],
    ],
)
def test_an_unknown_model_is_named_plainly(store: str, command: list[str]) -> None:
    output = assert_error(
        invoke(*command, "--tracking-uri", store), f"no registered model 'no-such-model' at {store}"
    )
    assert "RESOURCE_DOES_NOT_EXIST" not in output and "not found" not in output, output


@pytest.mark.parametrize(
    "command", [["gate", MODEL, "7"], ["promote", MODEL, "7", "--alias", "champion"]]
)
def test_an_unknown_version_lists_the_versions(store: str, command: list[str]) -> None:
    output = assert_error(
        invoke(*command, env={"MLFLOW_TRACKING_URI": store}),
        f"model '{MODEL}' has no version 7 (versions: 1, 2)",
    )
    assert "RESOURCE_DOES_NOT_EXIST" not in output and "not found" not in output, output
    # The same store answers for a version it has.
    result = invoke("gate", MODEL, "2", env={"MLFLOW_TRACKING_URI": store})
    assert result.exit_code == 0 and "PASS" in result.output, result.output
    result = invoke("rank", "--format", "csv", "--tracking-uri", store)
    assert result.exit_code == 0 and MODEL in result.output, result.output


def test_an_unreachable_server_is_one_error_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert_error(invoke("gate", MODEL, "1", "--tracking-uri", url), f"{url} is unreachable")


def test_an_unknown_country_gets_a_suggestion() -> None:
    output = assert_error(invoke("countries", "Frnace"), "'Frnace'", "Did you mean FRA (France)?")
    assert "mlflow-green countries" in output
    assert_error(invoke("countries", "FRN"), "Did you mean FRA (France)")
    output = assert_error(invoke("countries", "XYZ"), "'XYZ'", "alpha-3")
    assert "Did you mean" not in output


# -- the rank table shows where the training energy comes from -------------------------------


def test_the_energy_source_column_is_shown_beside_the_energy(store: str) -> None:
    frame = rank_models("accuracy", tracking_uri=store)
    without = frame.drop(columns="energy_source", errors="ignore")
    without.attrs = frame.attrs
    assert "energy_source" not in to_table(without)  # not in the frame: not shown
    if "energy_source" not in frame.columns:  # before rank_models says where energy comes from
        frame["energy_source"] = ["phase:train", "run"]
    table = to_table(frame).splitlines()
    header = table[0].split()
    assert header[header.index("energy_kwh") + 1] == "energy_source", header
    end = table[0].index("energy_source") + len("energy_source")  # columns are right-aligned
    sources = {row[:end].split()[-1] for row in table[1:]}
    assert sources == set(frame["energy_source"]) and sources <= {"phase:train", "run"}
    assert {row["energy_source"] for row in json.loads(to_json(frame))} == sources


# -- URIs MLflow cannot use: one line naming the URI and its source, exit 2 (review finding 11) --

POSTGRES_DRIVER = any(importlib.util.find_spec(m) for m in ("psycopg", "psycopg2"))
#: URI, and what the message says of it beyond the URI and its source.
UNUSABLE = [
    ("sqllite:///mlflow.db", "did you mean 'sqlite'?"),
    ("htp://127.0.0.1:5000", "did you mean 'http'?"),
    ("foo://bar", "store for the scheme 'foo'"),
    ("mlflow-artifacts:/x", "scheme 'mlflow-artifacts'"),
    ("file://otherhost/x", "on the host 'otherhost'"),
    pytest.param(
        "postgresql://127.0.0.1:1/x",
        "driver it needs is not installed",
        marks=pytest.mark.skipif(POSTGRES_DRIVER, reason="a PostgreSQL driver is installed"),
    ),
]
#: Every command that opens a store, with the arguments it needs to get that far.
OPENING = [
    ["rank"],
    ["report", "--experiment", "cli-errors", "-o", "r.html"],
    ["budget", "show", MODEL],
    ["budget", "set", MODEL, "--max-kwh", "1"],
    ["budget", "remove", MODEL],
    ["gate", MODEL, "1"],
    ["promote", MODEL, "1", "--alias", "champion"],
]
REGISTRY_COMMANDS = [c for c in OPENING if c[0] in ("budget", "gate", "promote")]


def one_error_line(result: Result, *fragments: str) -> str:
    """:func:`assert_error`, and the output is that one line (whitespace folded)."""
    output = assert_error(result, *fragments)
    assert output.startswith("Error: ") and output.strip().count("\n") == 0, output
    return output


@pytest.mark.parametrize(("uri", "says"), UNUSABLE)
@pytest.mark.parametrize("command", OPENING, ids=lambda c: "-".join(c[:2]))
@pytest.mark.parametrize("source", ["--tracking-uri", "MLFLOW_TRACKING_URI"])
def test_a_uri_mlflow_cannot_use_is_one_error_naming_it_and_its_source(
    empty: Path, uri: str, says: str, command: list[str], source: str
) -> None:
    if source == "--tracking-uri":
        result = invoke(*command, "--tracking-uri", uri)
    else:
        result = invoke(*command, env={"MLFLOW_TRACKING_URI": uri})
    output = one_error_line(result, f"{source} is {uri}", says)
    assert "sqlite:////absolute/path/mlflow.db or http://127.0.0.1:5000" in output  # accepted
    if "scheme" in says:  # the schemes MLflow has a store for, as MLflow lists them
        assert "It accepts the schemes file," in output and "sqlite" in output, output
    assert list(empty.iterdir()) == []


@pytest.mark.parametrize(("uri", "says"), UNUSABLE)
@pytest.mark.parametrize("command", REGISTRY_COMMANDS, ids=lambda c: "-".join(c[:2]))
def test_a_registry_uri_mlflow_cannot_use_is_named_as_mlflow_registry_uri(
    store: str, empty: Path, uri: str, says: str, command: list[str]
) -> None:
    result = invoke(*command, env={"MLFLOW_TRACKING_URI": store, "MLFLOW_REGISTRY_URI": uri})
    output = one_error_line(result, f"MLFLOW_REGISTRY_URI is {uri}", says)
    if "scheme" in says:
        assert "model registry store" in output and "green+<uri>" in output, output
    assert list(empty.iterdir()) == []


def test_the_real_command_says_it_in_one_line(tmp_path: Path) -> None:
    """No traceback from the installed entry point either (CliRunner shows only the error)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(REPO)
    for args in (["rank", "--tracking-uri", "sqllite:///mlflow.db"], ["gate", MODEL, "1"]):
        if args[0] == "gate":
            env["MLFLOW_TRACKING_URI"] = "htp://127.0.0.1:5000"
        done = subprocess.run(
            [sys.executable, "-m", "mlflow_green.cli", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert done.stderr.startswith("Error: ") and done.stderr.count("\n") == 1, done.stderr
        assert "did you mean" in done.stderr and done.stdout == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("uri", ["sqlite://", "sqlite:///:memory:"])
@pytest.mark.parametrize("command", OPENING[:3], ids=lambda c: c[0])
def test_an_in_memory_database_is_refused(empty: Path, uri: str, command: list[str]) -> None:
    """New and empty in each command: rank once failed on MLflow's own tables there."""
    one_error_line(invoke(*command, "--tracking-uri", uri), f"--tracking-uri is {uri}", "in-memory")


class _NotMlflow(http.server.BaseHTTPRequestHandler):
    """A web server that answers every request, but is no MLflow server."""

    def do_GET(self) -> None:
        self.send_error(404)

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("command", [OPENING[1], OPENING[2], OPENING[5]], ids=lambda c: c[0])
def test_a_server_that_is_not_mlflow_is_named_at_the_first_request(command: list[str]) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotMlflow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        result = invoke(*command, "--tracking-uri", url)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    one_error_line(
        result, f"--tracking-uri is {url}, which MLflow cannot open as a tracking store", "404"
    )


def test_a_file_store_mlflow_refuses_is_named_with_mlflows_reason(empty: Path) -> None:
    """MLflow 3 refuses file stores unless MLFLOW_ALLOW_FILE_STORE=true: said as one line."""
    store = empty / "mlruns"
    (store / ".trash").mkdir(parents=True)
    result = invoke(
        "gate",
        MODEL,
        "1",
        "--tracking-uri",
        store.as_uri(),
        env={"MLFLOW_ALLOW_FILE_STORE": "false"},
    )
    one_error_line(
        result, "which MLflow cannot open as a tracking store", "MLFLOW_ALLOW_FILE_STORE"
    )


# -- a local file that is not an MLflow store is refused and left as it is -------------------


def _foreign(folder: Path, kind: str) -> Path:
    """A file or folder another application owns, that MLflow would turn into a store."""
    if kind == "folder":
        path = folder / "project"
        (path / "data").mkdir(parents=True)
        (path / "data" / "rows.csv").write_text("a,b\n1,2\n")
        return path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "app.db"
    if kind == "empty":
        path.touch()
    elif kind == "text":
        path.write_text("not a database\n")
    else:
        db = sqlite3.connect(path)
        if kind == "sqlite-wal":
            db.execute("PRAGMA journal_mode = wal")
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO users (name) VALUES ('ada')")
        db.commit()
        db.close()
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


FOREIGN = {
    "empty": "is an empty file (0 bytes)",
    "text": "is not a SQLite database",
    "sqlite": "is a SQLite database without MLflow's experiments table (its tables: users)",
    "sqlite-wal": "is a SQLite database without MLflow's experiments table (its tables: users)",
    "folder": "is a folder without MLflow experiments or registered models",
}


@pytest.mark.parametrize("kind", FOREIGN)
@pytest.mark.parametrize("command", OPENING, ids=lambda c: "-".join(c[:2]))
@pytest.mark.parametrize("source", ["--tracking-uri", "MLFLOW_TRACKING_URI"])
def test_a_store_that_is_not_mlflows_is_refused_and_left_unchanged(
    tmp_path: Path, empty: Path, kind: str, command: list[str], source: str
) -> None:
    path = _foreign(tmp_path / "theirs", kind)
    uri = path.as_uri() if kind == "folder" else f"sqlite:///{path}"
    before = _snapshot(tmp_path / "theirs")
    env = {"MLFLOW_ALLOW_FILE_STORE": "true"}  # MLflow would then write into the folder
    if source == "--tracking-uri":
        result = invoke(*command, "--tracking-uri", uri, env=env)
    else:
        result = invoke(*command, env={**env, "MLFLOW_TRACKING_URI": uri})
    one_error_line(result, f"{source} is {uri}, and {path} {FOREIGN[kind]}", "not an MLflow store")
    assert _snapshot(tmp_path / "theirs") == before  # no tables, no -wal, -shm or -journal
    assert list(empty.iterdir()) == []


@pytest.mark.parametrize("command", REGISTRY_COMMANDS, ids=lambda c: "-".join(c[:2]))
def test_a_registry_database_that_is_not_mlflows_is_refused(
    store: str, tmp_path: Path, empty: Path, command: list[str]
) -> None:
    path = _foreign(tmp_path / "theirs", "sqlite")
    before = _snapshot(tmp_path / "theirs")
    env = {"MLFLOW_TRACKING_URI": store, "MLFLOW_REGISTRY_URI": f"sqlite:///{path}"}
    one_error_line(invoke(*command, env=env), f"MLFLOW_REGISTRY_URI is sqlite:///{path}, and")
    assert _snapshot(tmp_path / "theirs") == before


def test_the_default_store_that_is_not_mlflows_is_refused(empty: Path) -> None:
    """An ``mlflow.db`` of another application in the current folder, read by default."""
    _foreign(empty, "sqlite").rename(empty / "mlflow.db")
    before = _snapshot(empty)
    one_error_line(
        invoke("rank"), "the tracking URI is MLflow's default sqlite:///", "experiments table"
    )
    assert _snapshot(empty) == before


def test_sync_refuses_a_tracking_uri_mlflow_cannot_use(
    tmp_path: Path, empty: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_GREEN_SPOOL_DIR", str(tmp_path / "spool"))
    one_error_line(invoke("sync", "--tracking-uri", "sqllite:///x.db"), "did you mean 'sqlite'?")
    path = _foreign(tmp_path / "theirs", "sqlite")
    before = _snapshot(tmp_path / "theirs")
    uri = f"sqlite:///{path}"
    one_error_line(invoke("sync", "--tracking-uri", uri), f"--tracking-uri is {uri}, and {path}")
    assert _snapshot(tmp_path / "theirs") == before
    assert list(empty.iterdir()) == []


# -- rank's and report's unknown metric and model name their option --------------------------


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["rank", "--metric", "nosuch"], ["--metric 'nosuch':", "metrics found: accuracy"]),
        (["rank", "--model", "nosuch"], ["--model 'nosuch': no registered model named 'nosuch'"]),
        (["rank", "--model", MODEL, "--model", "nope"], ["--model 'nope': no registered model"]),
        (
            ["report", "--experiment", "cli-errors", "-o", "r.html", "--metric", "nosuch"],
            ["--metric 'nosuch':", "accuracy"],
        ),
    ],
)
def test_an_unknown_metric_or_model_names_its_option(
    store: str, empty: Path, args: list[str], fragments: list[str]
) -> None:
    output = one_error_line(invoke(*args, "--tracking-uri", store), *fragments)
    assert f"--model '{MODEL}'" not in output
    assert list(empty.iterdir()) == []
