# Production image: one image for web, worker and beat (docker-compose.yml picks the command).
# It holds the product only: `demo` (the embedded-defaults runner, which seeds accounts with
# known passwords) and `fakes` (stand-ins for Stripe and the registry) stay out; settings
# install them only where they exist (config/settings/base.py). tests/test_docker_image.py
# assembles exactly what the COPY lines copy and runs the steps below against it.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml ./
COPY config ./config
COPY common ./common
COPY registry_sync ./registry_sync
COPY marketplace ./marketplace
COPY billing ./billing
COPY gateway ./gateway
COPY oauth ./oauth
COPY notifications ./notifications
COPY web ./web
COPY templates ./templates
COPY manage.py ./
RUN pip install . && useradd --system --uid 10001 toolbooth && mkdir -p /app/var && chown toolbooth /app/var
USER toolbooth
# Settings refuse to load without secrets outside DEBUG; the build has none and needs none.
RUN DEBUG=1 python manage.py collectstatic --noinput
EXPOSE 8000
CMD ["uvicorn", "config.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers", "--no-server-header"]
