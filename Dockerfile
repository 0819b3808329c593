FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY integrations ./integrations
# Flower runs from this image too (the `flower` service): one Celery version, one broker setting
RUN pip install --no-cache-dir '.[flower]'
COPY sequences ./sequences
COPY templates ./templates
# /app stays root's: the process reads it and writes only under its home (a tmpfs in compose)
# and the outbox (a volume, owned by `nurture` from this folder on first use)
RUN useradd --system --user-group --uid 10001 --home-dir /var/lib/nurture \
        --shell /usr/sbin/nologin nurture \
    && install -d -o nurture -g nurture -m 0750 /var/lib/nurture /var/spool/nurture
ENV NURTURE_SEQUENCES_DIR=/app/sequences NURTURE_TEMPLATES_DIR=/app/templates \
    NURTURE_HOME=/var/lib/nurture NURTURE_OUTBOX_DIR=/var/spool/nurture
USER nurture
# api, worker metrics, beat metrics, flower
EXPOSE 8000 9101 9102 5555
CMD ["nurture", "api", "--host", "0.0.0.0"]
