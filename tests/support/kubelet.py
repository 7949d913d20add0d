"""A stand-in for kubelet's side of CSI, for fast, narrow driver tests (the real kubelet
takes the same path in tests/node/test_seed_on_a_node.py, with the seed's Pods).

It does what kubelet does for a Pod's inline CSI volumes and nothing else: for each
`csi` volume of the Pod object (read from the real API server) it calls
NodePublishVolume over real gRPC on the driver's socket, with the volume id, target path,
capability and volume context kubelet would send (the volume's attributes, the Pod's
name, namespace, uid and ServiceAccount for `podInfoOnMount`, and the ephemeral flag);
`republish` repeats the call as kubelet does for `requiresRepublish`; `unpublish` calls
NodeUnpublishVolume. The target path follows kubelet's layout under a root directory.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import grpc

from connectors.csi.proto import csi_pb2, csi_pb2_grpc
from tests.support.testcluster import TestCluster


class KubeletStandIn:
    def __init__(self, cluster: TestCluster, socket: Path, root: Path) -> None:
        self.cluster = cluster
        self.root = root
        self.channel = grpc.insecure_channel(f"unix://{socket}")
        self.node = csi_pb2_grpc.NodeStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def pod(self, namespace: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.cluster.kubectl_json("get", "pod", name, "-n", namespace)
        return found

    def volumes(self, pod: dict[str, Any]) -> list[dict[str, Any]]:
        return [v for v in pod["spec"].get("volumes", []) if "csi" in v]

    def target(self, pod: dict[str, Any], volume: str) -> Path:
        uid = pod["metadata"]["uid"]
        return self.root / "pods" / uid / "volumes" / "kubernetes.io~csi" / volume / "mount"

    def request(
        self, pod: dict[str, Any], volume: dict[str, Any]
    ) -> csi_pb2.NodePublishVolumeRequest:
        metadata = pod["metadata"]
        context = dict(volume["csi"].get("volumeAttributes") or {})
        context.update({
            "csi.storage.k8s.io/pod.name": metadata["name"],
            "csi.storage.k8s.io/pod.namespace": metadata["namespace"],
            "csi.storage.k8s.io/pod.uid": metadata["uid"],
            "csi.storage.k8s.io/serviceAccount.name":
                pod["spec"].get("serviceAccountName", "default"),
            "csi.storage.k8s.io/ephemeral": "true",
        })  # fmt: skip
        digest = hashlib.sha256(f"{metadata['uid']}{volume['name']}".encode()).hexdigest()
        capability = csi_pb2.VolumeCapability(
            mount=csi_pb2.VolumeCapability.MountVolume(),
            access_mode=csi_pb2.VolumeCapability.AccessMode(
                mode=csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
            ),
        )
        return csi_pb2.NodePublishVolumeRequest(
            volume_id=f"csi-{digest}",
            target_path=str(self.target(pod, volume["name"])),
            volume_capability=capability,
            readonly=bool(volume["csi"].get("readOnly", False)),
            volume_context=context,
        )

    def publish(self, namespace: str, name: str) -> dict[str, Path]:
        """Mount every CSI volume of the Pod, as kubelet does before starting it."""
        pod = self.pod(namespace, name)
        mounted = {}
        for volume in self.volumes(pod):
            request = self.request(pod, volume)
            self.node.NodePublishVolume(request, timeout=30)
            mounted[volume["name"]] = Path(request.target_path)
        return mounted

    republish = publish  # kubelet repeats the same call for requiresRepublish

    def unpublish(self, namespace: str, name: str) -> None:
        pod = self.pod(namespace, name)
        for volume in self.volumes(pod):
            request = self.request(pod, volume)
            self.node.NodeUnpublishVolume(
                csi_pb2.NodeUnpublishVolumeRequest(
                    volume_id=request.volume_id, target_path=request.target_path
                ),
                timeout=30,
            )
