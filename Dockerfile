FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
RUN SECRET_KEY=collectstatic-only REPORTSVC_VAR_DIR=/tmp/build python manage.py collectstatic --noinput \
    && useradd --create-home --uid 1000 reportsvc \
    && mkdir -p /data/outputs \
    && chown -R reportsvc /data

USER reportsvc
ENV REPORTSVC_VAR_DIR=/data \
    OUTPUTS_DIR=/data/outputs

EXPOSE 8000
CMD ["gunicorn", "reportsvc.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--timeout", "120"]
