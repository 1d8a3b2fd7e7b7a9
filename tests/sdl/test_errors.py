"""Errors a tenant can act on: what was wrong, where (path, line, column), what to write instead."""

from __future__ import annotations

import textwrap

import pytest

import sdl

BASE = textwrap.dedent(
    """\
    version: "2.0"
    services:
      web:
        image: nginx:1.27
        expose:
          - port: 80
            to:
              - global: true
    profiles:
      compute:
        web:
          resources:
            cpu:
              units: 0.5
            memory:
              size: 512Mi
            storage:
              size: 1Gi
      placement:
        dc:
          pricing:
            web:
              denom: uakt
              amount: 100
    deployment:
      web:
        dc:
          profile: web
          count: 1
    """
)


def problems(text: str, strict: bool = False) -> list[sdl.Problem]:
    with pytest.raises(sdl.SdlError) as info:
        sdl.parse(text, source="t.yaml", strict=strict)
    return list(info.value.problems)


def test_base_is_valid() -> None:
    d = sdl.parse(BASE)
    assert d.groups[0].resources[0].resources.cpu_millis == 500
    assert len(d.version) == 32


def test_memory_in_gb_is_explained_with_location() -> None:
    (p,) = problems(BASE.replace("size: 512Mi", 'size: "1GB"'))
    assert p.path == "profiles.compute.web.resources.memory.size"
    assert (p.line, p.column) == (16, 17)
    assert "write 1G (10^9) or 1Gi (2^30)" in p.message
    assert p.render("t.yaml").startswith("t.yaml:16:17: profiles.compute.web.resources.memory.size:")


def test_all_problems_are_reported_together() -> None:
    text = (
        BASE.replace("size: 512Mi", "size: 1GB")
        .replace("units: 0.5", "units: lots")
        .replace("port: 80", "port: eighty")
    )
    paths = {p.path for p in problems(text)}
    assert paths == {
        "profiles.compute.web.resources.memory.size",
        "profiles.compute.web.resources.cpu.units",
        "services.web.expose[0].port",
    }


def test_cross_reference_errors_name_the_missing_thing() -> None:
    (p,) = problems(BASE.replace("profile: web", "profile: gpu"))
    assert "no compute profile named 'gpu'" in p.message
    assert p.path == "deployment.web.dc"


def test_unknown_keys_warn_with_a_suggestion_and_fail_in_strict_mode() -> None:
    text = BASE.replace("    image: nginx:1.27\n", "    image: nginx:1.27\n    environment:\n      - A=1\n")
    d = sdl.parse(text)
    (w,) = d.warnings
    assert w.path == "services.web.environment" and "did you mean 'env'" in w.message
    assert [p.path for p in problems(text, strict=True)] == ["services.web.environment"]


def test_duplicate_keys_are_errors() -> None:
    text = BASE.replace("    image: nginx:1.27\n", "    image: nginx:1.27\n    image: nginx:1.26\n")
    (p,) = problems(text)
    assert "already defined at line 4" in p.message


def test_gpu_ram_needs_binary_units() -> None:
    text = BASE.replace(
        "        storage:\n          size: 1Gi\n",
        "        storage:\n          size: 1Gi\n        gpu:\n          units: 1\n          attributes:\n            vendor:\n"
        "              nvidia:\n                - model: h100\n                  ram: 80GB\n",
    )
    (p,) = problems(text)
    assert p.path.endswith("nvidia[0].ram") and "80Gi" in p.message


def test_gpu_attribute_keys_match_akash() -> None:
    text = BASE.replace(
        "        storage:\n          size: 1Gi\n",
        "        storage:\n          size: 1Gi\n        gpu:\n          units: 2\n          attributes:\n            vendor:\n"
        "              nvidia:\n                - model: a100\n                  ram: 80Gi\n                  interface: sxm\n",
    )
    unit = sdl.parse(text).groups[0].resources[0].resources
    assert unit.gpu_units == 2
    assert [(a.key, a.value) for a in unit.gpu_attributes] == [
        ("vendor/nvidia/model/a100/ram/80Gi/interface/sxm", "true")
    ]


def test_invalid_yaml_is_located() -> None:
    (p,) = problems("version: '2.0'\nservices: [\n")
    assert p.line >= 2 and p.message.startswith("invalid YAML")


@pytest.mark.parametrize(
    "text",
    ["", "   \n", "just a string", "- a\n- b\n", "version: 2.0\n", "version:\n", "{}", "version: '1.0'\n"],
)
def test_degenerate_documents(text: str) -> None:
    ps = problems(text)
    assert ps and all(p.line >= 1 for p in ps)


def test_v21_merges_services_sharing_a_profile() -> None:
    text = (
        BASE.replace('version: "2.0"', 'version: "2.1"')
        .replace("deployment:\n", "deployment:\n  api:\n    dc:\n      profile: web\n      count: 2\n")
        .replace("services:\n", "services:\n  api:\n    image: api:1\n")
    )
    d = sdl.parse(text)
    (unit,) = d.groups[0].resources
    assert unit.count == 3
    assert [s.resources.id for s in d.manifest[0].services] == [1, 1]
    d20 = sdl.parse(text.replace('version: "2.1"', 'version: "2.0"'))
    assert [u.count for u in d20.groups[0].resources] == [2, 1]


IP_BASE = (
    BASE.replace("          - global: true\n", "          - global: true\n            ip: myip\n")
    + "endpoints:\n  myip:\n    kind: ip\n"
)


def test_ip_endpoint_is_valid() -> None:
    d = sdl.parse(IP_BASE)
    assert d.manifest[0].services[0].expose[0].endpoint_sequence_number == 1


def test_ip_endpoint_must_exist() -> None:
    ps = problems(IP_BASE.replace("ip: myip", "ip: other"))
    assert any("no endpoint named 'other'" in p.message for p in ps)


def test_ip_endpoint_must_be_of_kind_ip() -> None:
    ps = problems(IP_BASE.replace("kind: ip", "kind: shared"))
    assert any("unknown kind 'shared'" in p.message for p in ps)


def test_a_zero_count_beside_a_running_service_is_valid_like_on_akash() -> None:
    text = BASE.replace("deployment:\n", "deployment:\n  api:\n    dc:\n      profile: web\n      count: 0\n").replace(
        "services:\n", "services:\n  api:\n    image: api:1\n"
    )
    d = sdl.parse(text)
    assert [u.count for u in d.groups[0].resources] == [0, 1]


def test_only_zero_counts_point_at_the_count() -> None:
    (p,) = problems(BASE.replace("count: 1", "count: 0"))
    assert p.path == "deployment.web.dc.count" and "at least 1 replica" in p.message


def test_an_empty_price_for_an_unused_profile_is_only_a_warning() -> None:
    text = BASE.replace("      pricing:\n", "      pricing:\n        unused:\n")
    d = sdl.parse(text)
    assert any("price is empty" in w.message for w in d.warnings)
    used_but_empty = BASE.replace("        web:\n          denom: uakt\n          amount: 100\n", "        web:\n")
    assert used_but_empty != BASE
    assert any("no pricing for profile 'web'" in p.message for p in problems(used_but_empty))
