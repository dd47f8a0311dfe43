"""ServeConfig: what `docgen serve` binds to, which model it loads, and who may call it."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

LOOPBACK_NAMES = {"localhost"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname: may resolve to anything


@dataclass
class ServeConfig:
    model: str
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    served_model_name: str | None = None  # the name clients pass as `model` (default: --model)
    engine_kwargs: dict[str, Any] = field(default_factory=dict)  # app.engine.LLM keyword arguments
    log_level: str = "warning"

    def __post_init__(self) -> None:
        if not is_loopback(self.host) and not self.api_key:
            raise ValueError(
                f"binding {self.host} exposes the model to the network; pass --api-key KEY (or set "
                "DOCGEN_SERVE_API_KEY) so that only callers with the key are served, or bind 127.0.0.1")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("--api-key is empty")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be in 0..65535, got {self.port}")

    @property
    def name(self) -> str:
        return self.served_model_name or self.model
