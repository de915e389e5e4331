"""Where a model comes from (`model.source`): one module each in this package, found here.

What a job does with its model follows from its source's kind, and only from that: a model
whose weights the harness can read is built here (`BuiltSource`: fine-tuned, merged and
quantized by the job's `train` and `quant`); a model file is measured as it is
(`FileSource`); a hosted model is measured as served (`EndpointSource`). A source module
subclasses its kind, decorated with `@register`, and owns everything the rest of the harness
asks of it: what it needs set (`unset_need`), its checks before any work, how its model is
prepared, opened and named; its kind owns the target that measures it, the name a record
gives its variant, and the refusal of a quant or training it takes none of. Nothing outside
this package looks at a source's name; adding a source is one module here.

These modules are light (the measuring process unpickles a file source as its opener, and
its memory is the serving footprint): heavy libraries are imported where used.
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Optional

if TYPE_CHECKING:
    from harness.config import JobConfig
    from harness.models import ModelConfig
    from harness.runtimes import Runtime
    from harness.targets import Target

BUILT, FILE, ENDPOINT = "built", "file", "endpoint"


class Source:
    """What every source has: its `model.source` name and its kind."""

    NAME: ClassVar[str] = ""
    KIND: ClassVar[str] = ""
    # What a record calls the variant of a model no quant built (a built one is named for its quant).
    VARIANT: ClassVar[Optional[str]] = None
    # The format of what is measured as given, as a record names it (None: built by the job's
    # quant, or hosted).
    FORMAT: ClassVar[Optional[str]] = None

    def unset_need(self, model: "ModelConfig") -> Optional[str]:
        """What the source needs and `model` does not set, as its error names it (None: nothing)."""
        return None

    def refusal(self, model: Any, group: str, override: str) -> Optional[str]:
        """Why the user's choice of `group` (quant or train), `override`, does not apply to a
        model of this source, with what to do instead; None where it does."""
        return None

    def target(self, job: "JobConfig") -> "Target":
        """What measures a job's model of this source."""
        raise NotImplementedError


class BuiltSource(Source):
    """Weights the harness can read: a base checkpoint, the first of the built target's stages."""

    KIND = BUILT

    def check_available(self, model: "ModelConfig") -> None:
        """Seconds-long: the model's files can be had, before any heavy work."""

    def base_model_dir(self, model: "ModelConfig", cache_root: Path, timeout_s: float) -> tuple[Path, str]:
        """(local checkpoint directory, its cache key)."""
        raise NotImplementedError

    def weights_origin(self, model: "ModelConfig") -> str:
        """Where the base weights came from, said plainly."""
        return f"{model.path} ({model.source})"

    def target(self, job: "JobConfig") -> "Target":
        from harness.targets.built import BuiltTarget

        return BuiltTarget(job)


# A user's file is not ours to rebuild: the fix is to give another one.
USER_FILE_FIX = "check the file (a complete download, the right path) or pass another model.path"


class FileSource(Source):
    """A model file (`model.path`) measured as it is on its runtime; the `Opener` the
    measuring process opens it with."""

    KIND = FILE
    VARIANT = "as_given"
    # What model.path is, as errors name it ("a .gguf file").
    FILE_IS: ClassVar[str] = ""
    IS_DIRECTORY: ClassVar[bool] = True
    # The distribution that runs it, and the extra that installs it ("" for the core).
    RUNTIME: ClassVar[str] = ""
    EXTRA: ClassVar[str] = ""
    # Where the chat template comes from when model.tokenizer names none.
    TEMPLATE_FROM: ClassVar[str] = "model directory"

    def unset_need(self, model: "ModelConfig") -> Optional[str]:
        return None if model.path else f"model.path ({self.FILE_IS})"

    def refusal(self, model: Any, group: str, override: str) -> Optional[str]:
        return (
            f"model.source={model.source} is measured as it is: {override} does not apply (a model file is not "
            f"{'requantized' if group == 'quant' else 'fine-tuned'} here); drop the {group} override, or start from "
            "a full-precision checkpoint with model.source=local to build it"
        )

    def target(self, job: "JobConfig") -> "Target":
        from harness.targets.file import FileTarget

        return FileTarget(job)

    def check_file(self, path: Path) -> None:
        """The checks of the file before any native code opens it (OSError, ValueError)."""
        raise NotImplementedError

    def check_setup(self, path: Path, model: "ModelConfig") -> None:
        """After `check_file`, seconds-long: what else measuring this file needs is there
        (ConfigError naming the fix)."""

    def facts(self, path: Path) -> dict[str, Any]:
        """What the file holds, for the record; its `sha256` keys the artifact."""
        raise NotImplementedError

    def tokenizer(self, path: Path) -> Any:
        """The file's own tokenizer, whose chat template renders the prompts."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path)

    def prepare_kernels(self, hardware) -> None:
        """A file's kernels are whatever its runtime loads with it."""

    def open(self, artifact: Path, hardware, threads: int) -> "Runtime":
        raise NotImplementedError


def dir_digest(path: Path) -> str:
    """One digest over every file in a model directory (weights, config, tokenizer and its chat
    template: a change to any is another model to measure)."""
    from harness.store import file_digest

    files = sorted(p for p in path.iterdir() if p.is_file())
    return hashlib.sha256("".join(f"{p.name}:{file_digest(p)}" for p in files).encode()).hexdigest()


class EndpointSource(Source):
    """A hosted model behind an endpoint (`model.api`), measured as served."""

    KIND = ENDPOINT
    VARIANT = "hosted"

    def check_api(self, api: Optional[dict]) -> None:
        """The endpoint's fields (`model.api`, plain values) name one, before the model is typed."""
        raise NotImplementedError

    def refusal(self, model: Any, group: str, override: str) -> Optional[str]:
        return (
            f"model={model.name} is a hosted model, measured as served: {override} does not apply to it; drop "
            f"the {group} override for this model (sweep hosted and local models separately)"
        )

    def target(self, job: "JobConfig") -> "Target":
        from harness.targets.endpoint import EndpointTarget

        return EndpointTarget(job)


_REGISTRY: dict[str, type[Source]] = {}


def register(cls: type[Source]) -> type[Source]:
    if cls.NAME in _REGISTRY and _REGISTRY[cls.NAME] is not cls:
        raise RuntimeError(
            f"model.source={cls.NAME} is registered twice ({_REGISTRY[cls.NAME].__name__}, {cls.__name__})"
        )
    _REGISTRY[cls.NAME] = cls
    return cls


def registry() -> dict[str, type[Source]]:
    """model.source -> its class, every module of this package imported once."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")  # cached after the first time
    return _REGISTRY


def source_of(name: Optional[str]) -> Optional[Source]:
    """The source named `name` (None for one that is not known)."""
    cls = registry().get(name or "")
    return cls() if cls else None
