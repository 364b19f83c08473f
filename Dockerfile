# The Tidemark image: CLI, Faust workers, connector registration and the simulators.
# The embedded runtime's JVM is not needed here (Debezium runs in Kafka Connect).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ACCEPT_EULA=Y

# Microsoft ODBC Driver 18 for the SQL Server simulator (pyodbc).
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl gnupg ca-certificates unixodbc \
 && curl -fsSL https://packages.microsoft.com/keys/microsoft.asc \
      | gpg --dearmor -o /usr/share/keyrings/microsoft-prod.gpg \
 && curl -fsSL https://packages.microsoft.com/config/debian/12/prod.list \
      > /etc/apt/sources.list.d/mssql-release.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends msodbcsql18 \
 && apt-get purge -y gnupg && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY connectors ./connectors
COPY stream_processors ./stream_processors
COPY sinks ./sinks
COPY simulator ./simulator
COPY tidemark ./tidemark
COPY config ./config
RUN pip install ".[sqlserver,distributed]"

RUN useradd --system --create-home --uid 10001 tidemark && mkdir -p /state \
 && chown tidemark /state
USER tidemark
ENV TIDEMARK_STATE=/state
ENTRYPOINT []
CMD ["tidemark", "--help"]
