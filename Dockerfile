# msal-gateway: a slim, non-root image that runs `msal-gateway serve`.
#
#   docker build --build-arg SOURCE_URL=<repository URL> -t msal-gateway:0.1.0 .
#
# Two stages. The first installs the hash-pinned runtime lock (requirements/runtime.txt, written by
# scripts/lock.sh) into a virtual environment: the only step that reaches the package index. It
# then builds the project's wheel with the locked build backend and installs it offline, without
# dependencies (--no-index: nothing unpinned can arrive). The second is a clean slim Python with
# only that environment copied in: no pip or setuptools (the venv seeds them), no wheels, no build
# tools, no compilers (the slim base has none, and every dependency ships binary wheels). The image
# writes nothing at run time (bytecode is compiled at build time), so it runs with a read-only root
# filesystem, as deploy/ does, as uid/gid 10001 like deploy/'s manifests.
# tests/test_wheel_entrypoint.py runs these same build steps, then the image's entrypoint and
# HEALTHCHECK command, without a container engine; tests/release/test_artifacts.py lints this file.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements/runtime.txt requirements/build.txt ./requirements/
# --compile: the .pyc files are written now, since the running image cannot write them.
RUN python -m venv /opt/msal-gateway \
 && /opt/msal-gateway/bin/pip install --no-cache-dir --require-hashes --only-binary :all: --compile \
      -r requirements/runtime.txt \
 && python -m venv /opt/build \
 && /opt/build/bin/pip install --no-cache-dir --require-hashes --only-binary :all: \
      -r requirements/build.txt
COPY pyproject.toml README.md ./
# The gateway only: the development identity provider (devidp/), which signs in anyone who picks a
# test user, stays out of the production image; `msal-gateway demo` there says where to find it.
COPY gateway ./gateway
RUN /opt/build/bin/pip wheel --no-cache-dir --no-index --no-deps --no-build-isolation -w /wheels . \
 && /opt/msal-gateway/bin/pip install --no-cache-dir --no-index --no-deps --compile /wheels/*.whl \
 && /opt/msal-gateway/bin/pip uninstall --yes pip setuptools

FROM python:${PYTHON_VERSION}-slim-bookworm
ARG VERSION=0.1.0
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="msal-gateway" \
      org.opencontainers.image.description="Reverse-proxy sidecar: Sign in with Microsoft (Entra ID) for any web application" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="${SOURCE_URL}"
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin gateway
COPY --from=build /opt/msal-gateway /opt/msal-gateway
ENV PATH=/opt/msal-gateway/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEWAY_LISTEN=0.0.0.0:8000
USER 10001:10001
WORKDIR /
EXPOSE 8000
# Liveness on the port GATEWAY_LISTEN names (8000 unless overridden), with the image's own Python:
# no curl or wget in a slim image, and none needed.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('GATEWAY_LISTEN', ':8000').rpartition(':')[2]; sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/.auth/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["msal-gateway"]
CMD ["serve"]
