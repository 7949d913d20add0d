# One small image for every component: `connectors operator`, `connectors proxy`,
# `connectors csi` (and the standalone `connectors serve`). Only the runtime dependencies
# are installed; the demo's registry and the test tools are not.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels connectors \
    && rm -rf /wheels \
    && useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin connectors
# The CSI DaemonSet runs this image as root (it writes into kubelet's directories);
# everything else runs as this user.
USER 65532:65532
ENTRYPOINT ["connectors"]
CMD ["--help"]
