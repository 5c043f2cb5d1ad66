# msal-gateway: a slim, non-root image that runs `msal-gateway serve`.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN python -m pip install --no-cache-dir --upgrade pip \
 && python -m pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="msal-gateway" \
      org.opencontainers.image.description="Reverse-proxy sidecar: Sign in with Microsoft for any web app"
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
 && useradd --system --uid 10001 --no-create-home gateway
USER 10001
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 GATEWAY_LISTEN=0.0.0.0:8000
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/.auth/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["msal-gateway"]
CMD ["serve"]
