"""A real node on this machine: containerd, kubelet, kube-scheduler, kube-proxy, CoreDNS
and bridge networking, joined to a control plane of its own (tests/support/testcluster.py
with `NodeAccess`).

Everything runs as plain processes (there is no systemd), and everything the node changes
on the host is put back by `stop`, even after a failed start:
- kernel settings kubelet and the bridge change (recorded before the start);
- iptables: kube-proxy's and kubelet's KUBE-* chains and our egress guard;
- mounts under /var/lib/kubelet, containerd's state, /run/netns; the cni0 bridge;
- directories the node created (/var/lib/kubelet, /var/log/pods, ...).

This machine's rules: no traffic leaves it. Pod traffic is not masqueraded, a guard chain
rejects anything a Pod sends out of the bridge to another interface, CoreDNS answers only
cluster names (no `forward` plugin), and Pods get no host resolver.

Facts of this kind of machine it relies on: cgroup v1 (`failCgroupV1: false`, cgroupfs),
root without CAP_SYS_RESOURCE (containerd's `restrict_oom_score_adj`), Debian's CNI plugins
in /usr/lib/cni, and no registry (images are imported, kubelet's image GC is off).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support import images
from tests.support.testcluster import NodeAccess, TestCluster, _alive, _terminate, testbin
from tests.support.waiting import settled

NODE_BINARIES = ("kubelet", "kube-scheduler", "kube-proxy", "coredns", "pause", "csi-registrar")
HOST_TOOLS = ("containerd", "ctr", "runc", "iptables", "ip6tables", "mmdebstrap", "ip")
CNI_DIR = Path("/usr/lib/cni")
KUBELET_DIR = Path("/var/lib/kubelet")
POD_CIDR = "10.244.0.0/24"
CLUSTER_DNS = "10.96.0.10"
BRIDGE = "cni0"
GUARD = "CONNECTORS-NODE-EGRESS"
GUARD_HOST = "CONNECTORS-NODE-HOST"
SERVICE_CIDR = "10.96.0.0/16"
# Kernel settings kubelet, kube-proxy or the bridge plugin may change.
SYSCTLS = (
    "kernel.panic", "kernel.panic_on_oops", "vm.overcommit_memory", "vm.panic_on_oom",
    "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes", "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet", "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
)  # fmt: skip
# Host paths the node may create; removed at the end unless they were there before.
HOST_PATHS = (
    KUBELET_DIR, Path("/var/log/pods"), Path("/var/log/containers"),
    Path("/var/lib/connectors-csi"), Path("/run/containerd"), Path("/run/netns"),
    Path("/var/lib/cni"), Path("/etc/cni"), Path("/opt/cni"),
)  # fmt: skip


def address() -> tuple[str, str]:
    """This machine's primary IPv4 address and its interface (the default route's)."""
    routes = json.loads(_run(["ip", "-4", "-j", "route", "show", "default"]).stdout)
    interface = routes[0]["dev"]
    addrs = json.loads(_run(["ip", "-4", "-j", "addr", "show", "dev", interface]).stdout)
    return addrs[0]["addr_info"][0]["local"], interface


def missing_reason() -> str | None:
    if os.geteuid() != 0:
        return "a real node needs root"
    tools = [t for t in HOST_TOOLS if shutil.which(t) is None]
    if tools or not (CNI_DIR / "bridge").is_file():
        return (
            f"the node's host tools are missing ({', '.join(tools) or 'CNI plugins'}): "
            "apt-get install containerd runc containernetworking-plugins iptables mmdebstrap"
        )
    binaries = testbin()
    if binaries is None or not all((binaries / b).is_file() for b in NODE_BINARIES):
        return "the node's binaries are not built: run scripts/build-testbin"
    return None


def _run(
    args: list[str], check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=timeout)


class Node:
    """A control plane and one real node, with state under `workdir`."""

    def __init__(self, workdir: Path, binaries: Path) -> None:
        self.workdir = workdir
        self.binaries = binaries
        ip, _ = address()
        self.access = NodeAccess(name=socket.gethostname().lower(), ip=ip)
        self.cluster = TestCluster(workdir / "cluster", binaries, self.access)
        self.containerd_dir = workdir / "containerd"
        self.socket = self.containerd_dir / "containerd.sock"
        self.state_file = workdir / "host-state.json"
        self.pids_file = workdir / "node-pids.json"
        self.project_image = ""

    # Starting ------------------------------------------------------------------------------

    def start(self, timeout: float = 120) -> None:
        """Bring everything up; on failure, put the machine back before raising."""
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._record_host_state()
        archives = self._build_images()
        self._guard_egress()
        self._start_containerd()
        for archive in archives:
            self.ctr("images", "import", str(archive), timeout=300)
        # A node starts from nothing: an earlier run's objects would name Pods it never ran.
        shutil.rmtree(self.cluster.workdir / "etcd", ignore_errors=True)
        self.cluster.start()
        self._start_kubelet()
        self._spawn("kube-scheduler", [
            f"--kubeconfig={self.cluster.kubeconfig}", "--leader-elect=false",
            "--secure-port=0", "--v=1",
        ])  # fmt: skip
        self._spawn("kube-proxy", [f"--config={self._kube_proxy_config()}", "--v=1"])
        settled(self._node_ready, timeout, f"node {self.access.name} Ready")
        self._start_dns(timeout)

    def _build_images(self) -> list[Path]:
        out = self.workdir / "images"
        out.mkdir(exist_ok=True)
        project = images.project_image(out)
        self.project_image = images.project_ref()
        return [
            images.binary_image(self.binaries, "pause", images.PAUSE, out),
            images.binary_image(self.binaries, "csi-registrar", images.REGISTRAR, out),
            images.binary_image(self.binaries, "coredns", images.COREDNS, out),
            images.python_image(out),
            project,
        ]

    def _record_host_state(self) -> None:
        if self.state_file.exists():  # an earlier start's record is the original state
            return
        state = {
            "sysctls": {k: v for k in SYSCTLS if (v := _sysctl(k)) is not None},
            "paths": [str(p) for p in HOST_PATHS if p.exists()],
            "bridge": Path(f"/sys/class/net/{BRIDGE}").exists(),
        }
        self.state_file.write_text(json.dumps(state))

    def _guard_egress(self) -> None:
        """Nothing a Pod sends may leave through another interface than the bridge."""
        _run(["iptables", "-N", GUARD], check=False)
        _run(["iptables", "-F", GUARD])
        _run(["iptables", "-A", GUARD, "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "REJECT",
              "--reject-with", "icmp-net-prohibited"])  # fmt: skip
        if _run(["iptables", "-C", "FORWARD", "-j", GUARD], check=False).returncode:
            _run(["iptables", "-I", "FORWARD", "1", "-j", GUARD])
        # Nor may the host's own packets for a Service or Pod address that kube-proxy did
        # not translate (yet) follow the default route off the machine.
        _run(["iptables", "-N", GUARD_HOST], check=False)
        _run(["iptables", "-F", GUARD_HOST])
        # (Translated packets keep the interface of their first route in this hook.)
        _run(["iptables", "-A", GUARD_HOST, "-m", "conntrack", "--ctstate", "DNAT",
              "-j", "RETURN"])  # fmt: skip
        for cidr in (SERVICE_CIDR, "10.244.0.0/16"):
            _run(["iptables", "-A", GUARD_HOST, "-d", cidr, "!", "-o", BRIDGE, "-j", "REJECT",
                  "--reject-with", "icmp-net-prohibited"])  # fmt: skip
        if _run(["iptables", "-C", "OUTPUT", "-j", GUARD_HOST], check=False).returncode:
            _run(["iptables", "-I", "OUTPUT", "1", "-j", GUARD_HOST])

    def _start_containerd(self) -> None:
        self.containerd_dir.mkdir(parents=True, exist_ok=True)
        net_d = self.workdir / "cni" / "net.d"
        net_d.mkdir(parents=True, exist_ok=True)
        (net_d / "10-connectors-test.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0",
            "name": "connectors-test",
            "plugins": [{
                "type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False,
                "hairpinMode": True,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                         "routes": [{"dst": "0.0.0.0/0"}],
                         "dataDir": str(self.workdir / "cni" / "ipam")},
            }],
        }))  # fmt: skip
        default = _run(["containerd", "config", "default"]).stdout
        changes = {
            r"restrict_oom_score_adj = false": "restrict_oom_score_adj = true",
            r'\bsandbox_image = ".*"': f'sandbox_image = "{images.PAUSE}"',
            r'\bbin_dir = ".*"': f'bin_dir = "{CNI_DIR}"',
            r'\bconf_dir = ".*"': f'conf_dir = "{net_d}"',
        }
        for pattern, replacement in changes.items():
            default, count = re.subn(pattern, replacement, default)
            assert count == 1, f"containerd's default config has no single {pattern}"
        config = self.containerd_dir / "config.toml"
        config.write_text(default)
        self._spawn("containerd", [
            f"--config={config}", f"--address={self.socket}",
            f"--root={self.containerd_dir / 'root'}", f"--state={self.containerd_dir / 'state'}",
        ])  # fmt: skip
        settled(lambda: self.ctr("version", check=False).returncode == 0, 30, "containerd up")

    def _start_kubelet(self) -> None:
        resolv = self.workdir / "pod-resolv.conf"
        resolv.write_text("# Pods get cluster DNS only: no resolver outside this machine.\n"
                          "nameserver 127.0.0.1\n")  # fmt: skip
        pki = self.cluster.pki
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(pki / "ca.crt")}},
            "authorization": {"mode": "Webhook"},
            "clusterDomain": "cluster.local",
            "clusterDNS": [CLUSTER_DNS],
            "resolvConf": str(resolv),
            "podCIDR": POD_CIDR,
            "maxPods": 50,
            "readOnlyPort": 0,
            "serializeImagePulls": False,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
            # Imported images cannot be pulled again: never collect them.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
        }  # fmt: skip
        config_file = self.workdir / "kubelet.yaml"
        config_file.write_text(json.dumps(config))
        kubeconfig = self.workdir / "kubelet.kubeconfig"
        kubeconfig.write_text(self.cluster.kubeconfig.read_text())  # the admin's, for the server
        node_config = json.loads(kubeconfig.read_text())
        node_config["users"][0]["user"] = {
            "client-certificate": str(pki / "node.crt"),
            "client-key": str(pki / "node.key"),
        }
        kubeconfig.write_text(json.dumps(node_config))
        kubeconfig.chmod(0o600)
        self._spawn("kubelet", [
            f"--config={config_file}", f"--kubeconfig={kubeconfig}",
            f"--hostname-override={self.access.name}", f"--node-ip={self.access.ip}",
            f"--root-dir={KUBELET_DIR}", "--v=2",
        ])  # fmt: skip

    def _kube_proxy_config(self) -> Path:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.cluster.kubeconfig)},
            "mode": "iptables",
            "clusterCIDR": POD_CIDR,
            "hostnameOverride": self.access.name,
            "metricsBindAddress": "127.0.0.1:10249",
            "healthzBindAddress": "127.0.0.1:10256",
            "nodePortAddresses": ["primary"],
            # Otherwise kube-proxy changes route_localnet and the conntrack table's sysctls.
            "iptables": {"localhostNodePorts": False},
            "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s",
                          "tcpCloseWaitTimeout": "0s"},
        }  # fmt: skip
        path = self.workdir / "kube-proxy.yaml"
        path.write_text(json.dumps(config))
        return path

    def _node_ready(self) -> bool:
        self._check_alive()
        node = self.cluster.kubectl("get", "node", self.access.name, "-o", "json", check=False)
        if node.returncode:
            return False
        conditions = json.loads(node.stdout)["status"].get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _start_dns(self, timeout: float) -> None:
        self.cluster.kubectl("apply", "-f", "-", stdin=coredns_manifest())
        settled(
            lambda: self.cluster.kubectl(
                "rollout", "status", "deployment/coredns", "-n", "kube-system", "--timeout=5s",
                check=False,
            ).returncode == 0,
            timeout, "CoreDNS rolled out",
        )  # fmt: skip

    # Using it ------------------------------------------------------------------------------

    def ctr(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return _run(["ctr", f"--address={self.socket}", "-n", "k8s.io", *args], check=check,
                    timeout=timeout)  # fmt: skip

    def _spawn(self, name: str, args: list[str]) -> None:
        binary = self.binaries / name if (self.binaries / name).is_file() else Path(name)
        log = (self.workdir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [str(binary), *args], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        log.close()
        pids = self._pids()
        pids[name] = process.pid
        self.pids_file.write_text(json.dumps(pids))

    def _pids(self) -> dict[str, int]:
        try:
            return {str(k): int(v) for k, v in json.loads(self.pids_file.read_text()).items()}
        except (OSError, ValueError):
            return {}

    def _check_alive(self) -> None:
        for name, pid in self._pids().items():
            if not _alive(pid):
                log = (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited:\n{log}")

    # Stopping ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything and put the host back as `start` found it; safe to repeat, and
        after a start that failed anywhere."""
        pids = self._pids()
        if "kubelet" in pids and _alive(pids["kubelet"]) and self.cluster.pids_file.exists():
            self._drain()
        for name in ("kube-proxy", "kube-scheduler", "kubelet"):
            if name in pids:
                _terminate(pids[name])
        if "containerd" in pids and _alive(pids["containerd"]):
            self._remove_containers()
            _terminate(pids["containerd"])
        self._kill_shims()
        self.cluster.stop()
        self._unmount_all()
        self._clean_iptables()
        self._restore_host()
        self.pids_file.unlink(missing_ok=True)
        shutil.rmtree(self.containerd_dir / "root", ignore_errors=True)
        shutil.rmtree(self.workdir / "images", ignore_errors=True)

    def _drain(self) -> None:
        """Delete every workload and Pod and let kubelet tear them down properly, which
        releases their network namespaces, mounts and CSI volumes: first the Pods that no
        DaemonSet runs, while node plugins (the CSI driver) can still unmount their
        volumes, then the rest."""
        kubectl = self.cluster.kubectl
        kubectl("delete", "deployments,statefulsets,replicasets,jobs", "--all", "--all-namespaces",
                "--wait=false", check=False)  # fmt: skip
        for pod in self._pods_not_of_daemonsets():
            namespace, name = pod.split("/", 1)
            kubectl("delete", "pod", name, "-n", namespace, "--grace-period=1", "--wait=false",
                    check=False)  # fmt: skip
        try:
            settled(lambda: not self._pods_not_of_daemonsets(), 30, "workload Pods gone")
        except AssertionError as exc:
            print(f"node teardown: {exc}; going on", file=sys.stderr)
        kubectl("delete", "daemonsets", "--all", "--all-namespaces", "--wait=false", check=False)
        kubectl("delete", "pods", "--all", "--all-namespaces", "--grace-period=1",
                "--wait=false", check=False)  # fmt: skip
        try:
            settled(self._no_tasks_left, 30, "every container stopped")
        except AssertionError as exc:
            print(f"node teardown: {exc}; forcing", file=sys.stderr)

    def _pods_not_of_daemonsets(self) -> list[str]:
        found = self.cluster.kubectl("get", "pods", "-A", "-o", "json", check=False)
        if found.returncode:
            return []
        return [
            f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
            for pod in json.loads(found.stdout)["items"]
            if not any(o.get("kind") == "DaemonSet"
                       for o in pod["metadata"].get("ownerReferences", []))
        ]  # fmt: skip

    def _no_tasks_left(self) -> bool:
        # Not "no Pod objects left": containerd 1.6 may fail to remove a sandbox's network
        # namespace ("unlinkat /run/netns/cni-...: device or resource busy") after a
        # container restart or beside a Bidirectional mount; the forced cleanup after
        # this unmounts and removes those.
        return "RUNNING" not in self.ctr("tasks", "ls", check=False).stdout

    def _remove_containers(self) -> None:
        for task in self.ctr("tasks", "ls", "-q", check=False).stdout.split():
            self.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
            self.ctr("tasks", "delete", "-f", task, check=False)
        for container in self.ctr("containers", "ls", "-q", check=False).stdout.split():
            self.ctr("containers", "rm", container, check=False)

    def _kill_shims(self) -> None:
        """containerd's shims outlive it by design; ours name our socket."""
        marker = str(self.socket).encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmdline and marker in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), signal.SIGKILL)

    def _unmount_all(self) -> None:
        roots = (str(KUBELET_DIR), str(self.containerd_dir), "/run/containerd", "/run/netns")
        for _ in range(3):
            mounts = [m for m in _mount_points() if m.startswith(roots)]
            if not mounts:
                return
            for mount in sorted(mounts, key=lambda m: m.count("/"), reverse=True):
                if _run(["umount", mount], check=False).returncode:
                    _run(["umount", "-l", mount], check=False)

    def _clean_iptables(self) -> None:
        proxy = self.binaries / "kube-proxy"
        if proxy.is_file():
            _run([str(proxy), "--cleanup"], check=False)
        for tool in ("iptables", "ip6tables"):
            for table in ("filter", "nat", "mangle"):
                _drop_chains(tool, table, ("KUBE-", GUARD, GUARD_HOST))

    def _restore_host(self) -> None:
        try:
            state: dict[str, Any] = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return
        if not state.get("bridge") and Path(f"/sys/class/net/{BRIDGE}").exists():
            _run(["ip", "link", "delete", BRIDGE], check=False)
        for key, value in state.get("sysctls", {}).items():
            if _sysctl(key) != value:
                Path("/proc/sys", key.replace(".", "/")).write_text(value)
        for path in HOST_PATHS:
            if str(path) not in state.get("paths", []) and path.exists():
                shutil.rmtree(path, ignore_errors=True)
        _remove_cgroups("kubepods")
        self.state_file.unlink()


