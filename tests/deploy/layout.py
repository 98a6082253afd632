"""What the deployment files are checked against: the repository's services, settings and names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # (no stubs in the environment)

from vdo_cli.stack import AI_SERVICES, SERVICE_MODULES
from vdo_kernel.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
SERVICES = tuple(SERVICE_MODULES)
AI = frozenset(AI_SERVICES)
PROVIDER_KEYS = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY")
_FILE_SUFFIX = "_FILE"  # deploy/docker/entrypoint.sh reads NAME from the file NAME_FILE names


class _Loader(yaml.SafeLoader):  # type: ignore[misc]
    """PyYAML's safe loader, with compose's `!reset` and `!override` merge tags."""


def _tagged(loader: _Loader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    return loader.construct_scalar(node)


_Loader.add_constructor("!reset", _tagged)
_Loader.add_constructor("!override", _tagged)


def load_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=_Loader)


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.load_all(path.read_text(), Loader=_Loader) if doc]


def known_settings() -> frozenset[str]:
    """Every VDO_ variable a service reads: the kernel's settings and the gateway's."""
    from vdo_gateway.settings import GatewaySettings

    names = {f"VDO_{name.upper()}" for name in Settings.model_fields}
    names |= {f"VDO_{name.upper()}" for name in GatewaySettings.model_fields}
    return frozenset(names)


def setting_name(variable: str) -> str:
    """The setting a variable gives: NAME_FILE gives NAME."""
    if variable.endswith(_FILE_SUFFIX):
        return variable[: -len(_FILE_SUFFIX)]
    return variable


def unknown_settings(variables: list[str]) -> list[str]:
    known = known_settings()
    return sorted(v for v in variables if v.startswith("VDO_") and setting_name(v) not in known)


def module_exists(module: str) -> bool:
    parts = module.split(".")
    package = parts[0]
    roots = [REPO / "kernel/src", *sorted((REPO / "services").glob("*/src"))]
    for root in roots:
        base = root.joinpath(*parts)
        if (base / "__main__.py").is_file() or base.with_suffix(".py").is_file():
            return (root / package).is_dir()
    return False


def interpolated(text: str) -> list[str]:
    """The ${VAR...} names a compose file interpolates."""
    return sorted(set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text)))
