"""Local DINOv3 weight files: where they live, what they are called, how they are checked.

We never download. A user gets the weights once (Meta's release after accepting the DINOv3
licence, or timm's ``model.safetensors``) and hands them over with ``dinomix weights add``.
Lookup order for a teacher: an explicit path (``--teacher-weights``), then the folder(s) in
``$DINOMIX_WEIGHTS_DIR``, then the per-user cache ``<user cache>/dinomix/weights``.

Recognised names (``<arch>`` is a timm name such as ``vit_small_patch16_dinov3``):

* Meta: ``dinov3_vits16_pretrain_lvd1689m-08c60483.pth``; the part after ``-`` is a prefix of
  the file's sha256 and is verified.
* timm: ``<arch>.lvd1689m.safetensors`` (or ``.pth``), ``<arch>.safetensors``, or a
  ``model.safetensors`` inside a folder named ``<arch>.lvd1689m`` (a Hugging Face download).

Files are read with ``safetensors`` or ``torch.load(weights_only=True)``: a checkpoint that
needs arbitrary Python objects is refused, because unpickling it could run code.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, NamedTuple

import platformdirs

from dinomix_core.io.atomic import atomic_path
from dinomix_core.io.errors import DinomixInputError
from dinomix_core.models import _dinov3
from dinomix_core.models.errors import ChecksumMismatchError, MissingWeightsError, WeightsFileError

if TYPE_CHECKING:  # imported where tensors are read: the GUI lists weight files without torch
    import torch

ENV_VAR = "DINOMIX_WEIGHTS_DIR"
DEFAULT_TAG = _dinov3.DEFAULT_TAG
default_tag = _dinov3.default_tag
META_RELEASE_URL = "https://github.com/facebookresearch/dinov3"

#: Meta's short model names (``dinov3_<short>_pretrain_...``) and the timm architecture they load into.
META_TO_TIMM = {
    "vits16": "vit_small_patch16_dinov3",
    "vits16plus": "vit_small_plus_patch16_dinov3",
    "vitb16": "vit_base_patch16_dinov3",
    "vitl16": "vit_large_patch16_dinov3",
    "vith16plus": "vit_huge_plus_patch16_dinov3",
    "vit7b16": "vit_7b_patch16_dinov3",
}

_META_RE = re.compile(
    r"^dinov3_(?P<short>[a-z0-9]+)_pretrain_(?P<tag>[a-z0-9]+)(?:_[a-z0-9]+)?(?:-(?P<hash>[0-9a-f]{8,64}))?\.pth$"
)
_TIMM_RE = re.compile(r"^(?P<arch>vit_[a-z0-9_]+_patch16_dinov3(?:_qkvb)?)(?:\.(?P<tag>[a-z0-9_]+))?$")
_TIMM_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_HF_FILE_NAMES = ("model.safetensors", "pytorch_model.bin")
_HF_CACHE_PREFIX = "models--timm--"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class WeightsName:
    """What a file's name says about it: the timm arch, the weight tag, a sha256 prefix."""

    arch: str
    tag: str | None
    sha256_prefix: str | None
    layout: str  # "meta" (Meta's key names) or "timm"

    def serves(self, teacher: str) -> bool:
        """Whether this file can load teacher ``teacher``.

        Meta's checkpoints fit both timm variants of a size: the ``_qkvb`` one keeps the
        attention biases, the plain one drops them (they are zero; checked at load).
        """
        if self.arch == teacher:
            return True
        return self.layout == "meta" and teacher == self.arch + _dinov3.QKVB


class WeightsFile(NamedTuple):
    """One weight file found on disk (``list_weights``)."""

    path: Path
    arch: str
    sha256: str  # prefix: from the file name when it carries one, else computed (12 hex digits)
    size: int  # bytes


