# syntax=docker/dockerfile:1
#
# Opsroom container image.
#
#   docker build -t opsroom .
#   docker run -e MATTERMOST_URL=... -e MATTERMOST_TOKEN_FILE=/run/secrets/token \
#     -v /srv/opsroom/token:/run/secrets/token:ro -v opsroom-data:/data opsroom
#
# Two stages: the project and its dependencies are installed into a virtualenv in
# the first one, and only that virtualenv is copied into the runtime image (no
# sources, no pip cache, no build dependencies).

# ---- build -------------------------------------------------------------------------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN python -m venv /opt/venv

WORKDIR /src
COPY . .
# A regular (non-editable) install: bot/ lands in site-packages together with the
# backend and storage .plug files (package-data in pyproject.toml), which
# bot/errbot_config.py finds next to its own module.
RUN /opt/venv/bin/pip install .

# ---- runtime -----------------------------------------------------------------------------
FROM python:3.11-slim

# Same base image as the build stage, so the venv's interpreter symlink and the
# scripts' "#!/opt/venv/bin/python" shebangs stay valid.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OPSROOM_DATA_DIR=/data

# Fixed uid/gid so that volume and secret-file ownership can be set up on the host.
# /data is created and chowned *before* the VOLUME instruction: a new named volume is
# initialised from it (owner and mode included); changes after VOLUME would be discarded.
RUN groupadd --gid 10001 opsroom \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/opsroom \
       --shell /usr/sbin/nologin opsroom \
    && mkdir -p /data \
    && chown opsroom:opsroom /data \
    && chmod 0700 /data

COPY --from=build /opt/venv /opt/venv

# Code and config stay owned by root: the bot cannot modify them.  config.py resolves
# plugins/ relative to itself, i.e. /app/plugins.
WORKDIR /app
COPY plugins/ /app/plugins/
COPY config.py /app/config.py
# The sample inventory is the default when OPSROOM_INVENTORY is unset.
COPY examples/inventory.yaml /app/examples/inventory.yaml

VOLUME ["/data"]
USER opsroom:opsroom

# Exits 0 while the bot's heartbeat file under $OPSROOM_DATA_DIR is fresh.  The
# start period covers startup and the first connection to Mattermost.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["opsroom", "healthcheck"]

# `opsroom run` turns SIGTERM (docker stop) into a clean shutdown itself, which is
# also what makes it work as PID 1.
ENTRYPOINT ["opsroom"]
CMD ["run"]
