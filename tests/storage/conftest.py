"""The storage tier: a real S3 server (versitygw, built by hack/provision.sh) on a loopback port,
one per session; each test gets buckets and users of its own. If versitygw cannot be provisioned
the tests fail with the reason; they are never skipped or faked (no moto)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from serin.converters import zoo
from serin.local.s3 import S3Server, S3User, start_s3

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3(tmp_path_factory.mktemp("s3"))
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class Team:
    """An S3 user and the bucket it owns."""

    user: S3User
    bucket: str


@pytest.fixture
def team(s3: S3Server) -> Team:
    name = f"team-{uuid.uuid4().hex[:8]}"
    user = s3.create_user(name)
    s3.create_bucket(name, owner=user)
    return Team(user, name)


@pytest.fixture(scope="session")
def logreg(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    artifact, sample, _, _ = zoo.by_id("logistic_regression").materialize(tmp_path_factory.mktemp("zoo") / "logreg")
    return artifact, sample
