# tokensvc: central access_token server for WeChat.
#   docker build -t tokensvc .
#   docker run -p 8080:8080 -v /srv/tokensvc/config.toml:/etc/tokensvc/config.toml:ro \
#     -v tokensvc-data:/var/lib/tokensvc -e WX_OA_SECRET=... tokensvc
# AppSecrets come from the environment (secret_env) or mounted files (secret_file), never the image.
# The config needs [server] host = "0.0.0.0" (README: "Running in a container"), and a database
# under /var/lib/tokensvc (the volume, owned by uid 10001) or on PostgreSQL.
# Dependencies are installed from requirements/runtime.lock, every file checked by its SHA-256.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md alembic.ini ./
COPY tokensvc ./tokensvc
COPY migrations ./migrations
# only tokensvc's own wheel here: its dependencies come from the lock file below
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TOKENSVC_CONFIG=/etc/tokensvc/config.toml
RUN useradd --system --uid 10001 --home-dir /var/lib/tokensvc --create-home tokensvc
COPY requirements/runtime.lock /tmp/runtime.lock
RUN pip install --no-cache-dir --require-hashes -r /tmp/runtime.lock && rm /tmp/runtime.lock
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-deps /wheels/*.whl && rm -rf /wheels
USER tokensvc
WORKDIR /var/lib/tokensvc
# the SQLite database (and its -wal, -shm, .lock files) lives here; uid 10001 must own it
VOLUME ["/var/lib/tokensvc"]
EXPOSE 8080
# checks the host and port of $TOKENSVC_CONFIG's [server], not a port written in here
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-m", "tokensvc.healthcheck"]
ENTRYPOINT ["tokensvc"]
CMD ["serve"]
