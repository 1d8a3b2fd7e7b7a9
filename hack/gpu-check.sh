#!/usr/bin/env bash
# Run on a GPU host (the device machine): the real-NVML tests and a dump of what the probe reads.
# Needs only python3; gpu-deps/ holds nvidia-ml-py and pytest (pip install --target gpu-deps ...).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/gpu-deps:$PWD"
python3 --version
nvidia-smi --query-gpu=name,uuid,memory.total,pci.device_id,driver_version --format=csv || true
mkdir -p "${OUT:-/tmp/out}"
python3 -m pytest -p no:cacheprovider -o addopts="" -q -m gpu tests/unit/test_nvml_real.py 2>&1 | tee "${OUT:-/tmp/out}/pytest.txt"
python3 - <<'PY' | tee "${OUT:-/tmp/out}/probe.json"
import dataclasses, json, time
from provider.inventory.nvml import Probe
p = Probe()
t = time.perf_counter(); host = p.read(); first = time.perf_counter() - t
t = time.perf_counter()
for _ in range(20): p.read()
poll = (time.perf_counter() - t) / 20
print(json.dumps({"host": dataclasses.asdict(host), "first_read_s": first, "poll_s": poll}, indent=1))
PY
