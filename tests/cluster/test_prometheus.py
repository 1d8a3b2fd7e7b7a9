"""The chart's alerts and a real Prometheus (both built from the pinned module): promtool checks the rules
and runs their unit tests (each alert fires when it should and stays quiet otherwise), the chart's
PrometheusRule carries exactly those rules, and a real Prometheus started here scrapes a real daemon,
loads the rules and has the provider's series."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from provider.devcluster import DevCluster
from tests.cluster.lifecycle_kit import Daemon, daemon_running
from tests.cluster.test_chart import render
from tests.conftest import REPO
from tests.market.conftest import ChainProcess, free_port

pytestmark = pytest.mark.cluster

ALERTS = REPO / "charts" / "gpu-provider" / "files" / "alerts.yaml"


def _bin(devcluster: DevCluster | None, name: str) -> Path:
    if devcluster is None:
        pytest.fail("these tests need the session's own dev cluster (its pinned Prometheus)", pytrace=False)
    state = devcluster.load()
    assert state is not None
    return Path(state.bin_dir) / name


def test_promtool_checks_the_rules_and_their_unit_tests_pass(devcluster: DevCluster | None) -> None:
    promtool = _bin(devcluster, "promtool")
    check = subprocess.run([promtool, "check", "rules", ALERTS], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yaml"],
        cwd=REPO / "tests" / "alerts",
        capture_output=True,
        text=True,
        check=False,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    alerts = {r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    tested = set()
    for case in yaml.safe_load((REPO / "tests" / "alerts" / "alerts_test.yaml").read_text())["tests"]:
        for t in case["alert_rule_test"]:
            if t["exp_alerts"]:
                tested.add(t["alertname"])
    assert tested == alerts, f"alerts never seen firing in a test: {sorted(alerts - tested)}"


def test_the_charts_prometheus_rule_is_the_tested_rules(devcluster: DevCluster | None) -> None:
    if devcluster is None:
        pytest.fail("needs the session's dev cluster", pytrace=False)
    objs = render(devcluster, "alerts", "gp", "--set", "metrics.prometheusRule.enabled=true")
    (rule,) = [o for o in objs if o["kind"] == "PrometheusRule"]
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]


@pytest.fixture
def daemon(kubeconfig: Path, chain_proc: ChainProcess, real_node: dict[str, Any], tmp_path: Path) -> Iterator[Daemon]:
    with daemon_running(kubeconfig, chain_proc, real_node, tmp_path / "daemon") as d:
        yield d


def test_a_real_prometheus_scrapes_the_daemon_and_loads_the_rules(
    devcluster: DevCluster | None, daemon: Daemon, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(ALERTS)],
                "scrape_configs": [
                    {
                        "job_name": "gpu-provider",
                        "static_configs": [{"targets": [f"127.0.0.1:{daemon.metrics_port}"]}],
                    }
                ],
            }
        )
    )
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                _bin(devcluster, "prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def query(expr: str) -> list[dict[str, Any]]:
        body = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    try:
        deadline = time.monotonic() + 120
        series: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                series = query('up{job="gpu-provider"} == 1') and query(
                    "gpu_provider_chain_feed_last_poll_timestamp_seconds > 0"
                )
            except httpx.HTTPError:
                series = []
            if series:
                break
            time.sleep(1)
        assert series, f"no scrape of the daemon in 120 s; Prometheus log:\n{log.read_text()[-3000:]}"
        assert query("gpu_provider_leader")[0]["value"][1] == "1"  # a single daemon without HA leads
        for name in ("gpu_provider_leases", "gpu_provider_chain_height", "gpu_provider_maintenance"):
            assert query(name), f"no series {name}"
        groups = httpx.get(f"{url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        loaded = {r["name"] for g in groups for r in g["rules"]}
        expected = {r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
        assert loaded == expected
        assert all(r["health"] != "err" for g in groups for r in g["rules"]), groups
        firing = httpx.get(f"{url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        assert [a for a in firing if a["state"] == "firing"] == []  # a healthy daemon raises nothing
    finally:
        proc.terminate()
        proc.wait(30)