def _sysctl(key: str) -> str | None:
    try:
        return Path("/proc/sys", key.replace(".", "/")).read_text().strip()
    except OSError:
        return None


def _mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        points.append(point)
    return points


def _drop_chains(tool: str, table: str, prefixes: tuple[str, ...]) -> None:
    """Delete the rules that jump to chains named with `prefixes`, then those chains."""
    rules = _run([tool, "-t", table, "-S"], check=False).stdout.splitlines()
    ours = {
        r.split()[1] for r in rules if r.startswith("-N ") and r.split()[1].startswith(prefixes)
    }
    for rule in rules:
        parts = rule.split()
        if parts[:1] == ["-A"] and parts[1] not in ours and any(p in ours for p in parts):
            _run([tool, "-t", table, "-D", *parts[1:]], check=False)
    for chain in ours:
        _run([tool, "-t", table, "-F", chain], check=False)
    for chain in ours:
        _run([tool, "-t", table, "-X", chain], check=False)


def _remove_cgroups(name: str) -> None:
    """kubelet's cgroup trees, deepest first (only empty ones can go)."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / name
        if not top.is_dir():
            continue
        for directory in sorted((p for p in top.rglob("*") if p.is_dir()),
                                key=lambda p: len(p.parts), reverse=True):  # fmt: skip
            _rmdir(directory)
        _rmdir(top)


def _rmdir(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


def coredns_manifest() -> str:
    """Cluster DNS: CoreDNS answering cluster.local (and reverse zones) and refusing the rest."""
    corefile = (
        "cluster.local in-addr.arpa ip6.arpa {\n"
        "    errors\n    health :8080\n    ready :8181\n"
        "    kubernetes cluster.local in-addr.arpa ip6.arpa {\n        pods insecure\n    }\n"
        "    cache 30\n}\n"
    )
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "coredns", "namespace": "kube-system"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "system:coredns"},
         "rules": [{"apiGroups": [""], "resources": ["services", "pods", "namespaces"],
                    "verbs": ["list", "watch"]},
                   {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                    "verbs": ["list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "system:coredns"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "system:coredns"},
         "subjects": [{"kind": "ServiceAccount", "name": "coredns",
                       "namespace": "kube-system"}]},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "coredns", "namespace": "kube-system"},
         "data": {"Corefile": corefile}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "coredns", "namespace": "kube-system"},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"k8s-app": "kube-dns"}},
                  "template": {
                      "metadata": {"labels": {"k8s-app": "kube-dns"}},
                      "spec": {
                          "serviceAccountName": "coredns", "dnsPolicy": "Default",
                          "terminationGracePeriodSeconds": 1,
                          "containers": [{
                              "name": "coredns", "image": images.COREDNS,
                              "imagePullPolicy": "IfNotPresent",
                              "args": ["-conf", "/etc/coredns/Corefile"],
                              "ports": [{"containerPort": 53, "protocol": "UDP", "name": "dns"},
                                        {"containerPort": 53, "protocol": "TCP",
                                         "name": "dns-tcp"}],
                              "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181},
                                                 "periodSeconds": 1},
                              "volumeMounts": [{"name": "config",
                                                "mountPath": "/etc/coredns"}]}],
                          "volumes": [{"name": "config",
                                       "configMap": {"name": "coredns"}}]}}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "kube-dns", "namespace": "kube-system"},
         "spec": {"clusterIP": CLUSTER_DNS, "selector": {"k8s-app": "kube-dns"},
                  "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                            {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}},
    ]  # fmt: skip
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})


@contextlib.contextmanager
def running(workdir: Path) -> Iterator[Node]:
    """A started node under `workdir`, stopped afterwards."""
    binaries = testbin()
    if binaries is None:
        raise RuntimeError("the test binaries are not built: run scripts/build-testbin")
    node = Node(workdir, binaries)
    try:
        node.start()
        yield node
    finally:
        node.stop()


def default_workdir() -> Path:
    return Path(
        os.environ.get("CONNECTORS_TESTNODE_DIR", Path.home() / ".cache/connectors/testnode")
    )


def main(argv: list[str]) -> int:
    """`up`, `down` or `env` for the node kept in $CONNECTORS_TESTNODE_DIR."""
    command = argv[0] if argv else ""
    if command not in ("up", "down", "env"):
        print("usage: scripts/testcluster up --node|down|env", file=sys.stderr)
        return 2
    workdir = default_workdir()
    binaries = testbin()
    image_file = workdir / "image"
    if command == "env":
        if not (workdir / "node-pids.json").exists():
            print("no test node is up: run scripts/testcluster up --node", file=sys.stderr)
            return 1
        print(f"export KUBECONFIG={workdir / 'cluster' / 'admin.kubeconfig'}")
        print(f"export CONNECTORS_IMAGE={image_file.read_text().strip()}")
        return 0
    if command == "down" or binaries is None:
        if binaries is None and command == "up":
            print("the binaries are not built: run scripts/build-testbin", file=sys.stderr)
            return 1
        if workdir.exists():
            Node(workdir, binaries or Path()).stop()
        image_file.unlink(missing_ok=True)
        return 0
    missing = missing_reason()
    if missing:
        print(missing, file=sys.stderr)
        return 1
    node = Node(workdir, binaries)
    node.stop()  # whatever an earlier `up` left
    started = time.monotonic()
    node.start()
    image_file.write_text(node.project_image + "\n")
    print(f"test node {node.access.name} ({node.access.ip}) up in "
          f"{time.monotonic() - started:.1f}s", file=sys.stderr)  # fmt: skip
    print(f"export KUBECONFIG={node.cluster.kubeconfig}")
    print(f"export CONNECTORS_IMAGE={node.project_image}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
