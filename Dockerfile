# syntax=docker/dockerfile:1
#
# Opsroom container image.
#
#   docker build -t opsroom .
#   docker run --stop-timeout 45 -e MATTERMOST_URL=... -e MATTERMOST_TOKEN_FILE=/run/secrets/token \
#     -v /srv/opsroom/token:/run/secrets/token:ro -v opsroom-data:/data opsroom
#
# Two stages. The first builds Opsroom's wheel (the package is the product: it carries the
# shipped plugins, the built-in Errbot configuration and the sample inventory) and installs
# only that wheel, with its dependencies, into a virtualenv; the runtime image gets that
# virtualenv and nothing else (no sources, no pip cache, no build dependencies).

# ---- build -------------------------------------------------------------------------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
COPY . .
RUN python -m pip wheel --no-deps --wheel-dir /dist . \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install /dist/opsroom-*.whl

# ---- runtime -----------------------------------------------------------------------------
FROM python:3.11-slim

# Same base image as the build stage, so the venv's interpreter symlink and the
# scripts' "#!/opt/venv/bin/python" shebangs stay valid.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OPSROOM_DATA_DIR=/data \
    OPSROOM_HTTP_LISTEN=0.0.0.0:8080

# Fixed uid/gid so that volume and secret-file ownership can be set up on the host.
# /data is created and chowned *before* the VOLUME instruction: a new named volume is
# initialised from it (owner and mode included); changes after VOLUME would be discarded.
RUN groupadd --gid 10001 opsroom \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/opsroom \
       --shell /usr/sbin/nologin opsroom \
    && mkdir -p /data \
    && chown opsroom:opsroom /data \
    && chmod 0700 /data

# Code stays owned by root: the bot cannot modify it. `opsroom run` uses the configuration,
# plugins and sample inventory inside the package: the working directory holds nothing of
# ours (mount an opsroom.env there to configure the bot from a file).
COPY --from=build /opt/venv /opt/venv
WORKDIR /app

VOLUME ["/data"]
# The bot's HTTP server: alert receivers (authenticated), /healthz and /readyz.
EXPOSE 8080
USER opsroom:opsroom

# Exits 0 while the bot's heartbeat file under $OPSROOM_DATA_DIR is fresh.  The
# start period covers startup and the first connection to Mattermost.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["opsroom", "healthcheck"]

# `opsroom run` turns SIGTERM (docker stop) into a clean shutdown itself, which is
# also what makes it work as PID 1.
ENTRYPOINT ["opsroom"]
CMD ["run"]
