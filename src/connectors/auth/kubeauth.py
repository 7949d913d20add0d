"""Kubernetes mode's authenticator: TokenReview for who, SubjectAccessReview for may-they.

A workload presents its own short-lived ServiceAccount token. TokenReview, asked with the
connector's proxy URL and the workload audience (`audiences.WORKLOAD`, what kubelet mints
for the CSI driver), says whether the token is valid here; the answer must list one of
them back, and a token that holds only the workload audience must be bound to a Pod (as
kubelet's are), so it dies with that Pod. Then the permission decision, in one of two
modes:

- "namespace" (the default): a ServiceAccount of the Connector's own namespace may download
  and upload without any RoleBinding, since whoever can run a Pod there can already mount
  the namespace's Secrets; that is what lets the quick start's Jobs, running as the
  namespace's `default` account, work with no extra step. A Connector in `kube-public` is
  cluster level, as Alauda documents: every ServiceAccount may download through it (an
  upload still needs the grant). Any other identity is asked about by
  SubjectAccessReview, as in "rbac" mode.
- "rbac": SubjectAccessReview for everyone. Downloading needs `get` on
  `connectors.alauda.io` `connectors` (the Connector by name); uploading needs `create` on
  the subresource `connectors/proxy`, a separate grant, so a read-only workload cannot
  publish.

Identities are cached by SHA-256 of the token for `ttl_seconds` and never past the token's
`exp`; permission answers by identity and request for the same time. When the API server
cannot be asked, cached answers stand until they expire and everything else is refused
with AuthUnavailable (503): the proxy fails closed.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from connectors.api.errors import (
    ApiError,
    ApiUnavailable,
    AuthUnavailable,
    PermissionDenied,
    TokenError,
)
from connectors.api.resources import GROUP
from connectors.auth import audiences, reviews, tokens
from connectors.auth.authenticator import DEFAULT_DECISION_TTL_SECONDS, DecisionCache
from connectors.kube.client import KubeClient

log = logging.getLogger(__name__)

POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
DOWNLOAD = ("get", "")
UPLOAD = ("create", "proxy")
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
CLUSTER_LEVEL_NAMESPACE = "kube-public"  # Alauda's cluster-level Connectors live here
AuthorizationMode = Literal["namespace", "rbac"]
AUTHORIZATION_MODES: tuple[AuthorizationMode, ...] = ("namespace", "rbac")


class KubeAuthenticator:
    def __init__(
        self,
        kube: KubeClient,
        *,
        ttl_seconds: float = DEFAULT_DECISION_TTL_SECONDS,
        mode: AuthorizationMode = "namespace",
        workload_audience: str = audiences.WORKLOAD,
    ) -> None:
        self.kube = kube
        self.mode = mode
        self.workload_audience = workload_audience
        self.cache = DecisionCache(ttl_seconds=ttl_seconds)
        self.reviews = reviews.BoundedReviews(
            self._review, refusal_ttl_seconds=ttl_seconds, also_accepted=workload_audience
        )
        self._allowed: dict[tuple[str, str, str, str, str], float] = {}
        self.ttl_seconds = ttl_seconds

    async def authorize(
        self, token: str, *, audience: str, namespace: str, name: str, upload: bool
    ) -> tokens.Identity:
        identity = self.cache.get(token, audience)
        if identity is None:
            identity = await self.reviews.identity(token, audience)
            self.cache.put(token, audience, identity)
        if self.mode == "namespace" and (
            _is_service_account_of(identity, namespace)
            or (
                namespace == CLUSTER_LEVEL_NAMESPACE
                and not upload
                and _is_service_account(identity)
            )
        ):
            return identity
        verb, subresource = UPLOAD if upload else DOWNLOAD
        await self._check_access(identity, namespace, name, verb, subresource)
        return identity

    async def _review(self, token: str, audience: str) -> tokens.Identity:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [audience, self.workload_audience]},
        }
        status = await self._ask("/apis/authentication.k8s.io/v1/tokenreviews", body)
        if not status.get("authenticated"):
            raise TokenError(
                "the token is not valid for this connector "
                "(expired, revoked, bound to a deleted pod, or for another audience)"
            )
        granted = status.get("audiences") or []
        if audience not in granted and self.workload_audience not in granted:
            raise TokenError("the token was issued for a different connector")
        user = status.get("user") or {}
        pods = (user.get("extra") or {}).get(POD_NAME_EXTRA) or [""]
        if audience not in granted and not pods[0]:
            raise TokenError(
                f"a token for {self.workload_audience} must be bound to a Pod "
                "(kubelet's are; kubectl create token needs --bound-object-kind Pod)"
            )
        return tokens.Identity(
            subject=str(user.get("username", "")),
            expires_at=_expiry(token) or time.time() + self.ttl_seconds,
            pod=str(pods[0]),
            uid=str(user.get("uid", "")),
            groups=tuple(str(g) for g in user.get("groups") or ()),
        )

    async def _check_access(
        self,
        identity: tokens.Identity,
        namespace: str,
        name: str,
        verb: str,
        subresource: str,
    ) -> None:
        key = (identity.subject, namespace, name, verb, subresource)
        now = time.time()
        until = self._allowed.get(key)
        if until is not None and until > now:
            return
        body = access_review(
            identity.subject, groups=list(identity.groups), uid=identity.uid,
            namespace=namespace, name=name, verb=verb, subresource=subresource,
        )  # fmt: skip
        status = await self._ask(ACCESS_REVIEWS, body)
        if not status.get("allowed"):
            what = "upload through" if subresource else "download through"
            grant = (
                f"create on connectors/proxy {name}" if subresource else f"get on connector {name}"
            )
            raise PermissionDenied(
                f"{identity.subject} may not {what} connector {namespace}/{name}: "
                f"grant it {grant} in namespace {namespace}"
            )
        self._allowed[key] = min(now + self.ttl_seconds, identity.expires_at)
        if len(self._allowed) > 10_000:
            self._allowed = {k: v for k, v in self._allowed.items() if v > now}

    async def _ask(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            answer = await self.kube.request("POST", path, body=body)
        except ApiUnavailable as exc:
            raise AuthUnavailable("the Kubernetes API server cannot be reached") from exc
        except ApiError as exc:
            log.error("the API server refused a review (%s): check the proxy's RBAC", exc.status)
            raise AuthUnavailable(
                f"the API server refused to review the token ({exc.status})"
            ) from exc
        status = answer.get("status") or {}
        return status if isinstance(status, dict) else {}


ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


def access_review(
    user: str,
    *,
    groups: list[str],
    uid: str,
    namespace: str,
    name: str,
    verb: str,
    subresource: str = "",
) -> dict[str, Any]:
    """A SubjectAccessReview asking whether `user` may `verb` the Connector (or its
    `subresource`): the one question both the proxy and the CSI driver ask."""
    attributes = {
        "group": GROUP,
        "resource": "connectors",
        "verb": verb,
        "namespace": namespace,
        "name": name,
    }
    if subresource:
        attributes["subresource"] = subresource
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {"user": user, "uid": uid, "groups": groups, "resourceAttributes": attributes},
    }


def service_account_user(namespace: str, name: str) -> str:
    """The user name the API server gives a ServiceAccount."""
    return f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"


def service_account_groups(namespace: str) -> list[str]:
    """The groups the API server gives every ServiceAccount of `namespace`."""
    return ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"]


def _is_service_account(identity: tokens.Identity) -> bool:
    return identity.subject.startswith(SERVICE_ACCOUNT_PREFIX)


def _is_service_account_of(identity: tokens.Identity, namespace: str) -> bool:
    """True for `system:serviceaccount:<namespace>:<name>`; namespaces hold no colon, so the
    prefix with its trailing colon names exactly one namespace."""
    return identity.subject.startswith(f"{SERVICE_ACCOUNT_PREFIX}{namespace}:")


def _expiry(token: str) -> float | None:
    """The `exp` of a JWT the API server has just accepted (so reading it unverified is safe)."""
    claims = reviews.unverified_claims(token) or {}
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, int | float) else None