def parse_weights_name(path: str | os.PathLike, *, check_arch: bool = True) -> WeightsName | None:
    """Read the arch, tag and checksum prefix out of a weight file's name (None: unrecognised).

    ``check_arch``: a timm-style name must also be an architecture the installed timm knows
    (which imports timm, and torch with it); without, the name pattern alone decides.
    """
    path = Path(path)
    meta = _META_RE.match(path.name)
    if meta:
        arch = META_TO_TIMM.get(meta["short"])
        return None if arch is None else WeightsName(arch, meta["tag"], meta["hash"], "meta")
    if path.name in _HF_FILE_NAMES:
        folder = path.parent
        if folder.parent.name == "snapshots":  # huggingface cache: models--timm--<id>/snapshots/<rev>/
            label = folder.parent.parent.name.removeprefix(_HF_CACHE_PREFIX)
        else:
            label = folder.name
        return _timm_name(label, check_arch)
    if path.suffix in _TIMM_SUFFIXES:
        return _timm_name(path.name[: -len(path.suffix)], check_arch)
    return None


def _timm_name(label: str, check_arch: bool = True) -> WeightsName | None:
    match = _TIMM_RE.match(label)
    if not match or (check_arch and match["arch"] not in _dinov3.teacher_archs()):
        return None
    return WeightsName(match["arch"], match["tag"], None, "timm")


def user_weights_dir() -> Path:
    """The per-user folder ``dinomix weights add`` copies into."""
    return Path(platformdirs.user_cache_dir("dinomix")) / "weights"


def env_weights_dirs() -> list[Path]:
    """Folders listed in ``$DINOMIX_WEIGHTS_DIR`` (``os.pathsep``-separated), in order."""
    value = os.environ.get(ENV_VAR, "")
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p.strip()]


def search_dirs() -> list[Path]:
    """Folders searched for weights, highest priority first (explicit paths come before all)."""
    return [*env_weights_dirs(), user_weights_dir()]


def _files_in(directory: Path) -> Iterator[Path]:
    """Weight-file candidates in ``directory``: its files, and HF-style ``<id>/model.safetensors``."""
    if not directory.is_dir():
        return
    for entry in sorted(directory.iterdir()):
        if entry.is_file() and not entry.name.startswith("."):
            yield entry
        elif entry.is_dir():
            for name in _HF_FILE_NAMES:
                if (entry / name).is_file():
                    yield entry / name


def _usable(parsed: WeightsName, teacher: str) -> bool:
    # Untagged timm files count as the default weights; other tags (sat493m) need an explicit path.
    return parsed.serves(teacher) and parsed.tag in (None, default_tag(teacher))


def expected_file_names(name: str) -> list[str]:
    """File names that ``find_weights(name)`` accepts, for messages."""
    arch = name.removesuffix(_dinov3.QKVB)
    tag = default_tag(name)
    names = [f"dinov3_{short}_pretrain_{tag}-<sha256 prefix>.pth" for short, a in META_TO_TIMM.items() if a == arch]
    return [*names, f"{name}.{tag}.safetensors", f"{name}.safetensors", f"{name}.{tag}/model.safetensors"]


def find_weights(name: str, explicit: str | os.PathLike | None = None) -> Path:
    """The weight file for teacher ``name``: ``explicit`` if given, else the first match in
    ``search_dirs()``. ``explicit`` may also be a folder to search. Raises MissingWeightsError."""
    _dinov3.check_arch(name)
    if explicit is not None:
        path = Path(explicit).expanduser()
        if path.is_file():
            return path
        if not path.is_dir():
            raise MissingWeightsError(path, "teacher weights file does not exist.", "check the path given to --teacher-weights.")
        dirs = [path]
    else:
        dirs = search_dirs()
    others: list[Path] = []
    for directory in dirs:
        matches: list[tuple[int, Path]] = []
        for candidate in _files_in(directory):
            parsed = parse_weights_name(candidate)
            if parsed is None:
                continue
            if _usable(parsed, name):
                # timm's own file first (no key conversion), then Meta's.
                matches.append((0 if parsed.layout == "timm" else 1, candidate))
            else:
                others.append(candidate)
        if matches:
            return min(matches)[1]
    raise _missing(name, dirs, others, explicit)


