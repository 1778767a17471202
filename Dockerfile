# syntax=docker/dockerfile:1
# defender-operator image: the operator only (no sandbox, no test tools), for linux/amd64 and linux/arm64.
# Build: docker buildx build --platform linux/amd64,linux/arm64 --build-arg REVISION=$(git rev-parse HEAD) \
#   --build-arg CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ) --build-arg VERSION=<version> -t <registry>/defender-operator:<version> .
# (docs/production.md, "Releases"). Dependencies come from requirements/image.lock (every version pinned, every file's
# hash checked, for both platforms; scripts/lock regenerates it), so two builds of one commit install the same bytes.
# tests/unit/test_packaging.py runs these same install steps, and the SBOM's, in a clean virtual environment.

# The base image, by digest as well as tag: a tag moves, a digest names the bytes. The release procedure refreshes it
# (`docker buildx imagetools inspect python:3.11-slim-bookworm`, the index digest, docs/production.md "Releases").
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

FROM ${BASE_IMAGE} AS build
WORKDIR /src
RUN python -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install --no-cache-dir pip==26.3
COPY requirements/image.lock ./requirements/image.lock
RUN /opt/venv/bin/python -m pip install --no-cache-dir --require-hashes --no-deps -r requirements/image.lock
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY crds ./crds
RUN /opt/venv/bin/python -m pip install --no-cache-dir --no-deps . \
 && /opt/venv/bin/python -m pip check \
 && /opt/venv/bin/defender-operator version
# The software bill of materials (CycloneDX) of exactly what the image runs, made by a tool in a venv of its own, so
# nothing of it is in the image but the document.
RUN python -m venv /opt/sbom-tool \
 && /opt/sbom-tool/bin/python -m pip install --no-cache-dir cyclonedx-bom==7.5.0 \
 && mkdir -p /opt/sbom \
 && /opt/sbom-tool/bin/cyclonedx-py environment /opt/venv --output-format JSON --output-file /opt/sbom/sbom.cdx.json

FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="defender-operator" \
      org.opencontainers.image.description="Onboards AWS accounts into Microsoft Defender for Cloud, declaratively" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.url="https://github.com/defender-operator/defender-operator" \
      org.opencontainers.image.source="https://github.com/defender-operator/defender-operator"
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/sbom/sbom.cdx.json /usr/share/doc/defender-operator/sbom.cdx.json
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# A numeric non-root user, so runAsNonRoot can verify it; /tmp is the only writable path (an emptyDir in the chart).
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["defender-operator"]
CMD ["run"]
