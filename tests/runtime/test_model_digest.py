"""Issue 32 #1: the runtime serves model.onnx only with the digest its conversion recorded, so a
file replaced in the store after its conversion (by anything that could write there) is refused,
loudly, instead of served under the analysed version's name."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port
from serin.runtime.model import ModelRefused, OnnxModel


def test_a_model_with_its_recorded_digest_is_served_and_another_is_refused(models: dict[str, Path],
                                                                           tmp_path: Path) -> None:
    good = hashlib.sha256((models["numeric"] / "model.onnx").read_bytes()).hexdigest()
    assert OnnxModel("m", models["numeric"], sha256=good.upper()).inputs
    swapped = tmp_path / "swapped"
    shutil.copytree(models["numeric"], swapped)
    shutil.copy(models["mixed"] / "model.onnx", swapped / "model.onnx")
    with pytest.raises(ModelRefused, match=f"its sha256 is [0-9a-f]{{64}}, not {good}"):
        OnnxModel("m", swapped, sha256=good)
    # Without a recorded digest (a version converted before digests were kept) it is not checked.
    assert OnnxModel("m", swapped).inputs


def test_serve_exits_with_the_reason_as_its_termination_message(models: dict[str, Path], tmp_path: Path) -> None:
    term = tmp_path / "termination-log"
    term.touch()
    env = {**os.environ, "SERIN_MODEL_SHA256": "ab" * 32, "SERIN_TERMINATION_LOG": str(term)}
    proc = subprocess.run([sys.executable, "-m", "serin.runtime", "--model_dir", str(models["numeric"]),
                           "--model_name", "m", "--http_port", str(free_port()), "--host", "127.0.0.1"],
                          capture_output=True, text=True, timeout=120, env=env, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "refusing to serve" in proc.stderr and "not " + "ab" * 32 in proc.stderr
    assert term.read_text().startswith(f"refusing to serve {models['numeric'] / 'model.onnx'}")


def test_a_profile_replaced_after_publishing_is_refused_as_the_model_would_be(models: dict[str, Path],
                                                                            tmp_path: Path) -> None:
    """Issue 34 #3: whoever can write a namespace's part of the store (its keys, its claim) could
    change a version's profile.json, the reference its gates and monitoring judge by. The publish
    step names the profile's digest inside model.onnx, whose own digest the operator recorded: a
    profile that is not the one published is refused, as a replaced model is."""
    import onnx
    from serin.converters.publish import with_profile_digest
    from serin.runtime.profile import PROFILE_DIGEST_KEY

    published = tmp_path / "published"
    shutil.copytree(models["numeric"], published)
    profile = (published / "profile.json").read_bytes()
    model = onnx.load_from_string((published / "model.onnx").read_bytes())
    model.metadata_props.add(key=PROFILE_DIGEST_KEY, value="0" * 64)  # the untrusted step's claim: dropped
    data = with_profile_digest(model, hashlib.sha256(profile).hexdigest())
    (published / "model.onnx").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    assert [p.value for p in onnx.load_from_string(data).metadata_props if p.key == PROFILE_DIGEST_KEY] == [
        hashlib.sha256(profile).hexdigest()]
    served = OnnxModel("m", published, sha256=digest)
    assert served.profile is not None and served.inputs
    (published / "profile.json").write_bytes(profile.replace(b'"version"', b'"version" ', 1))
    with pytest.raises(ModelRefused, match=r"profile\.json's sha256 is [0-9a-f]{64}, not [0-9a-f]{64} as model\.onnx names it"):
        OnnxModel("m", published, sha256=digest)
    (published / "profile.json").unlink()
    with pytest.raises(ModelRefused, match=r"its profile\.json is missing"):
        OnnxModel("m", published, sha256=digest)
