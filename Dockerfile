# tokensvc: central access_token server for WeChat.
#   docker build -t tokensvc .
#   docker run -p 8080:8080 -v /srv/tokensvc/config.toml:/etc/tokensvc/config.toml:ro \
#     -v tokensvc-data:/var/lib/tokensvc -e WX_OA_SECRET=... tokensvc
# AppSecrets come from the environment (secret_env) or mounted files (secret_file), never the image.
# In the config: [server] host = "0.0.0.0", and a database under /var/lib/tokensvc (or PostgreSQL).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md alembic.ini ./
COPY tokensvc ./tokensvc
COPY migrations ./migrations
RUN pip install --no-cache-dir --upgrade pip \
 && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TOKENSVC_CONFIG=/etc/tokensvc/config.toml
RUN useradd --system --uid 10001 --home-dir /var/lib/tokensvc --create-home tokensvc
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER tokensvc
WORKDIR /var/lib/tokensvc
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["tokensvc"]
CMD ["serve", "--config", "/etc/tokensvc/config.toml"]
