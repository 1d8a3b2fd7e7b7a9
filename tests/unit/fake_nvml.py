"""A fake pynvml built from the real NVML recordings in ../shared/fixtures/nvml.

It answers exactly what the recorded driver answered (values, and NVML errors raised as pynvml's own
exception classes); a call that was never recorded raises LookupError, so a probe that asks for
something new fails loudly instead of reading an invented answer. Synthetic hosts (8 GPUs, MIG on) are
the recorded device cloned with new identities.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml

from tests.conftest import SHARED

RECORDINGS = SHARED / "fixtures" / "nvml"
H100 = RECORDINGS / "h100-80gb-hbm3-1gpu.json"
H200 = RECORDINGS / "h200-1gpu.json"
NO_DRIVER = RECORDINGS / "no-driver.json"


@dataclass(frozen=True)
class Handle:
    index: int


@dataclass(frozen=True)
class EventSet:
    pass


def _value(raw: Any) -> Any:
    if isinstance(raw, dict):
        return SimpleNamespace(**{k: _value(v) for k, v in raw.items()})
    if isinstance(raw, list):
        return [_value(v) for v in raw]
    return raw


def _answer(entry: dict[str, Any]) -> Any:
    if "ok" in entry:
        return _value(entry["ok"])
    if "error" in entry:
        raise pynvml.NVMLError(entry["value"])
    if entry.get("missing"):
        raise AttributeError("not in this pynvml")
    raise TypeError(entry.get("str", "recorded exception"))


class FakeNvml:
    def __init__(self, recording: dict[str, Any]) -> None:
        self.recording = recording
        self.system: dict[str, Any] = recording["system"]
        self.devices: list[dict[str, Any]] = recording.get("devices", [])
        self.calls: list[str] = []

    @classmethod
    def load(cls, path: Path, *, gpus: int | None = None, mig: bool = False) -> FakeNvml:
        recording = json.loads(path.read_text())
        if gpus is not None and recording.get("devices"):
            template = recording["devices"][0]
            devices = []
            for i in range(gpus):
                d = copy.deepcopy(template)
                uuid = d["nvmlDeviceGetUUID"]["ok"]
                d["nvmlDeviceGetUUID"] = {"ok": f"{uuid[:-2]}{i:02x}"}
                d["nvmlDeviceGetIndex"] = {"ok": i}
                d["nvmlDeviceGetPciInfo"]["ok"]["busId"] = f"00000000:{0x18 + i:02X}:00.0"
                devices.append(d)
            recording["devices"] = devices
            recording["system"]["nvmlDeviceGetCount"] = {"ok": gpus}
        if mig:
            for d in recording["devices"]:
                d["nvmlDeviceGetMigMode"] = {"ok": [1, 1]}
        return cls(recording)

    def _lookup(self, table: dict[str, Any], name: str, args: tuple[Any, ...]) -> Any:
        plain = [a for a in args if not isinstance(a, (Handle, EventSet))]
        key = f"{name}[{', '.join(repr(a) for a in plain)}]" if plain else name
        self.calls.append(key)
        if key in table:
            return _answer(table[key])
        if name == "nvmlEventSetWait_v2":  # any timeout: the recorded quiet-GPU answer
            for k, v in table.items():
                if k.startswith(name):
                    return _answer(v)
        raise LookupError(f"{key} was never recorded")

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("nvml"):
            raise AttributeError(name)
        if (name.startswith("nvmlEvent") or name == "nvmlDeviceRegisterEvents") and not any(
            "events" in d for d in self.devices
        ):
            raise AttributeError(f"{name}: this recording holds no event answers")

        def call(*args: Any) -> Any:
            if name == "nvmlDeviceGetHandleByIndex":
                self.calls.append(f"{name}[{args[0]}]")
                count = _answer(self.system["nvmlDeviceGetCount"])
                if args[0] < count:
                    return Handle(args[0])
                return self._lookup(self.recording["bad_inputs"], name, (6,))
            handle = next((a for a in args if isinstance(a, Handle)), None)
            if handle is not None:
                device = self.devices[handle.index]
                if name in device.get("events", {}) or any(k.startswith(name + "[") for k in device.get("events", {})):
                    return self._lookup(device["events"], name, args)
                return self._lookup(device, name, args)
            if name.startswith("nvmlEvent") and self.devices:
                events = self.devices[0].get("events", {})
                if name == "nvmlEventSetCreate" and name in events:
                    self.calls.append(name)
                    _answer(events[name])
                    return EventSet()
                return self._lookup(events, name, args)
            return self._lookup(self.system, name, args)

        return call