def _missing(name: str, dirs: list[Path], others: list[Path], explicit: str | os.PathLike | None) -> MissingWeightsError:
    if explicit is None:
        env = os.environ.get(ENV_VAR)
        where = [f"${ENV_VAR}={env!r}" if env else f"${ENV_VAR} (not set)", f"{user_weights_dir()} (user cache)"]
    else:
        where = [str(Path(explicit))]
    looked_for = " or ".join(expected_file_names(name))
    problem = f"no DINOv3 weights for teacher {name!r}. Looked for {looked_for} in: {'; '.join(where)}."
    if others:
        shown = [str(p) if p.name in _HF_FILE_NAMES else p.name for p in others]
        problem += f" Found only weights for other models/tags: {', '.join(shown)}."
    hf_id = f"timm/{name}.{default_tag(name)}"
    fix = (
        f"download the weights yourself: Meta's DINOv3 release ({META_RELEASE_URL}, after accepting the licence) "
        f"or model.safetensors from the Hugging Face page {hf_id}. Then run `dinomix weights add FILE` "
        f"(copies it into {user_weights_dir()}) or put it in a folder named by ${ENV_VAR}, or pass "
        "--teacher-weights FILE. For tests or a demo without weights, `--teacher random` uses a randomly "
        "initialised teacher (distillation then carries no foundational knowledge; expect lower quality)."
    )
    return MissingWeightsError(None, problem, fix)


# --- checksums -------------------------------------------------------------------------------

_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes; remembered per (path, size, mtime) within the process."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_MEMO:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                digest.update(chunk)
        _SHA_MEMO[key] = digest.hexdigest()
    return _SHA_MEMO[key]


def _check_prefix(sha: str, parsed: WeightsName | None, shown: Path) -> None:
    if parsed is not None and parsed.sha256_prefix and not sha.startswith(parsed.sha256_prefix):
        raise ChecksumMismatchError(
            shown,
            f"sha256 is {sha[:12]}..., but the file name promises {parsed.sha256_prefix}...: "
            "the file is corrupt or a partial download.",
            f"download it again (Meta's DINOv3 release, {META_RELEASE_URL}) and check that the download completed.",
        )


def verify_checksum(path: str | os.PathLike) -> str:
    """Full sha256 of ``path``; checked against the hash prefix in its name when there is one."""
    path = Path(path)
    sha = file_sha256(path)
    _check_prefix(sha, parse_weights_name(path), path)
    return sha


# --- reading ---------------------------------------------------------------------------------

_WRAPPER_KEYS = ("model_ema", "state_dict_ema", "model", "module", "state_dict")


