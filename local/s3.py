"""A real S3 server for the local platform and the tests: versitygw (built from its Go module by
hack/provision.sh, Apache-2.0), an S3 gateway over a plain folder.

It runs with its internal IAM, so that teams are real S3 users: the root account (the platform's
administrator) creates buckets owned by a user, and a user's keys are refused by another user's
bucket, as on AWS. Everything lives under `workdir` (objects, IAM, log); `stop()` ends the process
group, and nothing else is left on the host.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serin.local.controlplane import ControlPlaneError, _Proc, free_port, provisioned_home


def s3_binary() -> Path:
    """versitygw, where hack/provision.sh put it ($SERIN_S3_HOME)."""
    return provisioned_home("SERIN_S3_HOME", "versitygw") / "versitygw"


@dataclass(frozen=True)
class S3User:
    access_key: str
    secret_key: str


@dataclass
class S3Server:
    workdir: Path
    binary: Path = field(default_factory=s3_binary)
    # Loopback, or the host end of the node's veth (local/node.py HOST_ADDRESS), where Pods reach it.
    listen: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    region: str = "us-east-1"
    root: S3User = field(default_factory=lambda: S3User("serin-root", secrets.token_hex(16)))
    # (certificate, key): serve HTTPS on the S3 port (the admin port stays plain, on loopback);
    # `ca` is what the certificate is checked against by client().
    tls: tuple[Path, Path] | None = None
    ca: Path | None = None
    _proc: _Proc | None = None
    # bucket -> its policy's statements (grant()): the whole policy is written at every grant.
    _grants: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.listen}:{self.port}"

    @property
    def admin_url(self) -> str:
        # Loopback always: Pods reach the S3 port, never the administration of users and buckets.
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 30.0) -> None:
        for sub in ("data", "iam"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        tls = ["--cert", str(self.tls[0]), "--key", str(self.tls[1])] if self.tls else []
        self._proc = _Proc("versitygw", [
            str(self.binary), "--port", f"{self.listen}:{self.port}", *tls,
            "--admin-port", f"127.0.0.1:{self.admin_port}", "--region", self.region,
            "--iam-dir", str(self.workdir / "iam"), "--quiet",
            "posix", str(self.workdir / "data"),
        ], self.workdir / "versitygw.log",
            # The root keys by environment, not argv: a `ps` on the host does not show them.
            env={"ROOT_ACCESS_KEY": self.root.access_key, "ROOT_SECRET_KEY": self.root.secret_key})
        self._proc.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._proc.alive():
                raise ControlPlaneError(f"versitygw exited:\n{self._proc.tail()}")
            if _listening(self.listen, self.port) and _listening("127.0.0.1", self.admin_port):
                return
            time.sleep(0.1)
        self.stop()
        raise ControlPlaneError(f"versitygw not listening after {timeout}s:\n{self._proc.tail()}")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()

    def client(self, user: S3User | None = None, **config: Any) -> Any:
        """A boto3 S3 client signing as `user` (default: root), path-style."""
        import boto3
        from botocore.config import Config

        user = user or self.root
        return boto3.client("s3", endpoint_url=self.url, region_name=self.region,
                            verify=str(self.ca) if self.ca else None,
                            aws_access_key_id=user.access_key, aws_secret_access_key=user.secret_key,
                            config=Config(s3={"addressing_style": "path"}, **config))

    def _admin(self, *args: str) -> str:
        out = subprocess.run(
            [str(self.binary), "admin", "--endpoint-url", self.admin_url, "--region", self.region, *args],
            env=os.environ | {"ADMIN_ACCESS_KEY": self.root.access_key, "ADMIN_SECRET_KEY": self.root.secret_key},
            capture_output=True, text=True, timeout=30, check=False)
        if out.returncode != 0:
            raise ControlPlaneError(f"versitygw admin {args[0]} failed: {(out.stderr or out.stdout).strip()}")
        return out.stdout

    def create_user(self, name: str) -> S3User:
        """An S3 user (role `user`: only the buckets it owns) with fresh keys."""
        user = S3User(name, secrets.token_hex(16))
        self._admin("create-user", "--access", user.access_key, "--secret", user.secret_key, "--role", "user")
        return user

    def create_bucket(self, bucket: str, owner: S3User | None = None) -> None:
        """A bucket owned by `owner` (default: root): the only user besides root who may use it."""
        self._admin("create-bucket", "--bucket", bucket, "--owner", (owner or self.root).access_key)

    def grant(self, bucket: str, prefix: str, user: S3User) -> None:
        """Lets `user` read and write the objects under `prefix/` of `bucket` (a root-owned one),
        and nothing else there: a bucket policy, as a platform team scopes a namespace's keys to
        its part of a shared bucket on AWS."""
        self._grants.setdefault(bucket, []).append({
            "Effect": "Allow", "Principal": {"AWS": [user.access_key]},
            "Action": ["s3:GetObject", "s3:PutObject"],
            "Resource": [f"arn:aws:s3:::{bucket}/{prefix.strip('/')}/*"]})
        policy = {"Version": "2012-10-17", "Statement": self._grants[bucket]}
        self.client().put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))

    def put(self, bucket: str, key: str, body: bytes | Path, user: S3User | None = None) -> str:
        """Uploads one object (multipart above boto3's 8 MiB threshold); returns its s3:// URI."""
        s3 = self.client(user)
        if isinstance(body, Path):
            s3.upload_file(str(body), bucket, key)
        else:
            s3.put_object(Bucket=bucket, Key=key, Body=body)
        return f"s3://{bucket}/{key}"


def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def start_s3(workdir: Path, listen: str = "127.0.0.1") -> S3Server:
    server = S3Server(workdir=workdir, listen=listen)
    server.start()
    return server
