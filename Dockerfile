# syntax=docker/dockerfile:1
# defender-operator image: the operator only (no sandbox, no test tools). Build: docker build -t defender-operator .
# Dependencies come from requirements/image.lock (every version pinned, every file's hash checked; scripts/lock
# regenerates it), so two builds of one commit install the same bytes.
# tests/unit/test_packaging.py runs these same install steps in a clean virtual environment.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
RUN python -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install --no-cache-dir --upgrade pip
COPY requirements/image.lock ./requirements/image.lock
RUN /opt/venv/bin/python -m pip install --no-cache-dir --require-hashes --no-deps -r requirements/image.lock
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY crds ./crds
RUN /opt/venv/bin/python -m pip install --no-cache-dir --no-deps . \
 && /opt/venv/bin/python -m pip check \
 && /opt/venv/bin/defender-operator version

FROM python:${PYTHON_VERSION}-slim
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="defender-operator" \
      org.opencontainers.image.description="Onboards AWS accounts into Microsoft Defender for Cloud, declaratively" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/defender-operator/defender-operator"
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# A numeric non-root user, so runAsNonRoot can verify it; /tmp is the only writable path (an emptyDir in the chart).
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["defender-operator"]
CMD ["run"]
