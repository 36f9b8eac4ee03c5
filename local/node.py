"""A real Kubernetes node on this machine: containerd + runc, the kubelet, kube-proxy and a CNI
bridge, started so that it can be torn down completely.

Everything the node changes lives in namespaces and a cgroup of its own:
- a network namespace (`serin-node`) joined to the host by a veth pair: the host end
  (HOST_ADDRESS) is where the apiserver listens for the node and its Pods; the node end
  (NODE_ADDRESS) is the node's InternalIP. The CNI bridge, Pod interfaces, kube-proxy's and the
  CNI plugins' iptables rules and every sysctl they set are in that namespace, and go with it;
- a private mount namespace: containerd's and the kubelet's mounts (overlay snapshots, Pod
  volumes, network namespace handles) and the directories they insist on (/var/lib/kubelet,
  /var/lib/cni, /var/log/pods, /run/netns, ...) are bind-mounted from the node's work directory, so
  the host sees none of them and they vanish with the last process;
- one cgroup subtree (`/serin-node` in every hierarchy, the kubelet's cgroupRoot) holding every
  container, so that teardown can find and kill each process before removing it.
Two host routes (Pod and Service ranges, via the veth) let the host's Prometheus and tests reach
Pods; they belong to the veth and disappear with it. Stop with Node.stop(); `serin dev down` and the
test fixtures call it, and Node.cleanup_leftovers() removes what a killed run left.

Needs root (namespaces, mounts, iptables, cgroups) and the binaries of hack/provision.sh.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from serin.local.controlplane import SERVICE_CIDR, ControlPlane, ControlPlaneError
from serin.local.pki import issue_client_cert

NETNS = "serin-node"
HOST_VETH, NODE_VETH = "serin-h0", "serin-n0"
HOST_ADDRESS, NODE_ADDRESS = "10.250.0.1", "10.250.0.2"
POD_CIDR = "10.244.0.0/24"
NODE_NAME = "serin-node"
CGROUP_ROOT = "serin-node"
CGROUP_FS = Path("/sys/fs/cgroup")
CNI_BIN = Path("/usr/lib/cni")
# Paths containerd, the CRI plugin and the kubelet use whatever they are told: each gets a directory
# of the node's own, bind-mounted inside the node's mount namespace.
# In the node's own /run/containerd (a private bind, below), not the work directory: a unix socket
# path is at most 104 bytes, and a deep --home made containerd fail with "unix socket path too long".
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
PRIVATE_DIRS = ("/var/lib/kubelet", "/var/lib/cni", "/var/log/pods", "/var/log/containers", "/run/netns",
                "/run/containerd")


class NodeError(ControlPlaneError):
    pass


def _run(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(list(argv), capture_output=True, text=True, check=False, input=input)
    if check and out.returncode != 0:
        raise NodeError(f"{' '.join(argv)} failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    return out


def require_root() -> None:
    if os.geteuid() != 0:
        raise NodeError("a real node needs root (network and mount namespaces, iptables, cgroups): run as root")


@dataclass
class Node:
    """One node, `NODE_NAME`, registered with `control_plane` (started with apiserver_address=HOST_ADDRESS)."""

    workdir: Path
    control_plane: ControlPlane
    images: list[Path] = field(default_factory=list)  # OCI archives imported into containerd at start
    _init: subprocess.Popen[bytes] | None = None

    @property
    def bin_dir(self) -> Path:
        return self.control_plane.bin_dir

    @property
    def log(self) -> Path:
        return self.workdir / "node.log"

    # -- lifecycle ------------------------------------------------------------------------------

    @staticmethod
    def create_network() -> None:
        """The node's network namespace and veth. Before the control plane: the apiserver binds the
        host end."""
        require_root()
        Node.cleanup_leftovers()
        _run("ip", "netns", "add", NETNS)
        _run("ip", "link", "add", HOST_VETH, "type", "veth", "peer", "name", NODE_VETH, "netns", NETNS)
        _run("ip", "addr", "add", f"{HOST_ADDRESS}/30", "dev", HOST_VETH)
        _run("ip", "link", "set", HOST_VETH, "up")
        ns = ("ip", "netns", "exec", NETNS)
        _run(*ns, "ip", "addr", "add", f"{NODE_ADDRESS}/30", "dev", NODE_VETH)
        _run(*ns, "ip", "link", "set", NODE_VETH, "up")
        _run(*ns, "ip", "link", "set", "lo", "up")
        _run(*ns, "ip", "route", "add", "default", "via", HOST_ADDRESS)
        for cidr in (POD_CIDR, SERVICE_CIDR):
            _run("ip", "route", "add", cidr, "via", NODE_ADDRESS, "dev", HOST_VETH)

    def start(self, timeout: float = 120.0) -> None:
        require_root()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_configs()
        for controller in self._cgroup_controllers():
            (CGROUP_FS / controller / CGROUP_ROOT).mkdir(exist_ok=True)
        script = self.workdir / "node-init.sh"
        script.write_text(self._init_script())
        logf = self.log.open("ab")
        # nsenter: the network namespace (not `ip netns exec`, whose fresh /sys hides the cgroup
        # mounts the kubelet needs: "failed to find cgroup mounts"); unshare: a private mount namespace.
        self._init = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{NETNS}", "unshare", "--mount", "--propagation", "private", "--fork",
             "bash", str(script)],
            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self._init is not None and self._init.poll() is not None:
                raise NodeError(f"the node exited early ({self._init.returncode}):\n{self.tail()}")
            out = self.control_plane.kubectl(
                "get", "node", NODE_NAME, "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False)
            last = out.stdout.strip() or out.stderr.strip()
            if last == "True":
                return
            time.sleep(0.5)
        raise NodeError(f"node {NODE_NAME} not Ready after {timeout:.0f}s ({last}):\n{self.tail()}")

    def stop(self) -> None:
        """Kills every process of the node and its containers, then removes what it made."""
        if self._init is not None and self._init.poll() is None:
            # The kubelet first, so that it does not restart what is being stopped.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._init.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._init.wait(10)
        Node.cleanup_leftovers()
        self._init = None

    @staticmethod
    def cleanup_leftovers() -> None:
        """Everything a node leaves, whether it stopped cleanly or was killed: processes in its
        cgroup, network namespace and mount namespace; the cgroup subtree; the namespace and veth
        (with the routes, bridge and iptables rules inside)."""
        for _ in range(3):
            pids = Node._node_pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.3)
        for controller in Node._cgroup_controllers():
            root = CGROUP_FS / controller / CGROUP_ROOT
            if root.is_dir():
                # Deepest first: a cgroup is removed only once it has no children.
                for path in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                    with contextlib.suppress(OSError):
                        path.rmdir()
                with contextlib.suppress(OSError):
                    root.rmdir()
        if Path(f"/run/netns/{NETNS}").exists():
            _run("ip", "netns", "del", NETNS, check=False)
        if Path(f"/sys/class/net/{HOST_VETH}").exists():
            _run("ip", "link", "del", HOST_VETH, check=False)
        # `ip netns add` made /run/netns a mount point the first time; once no namespace is left in
        # it, that mount is ours to undo.
        netns_dir = Path("/run/netns")
        if netns_dir.is_dir() and str(netns_dir) in _mount_points() and not any(netns_dir.iterdir()):
            _run("umount", str(netns_dir), check=False)

    @staticmethod
    def leftovers() -> list[str]:
        """What of a node is still on the host: empty after stop() (the tests assert it)."""
        found = [f"process {pid}: {_cmdline(pid)}" for pid in sorted(Node._node_pids())]
        found += [f"cgroup {CGROUP_FS / c / CGROUP_ROOT}" for c in Node._cgroup_controllers()
                  if (CGROUP_FS / c / CGROUP_ROOT).exists()]
        if Path(f"/run/netns/{NETNS}").exists():
            found.append(f"network namespace {NETNS}")
        if Path(f"/sys/class/net/{HOST_VETH}").exists():
            found.append(f"interface {HOST_VETH}")
        found += [f"mount {m}" for m in _mount_points()
                  if (m == "/run/netns" and not any(Path(m).iterdir()))
                  or any(d in m for d in ("/kubelet", "containerd", f"/run/netns/{NETNS}"))]
        return found

    @staticmethod
    def _node_pids() -> set[int]:
        pids: set[int] = set()
        for controller in Node._cgroup_controllers():
            root = CGROUP_FS / controller / CGROUP_ROOT
            for procs in root.rglob("cgroup.procs") if root.is_dir() else ():
                with contextlib.suppress(OSError, ValueError):
                    pids |= {int(p) for p in procs.read_text().split()}
        netns = Path(f"/run/netns/{NETNS}")
        if netns.exists():
            out = _run("ip", "netns", "pids", NETNS, check=False)
            pids |= {int(p) for p in out.stdout.split() if p.isdigit()}
        pids.discard(os.getpid())
        return pids

    @staticmethod
    def _cgroup_controllers() -> list[str]:
        """The cgroup v1 hierarchies the kubelet's cgroupfs driver writes to (or "" on cgroup v2)."""
        if (CGROUP_FS / "cgroup.controllers").exists():
            return [""]
        # Every hierarchy, the named systemd one and the hybrid cgroup2 ("unified") included: runc
        # makes a directory in each.
        return sorted(p.name for p in CGROUP_FS.iterdir() if p.is_dir() and not p.is_symlink())

    def tail(self, lines: int = 40) -> str:
        parts = []
        for name in ("node.log", "containerd.log", "kubelet.log", "kube-proxy.log"):
            path = self.workdir / name
            with contextlib.suppress(OSError):
                parts.append(f"--- {name}:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(parts)

    # -- configuration --------------------------------------------------------------------------

    def _write_configs(self) -> None:
        w, cp = self.workdir, self.control_plane
        pki = cp.pki
        for sub in ("containerd", "cni/conf", "cni/ipam", "private", "kubelet-root"):
            (w / sub).mkdir(parents=True, exist_ok=True)
        for name, cn, org in (("kubelet", f"system:node:{NODE_NAME}", "system:nodes"),
                              ("kube-proxy", "system:kube-proxy", None)):
            cert, key = issue_client_cert(pki, name, cn, org)
            cp.write_kubeconfig(w / f"{name}.kubeconfig", user={"client-certificate": str(cert),
                                                                "client-key": str(key)})
        sock = CONTAINERD_SOCKET
        (w / "containerd" / "config.toml").write_text(f'''version = 2
root = "{w}/containerd/root"
state = "{w}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  # Built here (hack/images.sh): no registry is reachable.
  sandbox_image = "registry.k8s.io/pause:3.10"
  disable_apparmor = true
  # This machine has no CAP_SYS_RESOURCE: lowering oom_score_adj fails every sandbox otherwise
  # ("nsexec: failed to update /proc/self/oom_score_adj: Permission denied").
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{w}/cni/conf"
''')
        (w / "cni" / "conf" / "10-serin.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": "serin",
            "plugins": [
                # ipMasq off: Pods reach the host (the apiserver, Prometheus) and nothing beyond.
                {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": f"{w}/cni/ipam"}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
                {"type": "loopback"},
            ]}, indent=2))
        (w / "kubelet-config.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "cgroupDriver": "cgroupfs", "cgroupRoot": f"/{CGROUP_ROOT}", "failCgroupV1": False,
            "failSwapOn": False, "containerRuntimeEndpoint": f"unix://{sock}",
            "address": NODE_ADDRESS, "port": 10250, "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
            "readOnlyPort": 0,
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(pki.ca_cert)}},
            "authorization": {"mode": "Webhook"},
            "clusterDomain": "cluster.local", "clusterDNS": [], "resolvConf": "",
            "enforceNodeAllocatable": [], "cgroupsPerQOS": True, "protectKernelDefaults": False,
            # Imported images must never be garbage-collected or evicted: nothing can pull them back.
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False, "localStorageCapacityIsolation": True,
            "shutdownGracePeriod": "0s", "maxPods": 110,
        }, sort_keys=False))
        (w / "kube-proxy-config.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(w / "kube-proxy.kubeconfig")},
            # nftables, not iptables: the iptables proxier commits the filter table and the nat table
            # in two transactions, and a SYN to a Service that has just got its first endpoint can
            # pass between them (the REJECT gone, no DNAT yet). Routed on un-NATed, it leaves a
            # conntrack entry that every retransmission follows: the connection hangs until the
            # client gives up (seen right after a Model's first version served; docs/cluster.md).
            # The nftables proxier changes its one table in one transaction.
            "hostnameOverride": NODE_NAME, "mode": "nftables", "clusterCIDR": POD_CIDR,
            "bindAddress": "127.0.0.1", "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249", "oomScoreAdj": 0,
            # Zeros: kube-proxy leaves the host-wide conntrack table settings alone.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s",
                          "udpTimeout": "0s", "udpStreamTimeout": "0s"},
            "nftables": {"masqueradeAll": False, "syncPeriod": "30s", "minSyncPeriod": "1s"},
        }, sort_keys=False))

    def _init_script(self) -> str:
        w, b = self.workdir, self.bin_dir
        sock = CONTAINERD_SOCKET
        binds = "\n".join(f"mkdir -p {d} {w}/private{d} && mount --bind {w}/private{d} {d}" for d in PRIVATE_DIRS)
        imports = "\n".join(f'ctr -a {sock} -n k8s.io images import "{a}" > /dev/null' for a in self.images)
        return f'''# The node's processes, inside its network and a private mount namespace (local/node.py).
set -eu
mount --make-rshared /
{binds}
trap 'kill -TERM $(jobs -p) 2>/dev/null; wait' TERM INT
containerd --config {w}/containerd/config.toml > {w}/containerd.log 2>&1 &
for i in $(seq 100); do [ -S {sock} ] && break; sleep 0.1; done
t0=$SECONDS
{imports}
echo "containerd up, {len(self.images)} images imported in $((SECONDS - t0))s"
{b}/kubelet --config={w}/kubelet-config.yaml --kubeconfig={w}/kubelet.kubeconfig \\
  --hostname-override={NODE_NAME} --node-ip={NODE_ADDRESS} --root-dir=/var/lib/kubelet --v=1 \\
  > {w}/kubelet.log 2>&1 &
{b}/kube-proxy --config={w}/kube-proxy-config.yaml --v=1 > {w}/kube-proxy.log 2>&1 &
wait
'''


def _mount_points() -> list[str]:
    try:
        return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    except OSError:
        return []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return "?"


def start_node(workdir: Path, control_plane: ControlPlane, images: list[Path]) -> Node:
    node = Node(workdir=workdir, control_plane=control_plane, images=images)
    try:
        node.start()
    except BaseException:
        node.stop()
        raise
    return node

