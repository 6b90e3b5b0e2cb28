# One image for every Paystream service: docker-compose.yml and the Kubernetes manifests choose the service by its
# command (`python -m services.<name>`). `make image-check` builds it and runs a payment through it.
#
# The base is pinned to a Debian release (bookworm), so a rebuild does not move to another Debian under us.

# Stage 1: the dependencies, exactly as requirements-runtime.lock pins them (hash-checked, nothing resolved here).
FROM python:3.11-slim-bookworm AS dependencies
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements-runtime.lock /tmp/requirements-runtime.lock
RUN python -m venv /opt/paystream \
    && /opt/paystream/bin/python -m pip install --quiet --require-hashes --no-deps \
        -r /tmp/requirements-runtime.lock

# Stage 2: the runtime: the dependencies' virtualenv and one copy of the code, run as uid and gid 10001 (the
# manifests' runAsUser/runAsGroup), with nothing written at run time (the manifests mount the root read-only).
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/paystream/bin:$PATH \
    HTTP_HOST=0.0.0.0
# /var/lib/paystream is the one folder a service may write (the sandbox's records, SANDBOX_DATA_DIR): a volume mounted
# there takes this ownership, so uid 10001 can write it under a read-only root.
RUN groupadd --gid 10001 paystream \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /app --shell /usr/sbin/nologin paystream \
    && install --directory --owner 10001 --group 10001 /var/lib/paystream
COPY --from=dependencies /opt/paystream /opt/paystream
WORKDIR /app
# The code runs from /app (the working directory is on sys.path): not installed a second time into site-packages.
COPY shared ./shared
COPY services ./services
# The migration job runs `python -m tools.stack prepare` (deploy/kubernetes).
COPY tools ./tools
USER 10001:10001
# storefront, console, intake_api, webhook_receiver, ledger, gateway_worker, notifier, sandbox_gateway
EXPOSE 8000 8070 8080 8081 8082 8083 8084 8090
CMD ["python", "-m", "services.intake_api"]
