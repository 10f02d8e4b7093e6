"""Settings recorded by older versions of a resumable run: what a key's absence means.

`videor1 eval` (meta.json) and `videor1 annotate` (``<out stem>.annotate.json``) record their settings and
refuse to resume a folder made with other ones. Keys added later are missing from folders made before
them; their absence means "what the code did then", which is one value of the new key. `fill_missing`
puts that value in (with a note naming the key and the value assumed), so the folder is compared with the
new settings as if it had recorded it: a real difference (the old code decoded the sampled frames
themselves, the new run asks for keyframes) is still refused, an absence alone is not.

A key whose old value cannot be known (the weight fingerprint: a folder made before it gives no way to
check the weights) takes the new run's value, with a note that says it was not checked.

The keys added since the first recorded shapes (found with ``git log -S``):

* ``video.seek`` and eval's ``model_fingerprint``: added in fc3089a. Before, every sampled frame was
  decoded itself (seek to the keyframe at or before it, decode forward to it): ``seek: exact`` now.
* ``video.factor`` / ``image.factor``: added in dc5ad40. Before, frame and image sides were multiples of
  28 for every model family. Now ``None`` (the default) means the family's factor: 28 for Qwen2/2.5-VL
  (the same frames as before), 32 for Qwen3-VL (other frames: a Qwen3-VL folder made before cannot be
  continued with the same pixels, and is refused).
* ``limits`` (fc3089a) and eval's ``judge`` (c44e07d) are recorded but not compared on resume, so their
  absence needs no default.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping

OLD_FACTOR = 28  # the frame / image side multiple of every run before dc5ad40


@dataclass(frozen=True)
class OldDefault:
    """The value a missing key stands for, and why (what the old code did, since which commit)."""

    value: Any
    why: str
    checked: bool = True  # False: the old value is unknown; `value` is the new run's, taken unverified


def fill_missing(recorded: Mapping[str, Any], defaults: Mapping[str, OldDefault]
                 ) -> tuple[dict[str, Any], dict[str, OldDefault]]:
    """A copy of `recorded` with every key of `defaults` (dotted: ``"video.seek"``) that it lacks set to its
    old default, and the keys so filled (with their defaults).

    A key is filled only where its parent is there (a ``video`` section without ``seek``); a missing
    section is left missing, so it compares as a real difference."""
    filled = copy.deepcopy(dict(recorded))
    assumed = {}
    for dotted, default in defaults.items():
        *parents, leaf = dotted.split(".")
        node: Any = filled
        for name in parents:
            node = node.get(name) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf not in node:
            node[leaf] = copy.deepcopy(default.value)
            assumed[dotted] = default
    return filled, assumed


def notes(where: str, assumed: Mapping[str, OldDefault]) -> list[str]:
    """One line a filled key (`fill_missing`): where, the key, and the value assumed or why it is unchecked."""
    lines = []
    for key, default in assumed.items():
        said = f"assuming {key}: {default.value!r}, {default.why}" if default.checked else default.why
        lines.append(f"{where} has no {key} (an older version made it): {said}")
    return lines


def unrecorded_clause(assumed: Mapping[str, OldDefault], new: Mapping[str, Any]) -> str:
    """For a refusal message: `` (KEYS: not recorded by the older version ..., taken at what it did)`` naming
    the filled keys whose old default differs from the new run's value; "" when there are none."""
    keys = [key for key, default in assumed.items() if default.value != _lookup(new, key)]
    return (f" ({', '.join(keys)}: not recorded by the older version that made it, taken at what it did)"
            if keys else "")


def _lookup(settings: Mapping[str, Any], dotted: str) -> Any:
    node: Any = settings
    for name in dotted.split("."):
        node = node.get(name) if isinstance(node, Mapping) else None
    return node


def media_defaults(frame_factor: int | None) -> dict[str, OldDefault]:
    """The old defaults of the `video` / `image` keys (module docstring). `frame_factor` is the factor of the
    model family of the new run (what ``factor: None`` means for it); None when it is not known, and then
    the old 28 is assumed as such (a new ``None`` compares as different)."""
    seek = OldDefault("exact", "as runs before fc3089a decoded every sampled frame itself")
    then = f"the multiple runs before dc5ad40 resized frames and images to: {OLD_FACTOR}"
    if frame_factor == OLD_FACTOR:
        factor = OldDefault(None, f"the model family's factor, which is {then}")
    else:
        family = "unknown" if frame_factor is None else str(frame_factor)
        factor = OldDefault(OLD_FACTOR, f"{then} (this model family's factor: {family})")
    return {"video.seek": seek, "video.factor": factor, "image.factor": factor}


def unchecked_fingerprint(fingerprint: str | None, model: Any) -> OldDefault:
    """The old default of `model_fingerprint`: the new run's, unverified."""
    return OldDefault(fingerprint, f"the weights at {model} cannot be checked against the ones that made the "
                                   "predictions already there; continuing as if they were the same",
                      checked=False)
