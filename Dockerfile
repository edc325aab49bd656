# The service's image: `make image`, or `podman build -t jwt-api .` / `docker build -t jwt-api .`.
# It runs as deploy/kubernetes/deployment.yaml expects: uid 10001, a read-only root, only /tmp writable.
# BASE is any image with Python 3.11 (python3 and its venv module) and a shell, the same in both stages, since
# the virtual environment's interpreter is the base's.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
# Every runtime requirement is a wheel for CPython 3.11 or pure Python (falcon-cors is built from its sdist by
# setuptools alone), so this stage needs no compiler either. pip and setuptools leave the venv: nothing runs
# them at run time, and pip has no business in a read-only image.
COPY requirements.txt /tmp/requirements.txt
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-warn-script-location \
        -r /tmp/requirements.txt \
    && /opt/venv/bin/pip uninstall --yes --quiet --disable-pip-version-check pip setuptools
WORKDIR /app
COPY gunicorn.conf.py ./
COPY service/ service/
# Compiled here because the running container cannot write __pycache__ (read-only root); pip compiled the venv.
RUN /opt/venv/bin/python -m compileall -q service

FROM ${BASE}
# Numeric and matching the manifest's runAsUser/runAsGroup, so the kubelet can check runAsNonRoot; a passwd
# entry too, for tools that look the uid up. --no-log-init: no lastlog/faillog records for the user.
RUN groupadd --gid 10001 jwt-api \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --no-log-init jwt-api
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
# PYTHONDONTWRITEBYTECODE: no attempt to write bytecode beside the (root-owned, read-only) sources.
# PYTHONUNBUFFERED: log lines reach the container runtime as they are written.
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=8000
USER 10001:10001
EXPOSE 8000
# Last, so a new version or source changes only the labels: every layer above stays cached.
ARG VERSION=dev
ARG SOURCE=
LABEL org.opencontainers.image.title="jwt-api" \
      org.opencontainers.image.description="JWT-secured Falcon API served by gunicorn" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}"
# Exec form: gunicorn is PID 1 and receives SIGTERM itself (graceful stop within graceful_timeout).
CMD ["gunicorn", "-c", "gunicorn.conf.py", "service.app:app"]
