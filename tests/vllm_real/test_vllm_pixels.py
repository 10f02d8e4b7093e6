"""vLLM samples from the pixels the loss scores (issue 31): a checkpoint whose saved video processor carries a large
`min_pixels` (transformers' default 128 * 28 * 28 = 100,352) and a 16:9 clip at the 7B training budget (224 x 420 =
94,080 px per frame). One in-process engine for the module."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest

pytest.importorskip("vllm")

from videor1.data.media import VideoSpec, load_video  # noqa: E402
from videor1.generation.engines import (Completion, HFEngine, SamplingParams, VLLMEngine,  # noqa: E402
                                        check_prompt_lengths)
from videor1.model.inputs import Sample, encode  # noqa: E402
from videor1.model.load import load_model, load_processor  # noqa: E402

DEFAULT_MIN_PIXELS = 128 * 28 * 28
QUESTION = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}]


@pytest.fixture(scope="module")
def large_min_pixels_dir(tiny_model_dir, tmp_path_factory):
    """The tiny Qwen2.5-VL with its saved video processor's min_pixels raised to transformers' default."""
    path = tmp_path_factory.mktemp("min_pixels") / "model"
    shutil.copytree(tiny_model_dir, path)
    config_file = path / "processor_config.json"
    config = json.loads(config_file.read_text())
    config["video_processor"]["size"]["shortest_edge"] = DEFAULT_MIN_PIXELS
    config_file.write_text(json.dumps(config))
    return path


def test_vllm_prompt_has_the_loss_pixels_and_a_mismatch_is_caught(large_min_pixels_dir, bunny_mp4, vllm_memory):
    processor = load_processor(large_min_pixels_dir)
    assert processor.video_processor.size["shortest_edge"] == DEFAULT_MIN_PIXELS   # what vLLM would resize with
    clip = load_video(bunny_mp4, VideoSpec(min_frames=4, max_frames=4, max_pixels=DEFAULT_MIN_PIXELS))
    assert clip.frames.shape[1:3] == (224, 420)   # 16:9 at the training budget: 94,080 px < min_pixels
    sample = Sample(SimpleNamespace(problem_id="bunny-16x9"), clip, QUESTION)
    loss_len = int(encode(processor, [sample])["attention_mask"].sum())
    engine = VLLMEngine(processor, model_path=str(large_min_pixels_dir),
                        llm_kwargs={"gpu_memory_utilization": vllm_memory})
    try:
        greedy = SamplingParams(n=1, max_new_tokens=8, do_sample=False)
        (completion,), = engine.generate([sample], greedy)
        assert completion.prompt_len == loss_len   # vision tokens included: 2 x 8 x 15 merged patches
        hf = HFEngine(load_model(large_min_pixels_dir, device="cpu").eval(), processor)
        assert completion.token_ids == hf.generate([sample], greedy)[0][0].token_ids
        # the request as it was before issue 31 (no size): vLLM upsamples to 252 x 448, i.e. 2 x 9 x 16 tokens
        request = engine.request(sample)
        request["mm_processor_kwargs"] = {k: v for k, v in request["mm_processor_kwargs"].items() if k != "size"}
        (old,) = engine.llm.generate([request], sampling_params=engine.sampling_params(greedy, 0), use_tqdm=False)
        old_len = len(old.prompt_token_ids)
        assert old_len - loss_len == 2 * (9 * 16 - 8 * 15)
        with pytest.raises(RuntimeError, match=f"record 'bunny-16x9'.* {old_len} tokens and the loss's {loss_len}"):
            check_prompt_lengths([sample], [[Completion("", [], prompt_len=old_len)]], [loss_len])
    finally:
        engine.close()