def read_state_dict(path: str | os.PathLike, *, shown: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or PyTorch checkpoint, never unpickling arbitrary objects.

    PyTorch files are memory-mapped where the format allows, so large checkpoints cost page
    cache rather than a second copy in memory. ``shown`` is the path named in errors.
    """
    path = Path(path)
    shown = Path(shown) if shown is not None else path
    if not path.is_file():
        raise MissingWeightsError(shown, "weights file does not exist.", "check the path.")
    if path.suffix == ".safetensors":
        obj = _read_safetensors(path, shown)
    else:
        obj = _read_torch(path, shown)
    return _as_state_dict(obj, shown)


def _read_safetensors(path: Path, shown: Path) -> object:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own SafetensorError, OSError, ValueError...
        raise WeightsFileError(
            shown,
            f"is not a readable .safetensors file ({exc}); it is truncated, corrupt or another format.",
            "download it again (model.safetensors from the timm model page on Hugging Face).",
        ) from exc


def _read_torch(path: Path, shown: Path) -> object:
    import torch

    last: Exception | None = None
    for mmap in (True, False):  # mmap needs the zip format; legacy files need the plain reader
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as exc:
            raise WeightsFileError(
                shown,
                "contains pickled Python objects besides tensors; refusing to load it, because "
                f"unpickling can run arbitrary code ({str(exc).splitlines()[0]}).",
                "use Meta's original DINOv3 .pth file or timm's model.safetensors.",
            ) from exc
        except Exception as exc:  # truncated zip, not a checkpoint at all, ...
            last = exc
    raise WeightsFileError(
        shown,
        f"is not a readable PyTorch checkpoint ({type(last).__name__}: {last}); it is truncated, corrupt or another format.",
        "download it again and check that the download completed.",
    ) from last


def _as_state_dict(obj: object, shown: Path) -> dict[str, torch.Tensor]:
    import torch

    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    tensors_by_name = isinstance(obj, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    if not tensors_by_name or not obj:
        raise WeightsFileError(
            shown,
            "does not hold a state dict (a mapping of names to tensors).",
            "use Meta's original DINOv3 .pth file or timm's model.safetensors.",
        )
    return obj


# --- listing and adding ----------------------------------------------------------------------


def list_weights(*, by_name_only: bool = False) -> list[WeightsFile]:
    """Recognised weight files in ``search_dirs()``: (path, arch, sha256 prefix, size in bytes).

    ``by_name_only``: for the GUI's teacher list. File names alone decide (no timm, hence no
    torch, in the GUI process: 2.6 s of start-up and 500 MiB there), and no file is hashed
    (SHA-256 at ~1 GiB/s: 1.1 s for a 1.2 GB ViT-L file); the sha256 is then the file name's
    prefix or "". The training job checks the file it is given as always.
    """
    found = []
    for directory in search_dirs():
        for path in _files_in(directory):
            parsed = parse_weights_name(path, check_arch=not by_name_only)
            if parsed is None:
                continue
            sha = parsed.sha256_prefix or ("" if by_name_only else file_sha256(path)[:12])
            found.append(WeightsFile(path, parsed.arch, sha, path.stat().st_size))
    return found


def add_weights(file: str | os.PathLike, *, arch: str | None = None, dest_dir: str | os.PathLike | None = None) -> Path:
    """Check a weight file and copy it atomically into ``dest_dir`` (default: the user folder).

    The copy is hashed while written; a Meta file name's checksum must match and the tensors
    must fit the architecture (``arch``, else the file name, else the tensor shapes) before
    the file appears under its canonical name. Returns the installed path.
    """
    src = Path(file).expanduser()
    if not src.is_file():
        raise DinomixInputError(src, "is not a file.", "give the path of a downloaded DINOv3 weight file.")
    if arch is not None:
        _dinov3.check_arch(arch)
    parsed = parse_weights_name(src)
    resolved = arch or (parsed.arch if parsed is not None else None)
    if resolved is None:
        resolved = _validated_arch(read_state_dict(src), None, src)
    dest = (Path(dest_dir).expanduser() if dest_dir is not None else user_weights_dir()) / _canonical_name(src, parsed, resolved)
    if dest.exists() and _same_file(src, dest):
        verify_checksum(src)
        _validated_arch(read_state_dict(src), resolved, src)
        return dest
    with atomic_path(dest) as tmp:
        digest = hashlib.sha256()
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            for chunk in iter(lambda: fin.read(_CHUNK), b""):
                digest.update(chunk)
                fout.write(chunk)
        _check_prefix(digest.hexdigest(), parsed, src)
        _validated_arch(read_state_dict(tmp, shown=src), resolved, src)
    return dest


def _validated_arch(state_dict: dict[str, torch.Tensor], arch: str | None, shown: Path) -> str:
    if arch is None:
        arch = _dinov3.infer_arch(state_dict, shown)
        if arch is None:
            raise WeightsFileError(
                shown,
                "matches no DINOv3 ViT architecture timm knows.",
                f"pass the architecture with --arch (one of {', '.join(_dinov3.teacher_archs())}) or re-download the file.",
            )
    _dinov3.check_matches(state_dict, _dinov3.meta_model(arch), shown, arch)
    return arch


def _canonical_name(src: Path, parsed: WeightsName | None, arch: str) -> str:
    """Meta files keep their name (it carries the checksum); timm files become ``<arch>[.<tag>]<suffix>``."""
    if parsed is not None and parsed.layout == "meta":
        return src.name
    tag = parsed.tag if parsed is not None and parsed.arch == arch else None
    suffix = src.suffix if src.suffix in _TIMM_SUFFIXES else ".pth"
    return f"{arch}.{tag}{suffix}" if tag else f"{arch}{suffix}"


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


__all__ = [
    "DEFAULT_TAG",
    "ENV_VAR",
    "META_TO_TIMM",
    "ChecksumMismatchError",
    "MissingWeightsError",
    "WeightsFile",
    "WeightsFileError",
    "WeightsName",
    "add_weights",
    "default_tag",
    "env_weights_dirs",
    "expected_file_names",
    "file_sha256",
    "find_weights",
    "list_weights",
    "parse_weights_name",
    "read_state_dict",
    "search_dirs",
    "user_weights_dir",
    "verify_checksum",
]
