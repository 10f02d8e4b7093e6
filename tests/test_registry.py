"""videor1.registry.Registry, the one registry class, and the registries built on it."""

from __future__ import annotations

import pytest

from videor1.registry import Registry


def make() -> Registry:
    reg: Registry = Registry("widget")

    @reg.register("zeta")
    def zeta() -> str:
        return "z"

    reg.register("alpha")(len)
    return reg


def test_register_returns_the_object_and_get_finds_it():
    reg = make()
    assert reg.get("zeta")() == "z" and reg["alpha"] is len
    assert "zeta" in reg and "nope" not in reg and 3 not in reg
    assert len(reg) == 2


def test_iteration_is_registration_order_names_are_sorted():
    reg = make()
    assert list(reg) == ["zeta", "alpha"]
    assert list(reg.keys()) == ["zeta", "alpha"] and reg.names() == ["alpha", "zeta"]
    assert dict(reg.items())["alpha"] is len
    assert repr(reg) == "Registry('widget': alpha, zeta)"


def test_unknown_name_lists_the_known_ones():
    reg = make()
    with pytest.raises(KeyError, match="unknown widget 'zetta'; known: alpha, zeta"):
        reg.get("zetta")
    with pytest.raises(KeyError, match="known: alpha, zeta"):
        reg["zetta"]
    with pytest.raises(KeyError, match="unknown widget"):
        reg.get(["unhashable"])  # type: ignore[arg-type]


def test_duplicates_are_refused_unless_overwrite_or_same_object():
    reg = make()
    with pytest.raises(ValueError, match="widget 'alpha' is already registered"):
        reg.register("alpha")(str)
    reg.register("alpha")(len)  # the very same object again: harmless (a module imported twice)
    reg.register("alpha", overwrite=True)(str)
    assert reg["alpha"] is str and list(reg) == ["zeta", "alpha"]


@pytest.mark.parametrize("name", ["", "   ", None, 3])
def test_bad_names_are_refused(name):
    with pytest.raises(ValueError, match="widget name must be a non-empty string"):
        Registry("widget").register(name)  # type: ignore[arg-type]


def test_a_registry_is_read_only_mapping():
    reg = make()
    with pytest.raises(TypeError):
        reg["beta"] = str  # type: ignore[index]
    assert not hasattr(reg, "pop")


def test_project_registries_are_this_class():
    from videor1.data.synth.tasks import TASKS
    from videor1.rewards import REGISTRY
    from videor1.rl.algorithms import ADVANTAGES, LOSS_AGGREGATIONS

    for reg, kind, known in [(REGISTRY, "reward", "accuracy"), (ADVANTAGES, "advantage estimator", "grpo"),
                             (LOSS_AGGREGATIONS, "loss_type", "dapo"), (TASKS, "synthetic task", "direction")]:
        assert isinstance(reg, Registry) and reg.kind == kind and known in reg
        with pytest.raises(KeyError, match=f"unknown {kind} 'no-such'; known: .*{known}"):
            reg.get("no-such")


def test_synthetic_tasks_keep_their_order():
    # the dataset builder and the demo's numbers depend on this order (the order of tasks.py)
    from videor1.data.synth.tasks import TASKS

    assert list(TASKS) == ["direction", "first_shape", "last_shape", "direction_short",
                           "direction_distractor", "colour_change", "colour",
                           "count", "describe", "distance", "ocr", "image_colour", "image_count", "image_ocr"]
