# The homecare services (ingest, detect, escalate, rollups, simulator, admin) in one image;
# the command picks the service.
FROM python:3.11-slim-bookworm
WORKDIR /app
# Noto Sans CJK: the weekly picture draws Chinese with a real font, never empty boxes.
RUN apt-get update && apt-get install -y --no-install-recommends fonts-noto-cjk \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
# The services and tools, and the benchmarks' light command module (bench/cli.py: a
# benchmark loads only when it runs); not the harness (local servers, stand-ins, demo).
COPY homecare ./homecare
COPY cli ./cli
COPY ingest ./ingest
COPY detectors ./detectors
COPY escalation ./escalation
COPY dashboards ./dashboards
COPY device_sim ./device_sim
COPY certify ./certify
COPY evaluation ./evaluation
COPY devices ./devices
COPY broker ./broker
COPY privacy ./privacy
COPY bench ./bench
COPY care ./care
# A fixed uid: the service credentials in the access folder are chowned to it (README).
RUN pip install --no-cache-dir . && useradd --system --uid 10001 --home /var/lib/homecare homecare \
    && mkdir -p /var/lib/homecare && chown homecare /var/lib/homecare
USER homecare
ENV HOMECARE_STATE_DIR=/var/lib/homecare
ENTRYPOINT ["homecare"]
CMD ["--help"]
