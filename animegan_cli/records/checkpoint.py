"""The style and checkpoint an output records, known before the checkpoint is loaded."""

from __future__ import annotations

from pathlib import Path

from animegan_cli.core.errors import WeightsError
from animegan_cli.model.weights import STYLES, WeightsStore, file_style_name, git_blob_id


def checkpoint_id(style: str, weights: Path | None, store: WeightsStore | None = None) -> str:
    """The checkpoint id a run will record (ResolvedWeights.checkpoint_id), without loading it.

    A published style is identified by its registered git blob id (the file is verified
    against it when it is loaded); a file of your own by the git blob id of its bytes.
    """
    if weights is None and style in STYLES:
        return STYLES[style].blob_id
    if weights is None:
        store = store or WeightsStore.from_env()
        found = store.find(style)
        if found is None:
            raise store.unknown_style(style)
        weights = found
    try:
        return git_blob_id(Path(weights).read_bytes())
    except FileNotFoundError:
        raise WeightsError(f"checkpoint {weights} does not exist") from None
    except OSError as exc:
        raise WeightsError(f"cannot read checkpoint {weights}: {exc.strerror or exc}") from exc


def record_style(style: str, weights: Path | None, checkpoint: str | None) -> str:
    """The style name an output records.

    With ``--weights FILE`` that is the file's name (``paprika.pt``), unless its git blob
    id is a published style's: a published name is never claimed without its blob id.
    """
    if weights is None:
        return style
    return file_style_name(weights, checkpoint or "")
