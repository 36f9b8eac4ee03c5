"""A real Kubernetes control plane: etcd + kube-apiserver (+ kube-controller-manager, and
kube-scheduler when a node runs).

The binaries come from hack/provision.sh (Go builds from the module proxy, cached). The apiserver
runs with authentication and RBAC on, like a real cluster, so that least-privilege RBAC can be
proven rather than assumed. Without a node it listens on loopback and kube-controller-manager runs
only the controllers a kubelet-less cluster can use: garbage collection (owner references),
namespace deletion and ServiceAccounts. With a node (`apiserver_address`, see local/node.py) it
listens where the node's Pods reach it, and every controller and the scheduler run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from serin.local.pki import Pki, create_pki

REPO_ROOT = Path(__file__).resolve().parent.parent
# Controllers that make sense without a kubelet. Jobs and Deployments would only make Pods that
# never run, so their controllers stay off: nothing pretends a Pod ran.
KCM_CONTROLLERS = "garbagecollector,namespace,serviceaccount,serviceaccount-token,clusterrole-aggregation"
SERVICE_CIDR = "10.0.0.0/24"


class ControlPlaneError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def provision(root: Path = REPO_ROOT) -> Path:
    """Runs hack/provision.sh (near-instant when cached) and returns the bin directory."""
    env_bin = os.environ.get("SERIN_BIN")
    if env_bin and (Path(env_bin) / "kube-apiserver").exists():
        return Path(env_bin)
    script = root / "hack" / "provision.sh"
    if not script.exists():
        raise ControlPlaneError(
            f"{script} not found: set SERIN_BIN to a directory holding etcd and kube-apiserver"
        )
    out = subprocess.run(["bash", str(script)], check=False, capture_output=True, text=True)
    if out.returncode != 0:
        raise ControlPlaneError(f"hack/provision.sh failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def provisioned_home(variable: str, marker: str, root: Path = REPO_ROOT) -> Path:
    """A directory hack/provision.sh fills (hack/lib.sh names it: $SERIN_KSERVE_HOME, …): from the
    environment when it holds `marker`, else provisioned now (near-instant when cached)."""
    env = os.environ.get(variable)
    if env and (Path(env) / marker).exists():
        return Path(env)
    out = subprocess.run(["bash", "-c", f'source "{root}/hack/lib.sh" && bash "{root}/hack/provision.sh" >/dev/null '
                          f'&& echo "${variable}"'], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise ControlPlaneError(f"hack/provision.sh failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


@dataclass
class _Proc:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    env: dict[str, str] | None = None

    def start(self) -> None:
        logf = self.log.open("ab")
        # A session of its own, so that stopping the platform never signals the caller.
        self.popen = subprocess.Popen(
            self.argv, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
            env=None if self.env is None else os.environ | self.env,
        )
        logf.close()

    def kill(self) -> None:
        """SIGKILL the whole process group: what a node failure or OOM kill looks like."""
        if self.popen and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int | None:
        """The process (the leader of its own process group), while it runs."""
        return self.popen.pid if self.alive() and self.popen is not None else None

    def wait_http(self, url: str, timeout: float) -> None:
        """Until `url` answers 200 (a server's readiness endpoint); fails at once if the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise ControlPlaneError(f"{self.name} exited:\n{self.tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        raise ControlPlaneError(f"{self.name} not ready after {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        if not self.popen or self.popen.poll() is not None:
            return
        # The process group: the stand-in's runtime processes go with it.
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) under `workdir`, on free loopback ports."""

    workdir: Path
    bin_dir: Path
    controller_manager: bool = True
    etcd_port: int = field(default_factory=free_port)
    apiserver_port: int = field(default_factory=free_port)
    # Set when a node runs: the host address its Pods reach the apiserver on (the host end of the
    # node's veth). The apiserver then serves there, and all controllers and the scheduler run.
    apiserver_address: str | None = None
    _procs: dict[str, _Proc] = field(default_factory=dict)

    @property
    def with_node(self) -> bool:
        return self.apiserver_address is not None

    @property
    def server(self) -> str:
        return f"https://{self.apiserver_address or '127.0.0.1'}:{self.apiserver_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def pki(self) -> Pki:
        return Pki(self.workdir / "pki")

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        pki = create_pki(self.workdir / "pki", extra_ips=(self.apiserver_address,) if self.apiserver_address else ())
        self.write_kubeconfig(self.kubeconfig, user={
            "client-certificate": str(pki.admin_cert), "client-key": str(pki.admin_key)})
        self._procs["etcd"] = _Proc("etcd", self._etcd_argv(), self.workdir / "etcd.log")
        self._procs["kube-apiserver"] = _Proc(
            "kube-apiserver", self._apiserver_argv(pki), self.workdir / "kube-apiserver.log")
        if self.controller_manager:
            self._procs["kube-controller-manager"] = _Proc(
                "kube-controller-manager", self._kcm_argv(pki),
                self.workdir / "kube-controller-manager.log")
        if self.with_node:
            self._procs["kube-scheduler"] = _Proc(
                "kube-scheduler", self._scheduler_argv(), self.workdir / "kube-scheduler.log")
        self._procs["etcd"].start()
        self._wait_etcd(timeout)
        self._procs["kube-apiserver"].start()
        self.wait_ready(timeout)
        for name in ("kube-controller-manager", "kube-scheduler"):
            if name in self._procs:
                self._procs[name].start()

    def stop(self) -> None:
        for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            if name in self._procs:
                self._procs[name].stop()

    def restart_apiserver(self, downtime: float = 0.0, timeout: float = 90.0) -> None:
        """Stops kube-apiserver, waits `downtime` seconds, starts it again (for resilience tests)."""
        proc = self._procs["kube-apiserver"]
        proc.stop()
        time.sleep(downtime)
        proc.start()
        self.wait_ready(timeout)

    def describe_failure(self) -> str:
        return "\n".join(f"--- {p.name} (alive={p.alive()}):\n{p.tail()}" for p in self._procs.values())

    # -- clients --------------------------------------------------------------------------------

    def pids(self) -> dict[str, int]:
        """Its running processes by name: what `serin dev down` stops when their parent is gone."""
        return {name: proc.pid for name, proc in self._procs.items() if proc.pid is not None}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin_dir / "kubectl"), "--kubeconfig", str(kubeconfig or self.kubeconfig), *args]
        out = subprocess.run(argv, input=input, capture_output=True, text=True, check=False)
        if check and out.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)} failed: {out.stderr.strip()}")
        return out

    def wait_established(self, crds: list[str], timeout: float = 120.0) -> None:
        """Polls until every named CRD is Established: `kubectl wait --for=condition=Established`
        errors on a CRD that has no status yet."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.kubectl("get", "crd", *crds, "-o",
                               'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Established")].status}'
                               '{"\\n"}{end}', check=False)
            if out.returncode == 0 and out.stdout.split() == ["True"] * len(crds):
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"CRDs not Established after {timeout}s: {out.stdout} {out.stderr}")
            time.sleep(0.3)

    def service_account_kubeconfig(self, namespace: str, name: str, duration: str = "2h") -> Path:
        """A kubeconfig that authenticates as system:serviceaccount:NAMESPACE:NAME (via TokenRequest)."""
        token = self.kubectl("create", "token", name, "-n", namespace, f"--duration={duration}").stdout.strip()
        path = self.workdir / f"kubeconfig-sa-{namespace}-{name}"
        self.write_kubeconfig(path, user={"token": token}, namespace=namespace)
        return path

    # -- internals ------------------------------------------------------------------------------

    def _etcd_argv(self) -> list[str]:
        url = f"http://127.0.0.1:{self.etcd_port}"
        return [
            str(self.bin_dir / "etcd"),
            "--name=serin", f"--data-dir={self.workdir / 'etcd-data'}",
            f"--listen-client-urls={url}", f"--advertise-client-urls={url}",
            f"--listen-peer-urls=http://127.0.0.1:{free_port()}",
            # A throwaway store: skipping fsync makes every write an order of magnitude faster.
            "--unsafe-no-fsync", "--log-level=warn",
        ]

    def _apiserver_argv(self, pki: Pki) -> list[str]:
        address = self.apiserver_address or "127.0.0.1"
        argv = [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--bind-address={address}", f"--advertise-address={address}",
            f"--secure-port={self.apiserver_port}",
            f"--tls-cert-file={pki.serving_cert}", f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            # Node: the kubelet's requests are authorised as its node's (system:node:NAME), as in
            # any real cluster; RBAC for everyone else.
            "--authorization-mode=Node,RBAC",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--allow-privileged=true",
            # Strict like OpenShift and hardened clusters: setting blockOwnerDeletion on an owner
            # reference needs update on the owner's finalizers, so the chart's RBAC is tested
            # against the stricter rule.
            "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
            "--v=1",
        ]
        if self.with_node:
            # logs, exec and port-forward go through the kubelet, as a cluster admin would.
            argv += [f"--kubelet-client-certificate={pki.admin_cert}", f"--kubelet-client-key={pki.admin_key}",
                     "--kubelet-preferred-address-types=InternalIP"]
        else:
            # No kubelet, so nothing can create the per-namespace default ServiceAccount in time for
            # admission; Pods are never run here anyway.
            argv.append("--disable-admission-plugins=ServiceAccount")
        return argv

    def _kcm_argv(self, pki: Pki) -> list[str]:
        return [
            str(self.bin_dir / "kube-controller-manager"),
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            # With a node every controller runs (Deployments, Jobs, endpoints, volumes, nodes).
            f"--controllers={'*' if self.with_node else KCM_CONTROLLERS}",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_cert}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            "--leader-elect=false", "--use-service-account-credentials=false", "--v=1",
        ]

    def _scheduler_argv(self) -> list[str]:
        return [
            str(self.bin_dir / "kube-scheduler"), f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}", f"--authorization-kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}", "--leader-elect=false", "--v=1",
        ]

    def write_kubeconfig(self, path: Path, user: dict[str, str], namespace: str = "default") -> None:
        config = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "serin-local", "cluster": {
                "server": self.server, "certificate-authority": str(self.pki.ca_cert)}}],
            "users": [{"name": "serin-user", "user": user}],
            "contexts": [{"name": "serin-local", "context": {
                "cluster": "serin-local", "user": "serin-user", "namespace": namespace}}],
            "current-context": "serin-local",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)

    def _wait_etcd(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.etcd_port}/health"
        while time.monotonic() < deadline:
            self._check_alive("etcd")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if json.load(resp).get("health") == "true":
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise ControlPlaneError(f"etcd not healthy after {timeout}s\n{self.describe_failure()}")

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Waits for /readyz, which includes the RBAC bootstrap roles and the CRD informers."""
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive("kube-apiserver")
            try:
                with urllib.request.urlopen(f"{self.server}/readyz", context=ctx, timeout=3) as resp:
                    if resp.status == 200:
                        return
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code}"
            except OSError as err:
                last = str(err)
            time.sleep(0.3)
        raise ControlPlaneError(f"kube-apiserver not ready after {timeout}s ({last})\n{self.describe_failure()}")

    def _check_alive(self, name: str) -> None:
        proc = self._procs[name]
        if not proc.alive():
            raise ControlPlaneError(f"{name} exited early:\n{proc.tail()}")


def start_control_plane(workdir: Path, controller_manager: bool = True,
                        apiserver_address: str | None = None) -> ControlPlane:
    """Provisions (cached) and starts a control plane; the caller must call stop()."""
    cp = ControlPlane(workdir=workdir, bin_dir=provision(), controller_manager=controller_manager,
                      apiserver_address=apiserver_address)
    try:
        cp.start()
    except BaseException:
        cp.stop()
        raise
    return cp

