FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Runtime dependencies first (no test tools): rebuilt only when requirements.txt changes.
COPY requirements.txt requirements-mysql.txt ./
# MySQL/MariaDB sources: mysqlclient builds against libmariadb's headers, then runs on
# its shared library alone (the compiler and headers leave the image again).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libmariadb3 libmariadb-dev gcc pkg-config \
    && pip install -r requirements.txt -r requirements-mysql.txt \
    && apt-get purge -y --auto-remove libmariadb-dev gcc pkg-config \
    && rm -rf /var/lib/apt/lists/*

COPY . .
RUN SECRET_KEY=collectstatic-only REPORTSVC_VAR_DIR=/tmp/build python manage.py collectstatic --noinput \
    && useradd --create-home --uid 1000 reportsvc \
    && mkdir -p /data/outputs \
    && chown -R 1000:1000 /data

USER 1000
ENV REPORTSVC_VAR_DIR=/data \
    OUTPUTS_DIR=/data/outputs

EXPOSE 8000
# The web's health: /healthz?scope=web (database reachable; workers down or not
# scheduling never restart the web). compose gives the worker its own check (manage.py
# workerhealth: this worker's heartbeat is fresh).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz?scope=web', timeout=4)"]
CMD ["gunicorn", "reportsvc.wsgi", "--config", "gunicorn.conf.py"]
