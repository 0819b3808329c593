FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY integrations ./integrations
RUN pip install --no-cache-dir .
COPY sequences ./sequences
COPY templates ./templates
ENV NURTURE_SEQUENCES_DIR=/app/sequences NURTURE_TEMPLATES_DIR=/app/templates \
    NURTURE_HOME=/var/lib/nurture
RUN useradd --system --home /var/lib/nurture nurture && mkdir -p /var/lib/nurture \
    && chown nurture /var/lib/nurture
USER nurture
EXPOSE 8000
CMD ["nurture", "api", "--host", "0.0.0.0"]
