"""The hash that names a resolved config: a leaf module, so jobs/ and training/ share it without an
import circle (training/checkpoint.py checks a resume against it; the score job stamps it on rows)."""
from __future__ import annotations

import hashlib
import json
from typing import Any


def config_hash(cfg: dict[str, Any]) -> str:
    """Hash of everything that changes results (run_id excluded)."""
    material = {k: v for k, v in cfg.items() if k != "run_id"}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:16]
