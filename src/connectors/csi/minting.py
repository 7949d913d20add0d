"""Tokens for the Pod that mounts a volume: the one kubelet hands over (the CSIDriver's
`spec.tokenRequests`), or, where the driver may mint, a TokenRequest bound to the Pod.
Either way the token dies with the Pod."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping

from connectors.api import timestamps
from connectors.auth import reviews
from connectors.csi.volume import KUBELET_TOKENS, PodInfo
from connectors.kube.client import KubeClient

# Share of a minted token's life after which a republish mints a new one.
DEFAULT_REFRESH_FRACTION = 0.8


@dataclasses.dataclass(frozen=True)
class MintedToken:
    token: str = dataclasses.field(repr=False)
    issued_at: float
    expires_at: float

    @property
    def lifetime(self) -> float:
        return self.expires_at - self.issued_at

    def __repr__(self) -> str:
        return f"MintedToken(expires_at={self.expires_at}, token=<hidden>)"


def from_kubelet(
    secrets: Mapping[str, str], context: Mapping[str, str], audience: str
) -> MintedToken | None:
    """The token kubelet handed over for `audience` (in `secrets` first, where kubelet puts
    it when the CSIDriver asks, else the volume context), if there is one. Its `iat` claim
    is read unverified: kubelet, which minted it a moment ago, is the only one who sends it."""
    raw = secrets.get(KUBELET_TOKENS) or context.get(KUBELET_TOKENS)
    if not raw:
        return None
    try:
        entry = json.loads(raw).get(audience)
        token = entry["token"]
        expires = _timestamp(entry["expirationTimestamp"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    issued = (reviews.unverified_claims(str(token)) or {}).get("iat")
    issued_at = float(issued) if isinstance(issued, int | float) else time.time()
    return MintedToken(token=str(token), issued_at=issued_at, expires_at=expires)


async def request(
    kube: KubeClient, pod: PodInfo, audiences: list[str], seconds: int
) -> MintedToken:
    """A TokenRequest for the Pod's ServiceAccount, bound to the Pod."""
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": audiences,
            "expirationSeconds": seconds,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.name, "uid": pod.uid},
        },
    }
    path = f"/api/v1/namespaces/{pod.namespace}/serviceaccounts/{pod.service_account}/token"
    issued = time.time()
    answer = await kube.request("POST", path, body=body)
    status = answer.get("status") or {}
    return MintedToken(
        token=str(status["token"]),
        issued_at=issued,
        expires_at=_timestamp(str(status["expirationTimestamp"])),
    )


def _timestamp(text: str) -> float:
    return timestamps.parse(text).timestamp()
