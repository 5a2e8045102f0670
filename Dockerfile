# One image for every service of docker-compose.yml: the coordinator and segment servers
# (`cerebro-db serve`), the scheduler and the dashboard.
FROM debian:bookworm-slim

ENV LANG=C.UTF-8 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/app/.venv/bin:$PATH \
    CEREBRO_HOME=/var/lib/cerebro

# The servers are `cerebro-db serve`'s own clusters: no default cluster from the package.
RUN mkdir -p /etc/postgresql-common/createcluster.d \
    && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/cerebro.conf

WORKDIR /app
COPY . /app
# The venv comes from Debian's python3, the interpreter PL/Python runs.
RUN ./install.sh --no-dev \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o postgres -g postgres "$CEREBRO_HOME" /certs

# PostgreSQL's own OS user runs everything; a server's data lives in $CEREBRO_HOME (a volume).
USER postgres
EXPOSE 5432 8501
CMD ["cerebro-db", "serve", "--listen", "0.0.0.0", "--port", "5432"]
