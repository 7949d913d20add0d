"""The CSI Identity and Node services: argument checks and gRPC status codes only; the
work is the Publisher's. Requests are never logged: `secrets` may carry a token."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import grpc
from google.protobuf import wrappers_pb2

from connectors import __version__
from connectors.csi.proto import csi_pb2, csi_pb2_grpc
from connectors.csi.publisher import Publisher, PublishError

DRIVER_NAME = "connectors-csi"
Context = grpc.aio.ServicerContext[object, object]


async def _abort(context: Context, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("unreachable: abort raises")


class IdentityService(csi_pb2_grpc.IdentityServicer):
    def __init__(self, is_ready: Callable[[], bool]) -> None:
        self.is_ready = is_ready

    async def GetPluginInfo(
        self, request: csi_pb2.GetPluginInfoRequest, context: Context
    ) -> csi_pb2.GetPluginInfoResponse:
        return csi_pb2.GetPluginInfoResponse(name=DRIVER_NAME, vendor_version=__version__)

    async def GetPluginCapabilities(
        self, request: csi_pb2.GetPluginCapabilitiesRequest, context: Context
    ) -> csi_pb2.GetPluginCapabilitiesResponse:
        return csi_pb2.GetPluginCapabilitiesResponse()  # a node-only plugin: no controller

    async def Probe(self, request: csi_pb2.ProbeRequest, context: Context) -> csi_pb2.ProbeResponse:
        return csi_pb2.ProbeResponse(ready=wrappers_pb2.BoolValue(value=self.is_ready()))


class NodeService(csi_pb2_grpc.NodeServicer):
    def __init__(self, publisher: Publisher, node_id: str) -> None:
        self.publisher = publisher
        self.node_id = node_id

    async def NodePublishVolume(
        self, request: csi_pb2.NodePublishVolumeRequest, context: Context
    ) -> csi_pb2.NodePublishVolumeResponse:
        if not request.volume_id:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "volume_id is required")
        if not request.target_path:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "target_path is required")
        if not request.HasField("volume_capability"):
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "volume_capability is required")
        if request.volume_capability.HasField("block"):
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "connectors volumes are files: use a mount volume, not a block volume",
            )
        if not request.readonly:
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "connectors volumes hold credentials a Pod must not change: set readOnly: true",
            )
        try:
            await self.publisher.publish(
                request.volume_id,
                Path(request.target_path),
                dict(request.volume_context),
                dict(request.secrets),
            )
        except PublishError as exc:
            await _abort(context, exc.code, str(exc))
        return csi_pb2.NodePublishVolumeResponse()

    async def NodeUnpublishVolume(
        self, request: csi_pb2.NodeUnpublishVolumeRequest, context: Context
    ) -> csi_pb2.NodeUnpublishVolumeResponse:
        if not request.volume_id:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "volume_id is required")
        if not request.target_path:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "target_path is required")
        try:
            self.publisher.unpublish(Path(request.target_path))
        except OSError as exc:
            await _abort(context, grpc.StatusCode.INTERNAL, f"cannot remove the volume: {exc}")
        return csi_pb2.NodeUnpublishVolumeResponse()

    async def NodeStageVolume(
        self, request: csi_pb2.NodeStageVolumeRequest, context: Context
    ) -> csi_pb2.NodeStageVolumeResponse:
        await _abort(context, grpc.StatusCode.UNIMPLEMENTED, "this plugin does not stage volumes")

    async def NodeUnstageVolume(
        self, request: csi_pb2.NodeUnstageVolumeRequest, context: Context
    ) -> csi_pb2.NodeUnstageVolumeResponse:
        await _abort(context, grpc.StatusCode.UNIMPLEMENTED, "this plugin does not stage volumes")

    async def NodeGetVolumeStats(
        self, request: csi_pb2.NodeGetVolumeStatsRequest, context: Context
    ) -> csi_pb2.NodeGetVolumeStatsResponse:
        await _abort(context, grpc.StatusCode.UNIMPLEMENTED, "volume statistics are not offered")

    async def NodeGetCapabilities(
        self, request: csi_pb2.NodeGetCapabilitiesRequest, context: Context
    ) -> csi_pb2.NodeGetCapabilitiesResponse:
        return csi_pb2.NodeGetCapabilitiesResponse()

    async def NodeGetInfo(
        self, request: csi_pb2.NodeGetInfoRequest, context: Context
    ) -> csi_pb2.NodeGetInfoResponse:
        return csi_pb2.NodeGetInfoResponse(node_id=self.node_id)
