# The sandbox service's image: the only one that runs generated code, so the only one with a
# container runtime's client (the Docker SDK) and bubblewrap. Built from the repository's root:
#
#   docker build -f deploy/docker/sandbox.Dockerfile -t vdo-sandbox .
#
# Backends (VDO_SANDBOX_BACKEND): docker needs a Docker engine (its socket mounted, or a
# Docker-in-Docker sidecar) and the sandbox image on it; bubblewrap needs user namespaces, which
# a container gets only with a relaxed seccomp/AppArmor profile and an unmasked /proc
# (docs/CLOUD_DEPLOYMENT.md says exactly what each grants).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ARG UV_VERSION=0.13.9
# The system's CA store (a proxy's CA added to the base is then trusted too); no bytecode
# compiled twice; never a Python downloaded by uv: the base's is the one the image runs.
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_NATIVE_TLS=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install --quiet "uv==${UV_VERSION}" \
    && python3 -m venv --without-pip /opt/vdo
WORKDIR /src
# The lock and every workspace member's pyproject.toml: enough for `uv export`, and the
# dependency layers below stay cached while only source changes.
COPY uv.lock pyproject.toml ./
COPY kernel/pyproject.toml kernel/
COPY models/pyproject.toml models/
COPY cli/pyproject.toml cli/
COPY services/gateway/pyproject.toml services/gateway/
COPY services/planner/pyproject.toml services/planner/
COPY services/builder/pyproject.toml services/builder/
COPY services/tester/pyproject.toml services/tester/
COPY services/reviewer/pyproject.toml services/reviewer/
COPY services/sandbox/pyproject.toml services/sandbox/
COPY services/projector/pyproject.toml services/projector/
COPY services/scheduler/pyproject.toml services/scheduler/
# The kernel's dependencies first: every service has them, so this layer is shared.
RUN /opt/uv/bin/uv export --package vdo-kernel --frozen --no-dev --no-emit-workspace \
        --quiet -o /tmp/kernel.txt \
    && /opt/uv/bin/uv pip install --python /opt/vdo/bin/python --require-hashes -r /tmp/kernel.txt
ARG SERVICE=sandbox
COPY deploy/docker/service-package.sh /usr/local/bin/
# Then exactly the service's locked set (`pip sync`: nothing else stays in the environment).
RUN test -n "${SERVICE}" || { echo "build with --build-arg SERVICE=<name>" >&2; exit 1; } \
    && /opt/uv/bin/uv export --package "$(service-package.sh package "${SERVICE}")" --frozen \
        --no-dev --no-emit-workspace --quiet -o /tmp/service.txt \
    && /opt/uv/bin/uv pip sync --python /opt/vdo/bin/python --require-hashes /tmp/service.txt
COPY kernel/ kernel/
COPY models/ models/
COPY services/ services/
# The workspace members the service needs, as ordinary (non-editable) installs.
RUN /opt/uv/bin/uv pip install --python /opt/vdo/bin/python --no-deps \
        $(service-package.sh members "${SERVICE}") \
    && service-package.sh module "${SERVICE}" > /opt/vdo/service-module
COPY deploy/docker/entrypoint.sh /opt/vdo/bin/vdo-service
# uv resolves a generated project's dependencies (as wheels only, outside the sandbox).
RUN /opt/uv/bin/uv pip install --python /opt/vdo/bin/python "uv==${UV_VERSION}"

FROM ${PYTHON_IMAGE}
ARG SERVICE=sandbox
# bubblewrap (the daemonless backend), and Debian's own python3 at /usr/bin/python3: generated
# code runs on it under bubblewrap, and its dependencies are resolved for it. Only what the
# base lacks is installed.
RUN missing=""; \
    command -v bwrap >/dev/null || missing="$missing bubblewrap"; \
    [ -x /usr/bin/python3 ] || missing="$missing python3"; \
    command -v setpriv >/dev/null || missing="$missing util-linux"; \
    if [ -n "$missing" ]; then \
        apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing \
        && rm -rf /var/lib/apt/lists/* /var/cache/apt/*; \
    fi
# An unprivileged user (uid 10001) owns nothing in the image; its data directory is a volume.
RUN groupadd --system --gid 10001 vdo \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/vdo --no-create-home \
        --shell /usr/sbin/nologin vdo \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/vdo
COPY --from=builder /opt/vdo /opt/vdo
COPY deploy/docker/probe.py /opt/vdo/probe.py
ENV PATH=/opt/vdo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VDO_HOME=/var/lib/vdo \
    VDO_LOG_FORMAT=json \
    VDO_HEARTBEAT_PATH=/tmp/vdo-heartbeat \
    VDO_SERVICE=${SERVICE}
LABEL org.opencontainers.image.title="vdo-${SERVICE}" \
      org.opencontainers.image.source="Vitso Dev Orchestrator" \
      vdo.service="${SERVICE}"
WORKDIR /var/lib/vdo
USER 10001:10001
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/vdo/bin/vdo-service"]
