"""`model.source=hf`: a Hugging Face hub id (`model.hf_id`, `model.revision`), read from the
hub or a warm HF cache."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

from harness.errors import ConfigError
from harness.sources import BuiltSource, register

if TYPE_CHECKING:
    from harness.models import ModelConfig


@register
class HubSource(BuiltSource):
    NAME = "hf"

    def unset_need(self, model: "ModelConfig") -> Optional[str]:
        return None if model.hf_id else "model.hf_id, e.g. model.hf_id=meta-llama/Llama-3.2-1B-Instruct"

    def base_model_dir(self, model: "ModelConfig", cache_root: Path, timeout_s: float) -> tuple[Path, str]:
        from harness import stages

        path = hf_snapshot(model)
        # The snapshot directory is named for the exact commit.
        return path, stages.base(model.hf_id, path.name).key

    def weights_origin(self, model: "ModelConfig") -> str:
        return f"{model.hf_id}@{model.revision} (Hugging Face hub)"


def hf_snapshot(model: "ModelConfig") -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model.hf_id, revision=model.revision))
    except Exception as exc:  # the hub raises several unrelated types for "not reachable"
        raise ConfigError(f"model={model.name}: {hub_failure(model, exc)}") from None


# A gated or private model is read with the token of an account that may read it.
TOKEN_FIX = (
    "give a token of an account that has access: set HF_TOKEN (a read token from "
    "https://huggingface.co/settings/tokens) or run `hf auth login`"
)


def hub_failure(model: "ModelConfig", exc: Exception) -> str:
    """Why the hub gave no snapshot of the model, and the fix: a refused token or a gated model
    is not a missing network, and says which token to give."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    where = f"{model.hf_id}@{model.revision}"
    # snapshot_download reports a refusal it could not fall back from as "not in the local
    # cache", the hub's answer being its cause
    cause = exc
    while not isinstance(cause, HfHubHTTPError) and (cause.__cause__ or cause.__context__):
        cause = cause.__cause__ or cause.__context__
    exc = cause if isinstance(cause, HfHubHTTPError) else exc
    if isinstance(exc, GatedRepoError):
        return (
            f"{model.hf_id} is a gated model: accept its terms on https://huggingface.co/{model.hf_id} "
            f"with your account, then {TOKEN_FIX}"
        )
    if isinstance(exc, RepositoryNotFoundError):  # the hub answers a private model as it answers a typo
        return (
            f"the Hugging Face hub has no {model.hf_id} this token may read: check model.hf_id; "
            f"if it is private, {TOKEN_FIX}"
        )
    if isinstance(exc, RevisionNotFoundError):
        return f"{model.hf_id} has no revision {model.revision!r}: check model.revision"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, HfHubHTTPError) and status in (401, 403):
        return f"the Hugging Face hub refused the token for {where} (HTTP {status}): {TOKEN_FIX}"
    return (
        f"cannot fetch {where} from the Hugging Face hub ({type(exc).__name__}: {exc}). Without network, "
        "use the embedded default (model=smollm2_135m) or pre-download it into the HF cache."
    )
