"""The audiences a workload's token may carry for the proxy, in one place.

- A connector's own audience, its host-form address (`api.addresses.cluster_url`): a token for it
  is good at that connector alone. The local issuer and a driver that mints its own
  tokens (opt-in) use it.
- `WORKLOAD`: the one audience the `connectors-csi` CSIDriver asks kubelet for
  (`spec.tokenRequests`). Kubelet mints these tokens, bound to the Pod, as it does for
  projected ServiceAccount tokens, so the driver needs no right to mint any. The proxy
  accepts it for every connector, still decides per connector whether the ServiceAccount
  may use it, and accepts it only in a token bound to a Pod.
Neither is the API server's audience: a token in a rendered file opens nothing but the
proxy.
"""

from __future__ import annotations

WORKLOAD = "connectors.alauda.io/proxy"
