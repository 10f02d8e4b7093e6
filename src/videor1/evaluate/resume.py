"""Resuming an evaluation folder: which settings must match, and what an older folder's missing keys mean.

`check_resumable` compares the result-relevant settings (`RESULT_KEYS`) of the folder's meta.json with the
new run's. A folder made by an older version lacks keys added since; each takes its old default
(`videor1.legacy`: ``video.seek`` "exact", the frame factor, and for ``model_fingerprint`` the new run's,
unchecked), with a note, and only a real difference is refused. Lines written into the folder before keep
the settings id of the older shape; the new meta.json lists it in `earlier_settings_ids`, so that `videor1
score` reads the file as one run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from videor1.evaluate.shards import has_predictions
from videor1.legacy import OldDefault, fill_missing, media_defaults, notes, unchecked_fingerprint, unrecorded_clause

# Settings that change results: a folder is resumed only if these match.
# model_fingerprint: the weights at the model path (a retrained model at the same path is not resumed onto).
RESULT_KEYS = ("model", "model_fingerprint", "bench", "data", "video", "image", "decoding", "max_new_tokens",
               "seed", "prompt")


@dataclass(frozen=True)
class Resume:
    """What resuming into a folder found: notes on settings its meta.json lacks (an older version made it;
    `videor1.legacy`), and the settings ids its lines may carry besides the new run's (`earlier_settings_ids`)."""

    notes: list[str] = field(default_factory=list)
    earlier_settings_ids: list[str] = field(default_factory=list)


def old_defaults(settings: Mapping[str, Any], frame_factor: int | None) -> dict[str, OldDefault]:
    """The result-relevant keys added since the first meta.json shape, with what their absence means."""
    return {"model_fingerprint": unchecked_fingerprint(settings.get("model_fingerprint"), settings.get("model")),
            **media_defaults(frame_factor)}


def field_diffs(old: Any, new: Any, key: str) -> list[str]:
    """``key: old -> new`` for each differing leaf (dotted) of two recorded values."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new)) for d in field_diffs(old.get(k), new.get(k), f"{key}.{k}")]
    same = json.dumps(old, sort_keys=True, default=str) == json.dumps(new, sort_keys=True, default=str)
    return [] if same else [f"{key}: {old!r} -> {new!r}"]


def check_resumable(out: Path, settings: Mapping[str, Any], *, frame_factor: int | None = None) -> Resume:
    """Refuse to add predictions to a folder made with different result-relevant settings.

    A folder made by an older version lacks keys added since; each is taken at its old default
    (`old_defaults`; `frame_factor`: the new run's model family's, see `videor1.legacy.media_defaults`), with a
    note, and only a real difference is refused. The folder's settings id (and the earlier ones it lists)
    become the new meta.json's `earlier_settings_ids` when they differ from the new run's."""
    meta_path = out / "meta.json"
    if not meta_path.is_file() or not has_predictions(out):   # shard files of a killed multi-process run count
        return Resume()
    recorded = json.loads(meta_path.read_text(encoding="utf-8"))
    old, assumed = fill_missing(recorded, old_defaults(settings, frame_factor))
    fields = {k: field_diffs(old.get(k), settings.get(k), k) for k in RESULT_KEYS}
    diffs = [k for k in RESULT_KEYS if fields[k]]
    if diffs:
        what = ("the model weights changed since (model_fingerprint differs); " if diffs == ["model_fingerprint"]
                else f"{', '.join(diffs)} differ (recorded -> now): {'; '.join(d for k in diffs for d in fields[k])}"
                     f"{unrecorded_clause(assumed, settings)}; ")
        raise ValueError(f"{out} holds predictions made with other settings ({what}use a new --out folder")
    ids = [*recorded.get("earlier_settings_ids", []), recorded.get("settings_id")]
    earlier = [i for n, i in enumerate(ids) if i and i != settings.get("settings_id") and i not in ids[:n]]
    return Resume(notes(str(meta_path), assumed), earlier)
