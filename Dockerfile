# AI-CDN application image: the same image runs web (daphne), worker and beat (see docker-compose.yml).
FROM python:3.12-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AICDN_VAR_DIR=/app/var \
    PROMETHEUS_MULTIPROC_DIR=/tmp/aicdn-metrics

WORKDIR /app
RUN groupadd --system --gid 10001 aicdn && useradd --system --uid 10001 --gid aicdn --home-dir /app aicdn

# Dependencies first: this layer is rebuilt only when the pins change.
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY . .
# Editable: the code stays at /app (BASE_DIR finds templates/ and static/ there) and `ai-cdn` is on PATH.
# collectstatic imports the settings, which refuse to start without a SECRET_KEY outside the embedded mode: give
# it a throwaway one for this build step only (it is not kept in the image).
RUN pip install --no-deps -e . \
    && SECRET_KEY=collectstatic-only-build-time-value-not-used-at-runtime \
       DATABASE_URL=sqlite:////tmp/collectstatic.sqlite3 REDIS_URL=redis://127.0.0.1:6379/0 \
       python manage.py collectstatic --noinput -v 0 \
    && rm -f /tmp/collectstatic.sqlite3 /app/var/secret_key \
    && mkdir -p /app/var/beat /tmp/aicdn-metrics \
    && chown -R aicdn:aicdn /app/var /tmp/aicdn-metrics

USER aicdn
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/api/v1/monitoring/health', timeout=4).status == 200 else 1)"
CMD ["python", "-m", "daphne", "-b", "0.0.0.0", "-p", "8000", "aicdn_project.asgi:application"]
