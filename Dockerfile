# One image for api, worker and migrations; docker-compose.yml picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service service
COPY workers workers
COPY migrations migrations
RUN pip install --no-cache-dir . && useradd --create-home predq && mkdir -p /data/models \
    && chown -R predq /data
USER predq
ENV PREDQ_VAR_DIR=/data PREDQ_MODEL_DIR=/data/models PREDQ_HOST=0.0.0.0
EXPOSE 8000
CMD ["predq", "api"]
