"""What a CSI volume asks for, read from its volume context: pure parsing, no I/O.

Attributes a Pod's `csi.volumeAttributes` may set (Alauda's, as documented):
- `connector.name` and optionally `connector.namespace` (default: the Pod's namespace), or
  the list form `connectors`: comma-separated `name` or `namespace/name`. Every file goes
  to the mount root; connectors of one class share each configuration's files (the
  templates see them all as `connectors`);
- `configuration.names`: comma-separated configurations of the classes (`pipconf`,
  `pypirc`, ...) and `!<file>` entries that leave a file out; omitted, only the built-in
  files are written;
- `configuration.params`: a JSON object from configuration name to parameter values,
  overriding the class's and the Connector's for this mount;
- `token.expiration`: the token's lifetime (10m to 24h, `30m` or Go's `1h30m`). Unset, the
  token is kubelet's (30m in the chart); a driver that mints its own uses 30m.
kubelet adds the Pod's name, namespace, uid and ServiceAccount (podInfoOnMount).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping

from connectors.api.errors import UsageError, VolumeError
from connectors.auth import tokens

POD_NAME = "csi.storage.k8s.io/pod.name"
POD_NAMESPACE = "csi.storage.k8s.io/pod.namespace"
POD_UID = "csi.storage.k8s.io/pod.uid"
SERVICE_ACCOUNT = "csi.storage.k8s.io/serviceAccount.name"
KUBELET_TOKENS = "csi.storage.k8s.io/serviceAccount.tokens"

CONNECTOR_NAME = "connector.name"
CONNECTOR_NAMESPACE = "connector.namespace"
CONNECTORS = "connectors"
CONFIGURATIONS = "configuration.names"
CONFIGURATION_PARAMS = "configuration.params"
TOKEN_EXPIRATION = "token.expiration"

MAX_CONNECTORS = 16  # a mount renders every one's files: bounded work per Pod
MAX_PARAMS_BYTES = 16 * 1024
DEFAULT_TOKEN_SECONDS = tokens.DEFAULT_TTL_SECONDS  # Alauda's documented 30m
MIN_TOKEN_SECONDS = 10 * 60  # the API server's own minimum for a TokenRequest
MAX_TOKEN_SECONDS = tokens.MAX_TTL_SECONDS  # Alauda's documented 24h


class InvalidVolume(VolumeError, ValueError):
    """The volume context cannot be served as written; the message says what to fix."""


@dataclasses.dataclass(frozen=True)
class PodInfo:
    name: str
    namespace: str
    uid: str
    service_account: str


@dataclasses.dataclass(frozen=True)
class VolumeRequest:
    pod: PodInfo
    connectors: tuple[tuple[str, str], ...]  # (namespace, name)
    configurations: tuple[str, ...]
    excluded_files: tuple[str, ...]
    params: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]  # configuration -> overrides
    token_seconds: int | None  # None: whatever kubelet issues

    def params_for(self, configuration: str) -> dict[str, str]:
        return dict(next((given for name, given in self.params if name == configuration), ()))


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse(context: Mapping[str, str]) -> VolumeRequest:
    missing = [k for k in (POD_NAME, POD_NAMESPACE, POD_UID, SERVICE_ACCOUNT) if not context.get(k)]
    if missing:
        raise InvalidVolume(
            f"volume context lacks {', '.join(missing)}: the CSIDriver must set podInfoOnMount"
        )
    pod = PodInfo(
        name=context[POD_NAME],
        namespace=context[POD_NAMESPACE],
        uid=context[POD_UID],
        service_account=context[SERVICE_ACCOUNT],
    )
    names = _split(context.get(CONFIGURATIONS, ""))
    configurations = tuple(dict.fromkeys(n for n in names if not n.startswith("!")))
    return VolumeRequest(
        pod=pod,
        connectors=_connectors(context, pod.namespace),
        configurations=configurations,
        excluded_files=tuple(n[1:] for n in names if n.startswith("!")),
        params=_params(context, configurations),
        token_seconds=_token_seconds(context),
    )


def _connectors(context: Mapping[str, str], pod_namespace: str) -> tuple[tuple[str, str], ...]:
    if CONNECTORS in context and CONNECTOR_NAME in context:
        raise InvalidVolume(f"set either {CONNECTOR_NAME} or {CONNECTORS}, not both")
    if CONNECTORS in context:
        found = []
        for item in _split(context[CONNECTORS]):
            namespace, _, name = item.rpartition("/")
            found.append((namespace or pod_namespace, name))
        if not found:
            raise InvalidVolume(f"{CONNECTORS} names no connector")
        unique = tuple(dict.fromkeys(found))
        if len(unique) > MAX_CONNECTORS:
            raise InvalidVolume(
                f"{CONNECTORS} names {len(unique)} connectors; a volume takes {MAX_CONNECTORS}"
            )
        return unique
    name = context.get(CONNECTOR_NAME, "").strip()
    if not name:
        raise InvalidVolume(f"volume attribute {CONNECTOR_NAME} is required")
    return ((context.get(CONNECTOR_NAMESPACE, "").strip() or pod_namespace, name),)


def _params(
    context: Mapping[str, str], configurations: tuple[str, ...]
) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    text = context.get(CONFIGURATION_PARAMS, "").strip()
    if not text:
        return ()
    example = '{"pipconf": {"simplePath": "simple"}}'
    if len(text) > MAX_PARAMS_BYTES:
        raise InvalidVolume(f"{CONFIGURATION_PARAMS} is longer than {MAX_PARAMS_BYTES} bytes")
    try:
        given = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidVolume(f"{CONFIGURATION_PARAMS} is not JSON; write it as {example}") from None
    if not isinstance(given, dict) or not all(isinstance(v, dict) for v in given.values()):
        raise InvalidVolume(f"{CONFIGURATION_PARAMS} must map configurations to objects: {example}")
    unknown = sorted(set(given) - set(configurations))
    if unknown:
        raise InvalidVolume(
            f"{CONFIGURATION_PARAMS} names {', '.join(unknown)}, not in {CONFIGURATIONS}"
        )
    result = []
    for configuration, values in given.items():
        if not all(isinstance(v, str | int | float | bool) for v in values.values()):
            raise InvalidVolume(
                f"{CONFIGURATION_PARAMS}: values of {configuration} must be scalars"
            )
        result.append((configuration, tuple((str(k), _scalar(v)) for k, v in values.items())))
    return tuple(result)


def _scalar(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _token_seconds(context: Mapping[str, str]) -> int | None:
    text = context.get(TOKEN_EXPIRATION, "").strip()
    if not text:
        return None
    try:
        seconds = tokens.parse_duration(text)
    except UsageError as exc:
        raise InvalidVolume(f"{TOKEN_EXPIRATION}: {exc}") from None
    if not MIN_TOKEN_SECONDS <= seconds <= MAX_TOKEN_SECONDS:
        raise InvalidVolume(f"{TOKEN_EXPIRATION} must be between 10m and 24h, not {text}")
    return seconds
