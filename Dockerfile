# One image for all six services; docker-compose.yml picks the service with `python -m services.<name>`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HTTP_HOST=0.0.0.0

WORKDIR /app

# Only what the package needs: the build context also holds .venv, tests and deploy files.
COPY pyproject.toml ./
COPY shared ./shared
COPY services ./services
# The migration job runs `python -m tools.stack prepare` (deploy/kubernetes).
COPY tools ./tools
RUN pip install . \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /app paystream

USER paystream

EXPOSE 8000 8080 8081 8082 8083 8090

CMD ["python", "-m", "services.intake_api"]
