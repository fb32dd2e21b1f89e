# Production-like image: one image for web, worker and beat (docker-compose.yml picks the command).
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
# INSTALLED_APPS names `fakes` for its run_fake_* commands; nothing in the product imports it.
COPY fakes ./fakes
COPY manage.py ./
RUN pip install . && useradd --system --uid 10001 toolbooth && mkdir -p /app/var && chown toolbooth /app/var
USER toolbooth
RUN DEBUG=1 python manage.py collectstatic --noinput
EXPOSE 8000
CMD ["uvicorn", "config.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
