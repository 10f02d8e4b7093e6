"""Build a tiny, randomly initialised Qwen2.5-VL (or Qwen3-VL / Qwen2-VL / Qwen3.5 / Qwen3.5 MoE: `family=`)
offline (model, tokenizer, chat template, processor). The model config, processor and chat template of each
family come from its module in `videor1.model.families`; the tokenizer is shared (Qwen's special tokens for
all of them), trained under the family's pre-tokenizer regex (`TOKENIZER_REGEX`).

Everything is loaded through `from_pretrained` on a directory, so the tiny checkpoint made here and a real
Qwen2.5-VL-7B-Instruct directory take exactly the same path (`trust_remote_code` is always off).

`build_tiny` makes a randomly initialised `Qwen2_5_VLForConditionalGeneration` small enough to train on
a laptop CPU (about 1 M parameters with the defaults), together with:

- a byte-level BPE tokenizer trained offline (the `tokenizers` library) on a small built-in English
  corpus plus the prompt templates of `videor1.data.prompts`, laid out like Qwen's: the same normaliser
  and pre-tokeniser, the BPE vocabulary first and Qwen's special tokens after it in Qwen's order.
  Departure from Qwen: `<think>`, `</think>`, `<answer>` and `</answer>` are single added (non-special)
  tokens, so the output format is a few tokens and easy to learn, and decoding with
  `skip_special_tokens=True` keeps them. The model's vocabulary is exactly the tokenizer's (Qwen pads
  its embedding matrix past the tokenizer; we do not, so every id the model can emit decodes).
- a chat template written for this project that renders conversations as Qwen2.5-VL's does
  (`<|im_start|>role\\n ... <|im_end|>\\n`, default system prompt, vision placeholders, generation prompt).
- a `Qwen2_5_VLProcessor` whose pixel limits are wide open: `videor1.data.media` already resizes frames
  to multiples of 28 within the configured budget, so the processor never resizes again, and it never
  samples frames itself (`do_sample_frames=False`).

`initializer_range` defaults to 0.1 on both the text and the vision configs (transformers' default 0.02
left a tiny model unable to learn motion direction; see the learnability note in the design docs).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers import AddedToken, GenerationConfig
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

from videor1.data.prompts import TEMPLATES
from videor1.model.families import DEFAULT_FAMILY, get_family, qwen2_5_vl
from videor1.model.families.common import DEFAULT_SYSTEM_PROMPT  # noqa: F401  (re-exported)

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)
FORMAT_TOKENS: tuple[str, ...] = ("<think>", "</think>", "<answer>", "</answer>")
# Behaviourally the Qwen2.5-VL chat template, written for this project (each family has its own:
# `videor1.model.families`; this is the default family's).
CHAT_TEMPLATE = qwen2_5_vl.CHAT_TEMPLATE

# A small English corpus for the tokenizer: prompt wording, reasoning phrases, answer formats and the
# words of the synthetic tasks. Any text still encodes (byte-level BPE); this only shortens sequences.
_CORPUS_LINES: tuple[str, ...] = (
    "You are a helpful assistant.",
    "Please think about this question as if you were a human pondering deeply.",
    "Engage in an internal dialogue using expressions such as 'let me think', 'wait', 'hmm', 'oh, I see', "
    "'let's break it down', etc, or other natural language thought expressions.",
    "It's encouraged to include self-reflection or verification in the reasoning process.",
    "Provide your detailed reasoning between the <think> and </think> tags, and then give your final "
    "answer between the <answer> and </answer> tags.",
    "Please provide only the single option letter (e.g., A, B, C, D, etc.) within the <answer> </answer> tags.",
    "Please provide the numerical value (e.g., 42 or 3.14) within the <answer> </answer> tags.",
    "Please transcribe text from the image/video clearly and provide your text answer within the "
    "<answer> </answer> tags.",
    "Please provide your text answer within the <answer> </answer> tags.",
    "Options:\nA. left\nB. right\nC. up\nD. down",
    "Options:\nA. red\nB. green\nC. blue\nD. yellow",
    "Options:\nA. yes\nB. no",
    "<think>Let me think. The square starts on the left and ends on the right, so it moves right.</think>"
    "<answer>B</answer>",
    "<think>Hmm, wait. The circle is at the top in the first frame and at the bottom in the last frame."
    "</think><answer>D</answer>",
    "<think>I count the objects one by one: one, two, three.</think><answer>3</answer>",
    "<think>Oh, I see. The colour of the shape is green in every frame.</think><answer>green</answer>",
    "Which direction does the red square move in the video?",
    "What colour is the moving object? What shape appears first? What happens after the ball stops?",
    "How many objects are in the video? How many times does the circle change colour?",
    "Does the object move clockwise or counterclockwise? Is it getting bigger or smaller, faster or slower?",
    "Which object appears first, second, third, last? In what order do the shapes appear?",
    "The video shows a square, a circle, a triangle, a star, a ball, a box and a line on a plain background.",
    "Colours: red, green, blue, yellow, white, black, orange, purple, pink, grey, brown, cyan, magenta.",
    "Directions: left, right, up, down, top, bottom, forward, backward, towards, away, clockwise.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 20 25 30 32 42 50 64 100 3.14 0.5 1.25 2.0",
    "zero one two three four five six seven eight nine ten first second third fourth last before after",
    "The answer is A. The answer is B. The answer is C. The answer is D. The answer is E.",
    "So the final answer is the option that matches what happens at the end of the video.",
    "Let me check again. Yes, that is consistent with the frames, so I am confident.",
    "The person in the video picks up the cup, walks to the table and puts it down.",
    "What is the distance between the chair and the table in meters? What is the size of the room?",
    "Read the text in the image. The sign says open from nine to five.",
    "Describe what happens in the video in one sentence.",
    "system user assistant question answer video image frame frames time second seconds minute",
    "the a an of in on at to from with without and or but not is are was were be been being it this that",
    "moves moved moving stays still static appears disappears changes grows shrinks rotates turns",
    # Common English words, so that free-form questions and answers tokenise into whole words.
    "about above across act action actually add again against age ago agree air all almost alone along "
    "already also although always among amount angle animal another any anything area arm around arrive "
    "art ask available away baby back bad bag ball bank base beautiful because become bed begin behind "
    "believe below beside best better between big bird black blue board boat body book both bottle bring "
    "build building business buy call camera can car card care carry case cat catch cause center certain "
    "chair chance change character check child choose city class clear close clothes cloud color come "
    "common company compare complete consider contain continue control cook corner correct cost could "
    "count country course cover create cross cup cut dark day decide deep describe detail different "
    "difficult dinner direction discover distance do dog door draw dress drink drive drop during each "
    "early earth east easy eat edge effect eight either else end enough enter entire equal even evening "
    "event ever every example explain eye face fact fall family far fast father feel few field fight "
    "figure fill final find fine finger finish fire fish five floor fly follow food foot force form four "
    "free friend front full game garden general get girl give glass go good great ground group grow "
    "guess hair half hand happen happy hard have head hear heart heavy help here high hold hole home hope "
    "horse hot hour house how however hundred idea important include increase indicate inside instead "
    "interest island item just keep key kind kitchen know land language large late later laugh lead learn "
    "leave leg length less letter level life light like list listen little live long look lose lot low "
    "machine main make man many map mark match matter may mean measure meet middle might mind miss money "
    "month more morning most mother mountain mouth much music must name near need never new next night "
    "nothing notice now object ocean off offer office often old once only open other out over own page "
    "paint paper part pass past path pattern people perhaps person picture piece place plan plant play "
    "point position possible power present probably problem produce product pull push put quite race rain "
    "raise reach ready real reason record remain remember rest result return river road rock roll room "
    "round row rule run same scene school score sea season seat see seem sentence set several shape share "
    "ship short should show side sign simple since sing sit six size skin sky small snow some something "
    "sometimes sound south space speak special speed spring stand star start state step stop store story "
    "street strong student study such sun sure surface swim system table take talk tall teacher team tell "
    "test than thing think though thought through together too tool top total touch toward town track "
    "travel tree true try under until use usually value very view visible voice walk wall want warm watch "
    "water wave way weather week weight well west what wheel when where whether which while white who "
    "whole why wide wind window winter wish woman wood word work world would write wrong year young",
)


# ------------------------------------------------------------------------------------------ tiny model
def _template_lines() -> list[str]:
    """Every string of the prompt templates (`videor1.data.prompts.TEMPLATES`), so prompts tokenise short."""
    lines: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, str):
            lines.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(TEMPLATES)
    return lines


def train_tokenizer(vocab_size: int = 2048, corpus: tuple[str, ...] = _CORPUS_LINES, *,
                    regex: str = PRETOKENIZE_REGEX) -> Qwen2Tokenizer:
    """A Qwen-style byte-level BPE tokenizer trained offline on `corpus`, as a transformers fast tokenizer.

    Layout: BPE vocabulary (ids 0..n-1), then `SPECIAL_TOKENS` in Qwen's order, then `FORMAT_TOKENS`.
    `vocab_size` is the BPE target; a small corpus may stop short of it (len(tokenizer) is the truth).
    `regex` is the pre-tokenizer's split (the family's `TOKENIZER_REGEX`; Qwen2's by default): a Qwen3.5
    directory reloads as `Qwen3_5Tokenizer`, which splits with its own regex, so its tiny tokenizer is
    trained and saved under that one.
    """
    bpe = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    # Repeat the corpus a little so that frequent words of the templates merge into whole tokens.
    bpe.train_from_iterator(list(corpus) * 4 + _template_lines() * 4, trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = dict(state["vocab"])
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=None,
                               eos_token="<|im_end|>", pad_token="<|endoftext|>",
                               model_max_length=32768)
    tokenizer.backend_tokenizer.pre_tokenizer = bpe.pre_tokenizer   # the split it was trained under, saved too
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in ("<|im_end|>", "<|endoftext|>")]})
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in FORMAT_TOKENS])
    for token in SPECIAL_TOKENS:  # the layout promised above, checked rather than assumed
        if tokenizer.convert_tokens_to_ids(token) != vocab[token]:
            raise RuntimeError(f"tokenizer layout: {token} got id {tokenizer.convert_tokens_to_ids(token)}")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny(out_dir: str | Path, *, family: str = DEFAULT_FAMILY, seed: int = 0, hidden_size: int = 128,
               num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2, vision_hidden: int = 64,
               vision_depth: int = 2, initializer_range: float = 0.1, vocab_size: int = 2048) -> Path:
    """Write a tiny random model of `family` (safetensors), tokenizer and processor to `out_dir`; return it.

    `family` names a `videor1.model.families` entry (default Qwen2.5-VL). Deterministic for a seed.
    `vocab_size` is the BPE target of the tokenizer; the model's vocabulary is exactly `len(tokenizer)` so
    that every id the model can emit decodes to a token.
    """
    fam = get_family(family)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(vocab_size, regex=fam.TOKENIZER_REGEX)
    tokenizer.chat_template = fam.CHAT_TEMPLATE
    config = fam.tiny_config(tokenizer, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                             num_kv_heads=num_kv_heads, vision_hidden=vision_hidden, vision_depth=vision_depth,
                             initializer_range=initializer_range)
    torch.manual_seed(seed)
    model = fam.MODEL_CLASS(config).to(torch.float32)
    eos_ids = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    model.generation_config = GenerationConfig(
        bos_token_id=eos_ids[1], eos_token_id=eos_ids, pad_token_id=eos_ids[1], do_sample=False)
    model.save_pretrained(str(out), safe_serialization=True)
    fam.tiny_processor(tokenizer).save_pretrained(str(out))
    return out
