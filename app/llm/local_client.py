"""The baseline ("original") doc generator: plain transformers `generate`, one chunk at a time.

This is the guide's `LocalDocGenerator`, kept deliberately simple: no batching, no prefix reuse,
no engine. It is the yardstick the optimized generator is measured against, and its greedy
output is what the optimized one must reproduce.

Timings in each `DocResult` are measured from the moment the chunk was submitted (for a batch:
when the batch call started), so the queueing that sequential processing causes is visible.
"""
from __future__ import annotations

import asyncio
import gc
import importlib.util
import inspect
import threading
import time
import warnings
from typing import Any, Sequence

import torch

from app.engine.names import normalize_quantization, resolve_device, resolve_model_path
from app.llm.generator_base import LocalGeneratorBase
from app.llm.prompts import PROMPT_VERSION, prompt_ids
from app.llm.types import ChunkLike, CodeChunk, DocResult, as_chunk

BASELINE_QUANTIZATIONS = ("4bit", "8bit")  # bitsandbytes formats
_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def _resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32  # half precision matmuls are slow (or missing) on most CPUs
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise ValueError(f"dtype={dtype!r} is not supported; use 'auto', 'float32', 'bfloat16' or 'float16'")


class _Progress:
    """A transformers streamer that records when the first new token arrives and can cancel."""

    def __init__(self) -> None:
        self.first_token_at: float | None = None
        self._puts = 0

    def put(self, value: torch.Tensor) -> None:
        # The first put is the prompt; the second carries the first generated token.
        self._puts += 1
        if self._puts == 2:
            self.first_token_at = time.perf_counter()

    def end(self) -> None:
        pass


def _cancel_criterion(event: threading.Event):
    """A stopping criterion that ends generation when `event` is set (a cancelled coroutine)."""
    from transformers import StoppingCriteria

    class _Cancelled(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            return torch.full((input_ids.shape[0],), event.is_set(), dtype=torch.bool, device=input_ids.device)

    return _Cancelled()


class LocalDocGenerator(LocalGeneratorBase):
    """Documents code chunks with `AutoModelForCausalLM.generate`, strictly one at a time."""

    def __init__(
        self,
        model_id: str,
        quantization: str | None = "4bit",
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
        max_seq_length: int = 4096,
        ignore_eos: bool = False,
        trust_remote_code: bool = False,
        local_files_only: bool = False,
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if max_seq_length < 2:
            raise ValueError(f"max_seq_length must be >= 2, got {max_seq_length}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.model_id = str(model_id)
        self.max_concurrency = 1  # one chunk at a time: docgen keeps its own queue short and in priority order
        self.quantization_requested = normalize_quantization(quantization, BASELINE_QUANTIZATIONS) or "none"
        self.device = resolve_device(device)
        self.dtype = _resolve_dtype(dtype, self.device)
        self.max_new_tokens = int(max_new_tokens)
        self.max_seq_length = int(max_seq_length)
        self.temperature = float(temperature)
        self.top_p, self.top_k, self.seed = float(top_p), int(top_k), seed
        self.ignore_eos = bool(ignore_eos)
        self.notes: list[str] = []
        self._lock = threading.Lock()  # transformers models are not safe to call concurrently
        self._closed = False

        self.model_path = resolve_model_path(self.model_id, local_files_only=local_files_only)
        self.quantization = self._choose_quantization()
        self._load(trust_remote_code)

    # ---- loading -------------------------------------------------------------------------

    def _choose_quantization(self) -> str:
        q = self.quantization_requested
        if q == "none":
            return "none"
        missing = []
        if importlib.util.find_spec("bitsandbytes") is None:
            missing.append("bitsandbytes is not installed")
        if self.device.type != "cuda":
            missing.append(f"the device is {self.device.type}, not CUDA")
        if not missing:
            return q
        msg = (
            f"quantization={q!r} needs bitsandbytes and a CUDA device ({'; '.join(missing)}): "
            f"loading {self.model_id} in full precision ({str(self.dtype).removeprefix('torch.')}) instead. "
            "Pass quantization='none' to silence this warning."
        )
        warnings.warn(msg, UserWarning, stacklevel=4)
        self.notes.append(msg)
        return "none"

    def _load(self, trust_remote_code: bool) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs: dict[str, Any] = dict(dtype=self.dtype, trust_remote_code=trust_remote_code, use_safetensors=True)
        if self.quantization != "none":
            from transformers import BitsAndBytesConfig

            if self.quantization == "4bit":
                kwargs["quantization_config"] = BitsAndBytesConfig(
                    load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=self.dtype
                )
            else:
                kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
            kwargs["device_map"] = {"": self.device.index or 0}
            self.notes.append(f"weights quantized by bitsandbytes ({self.quantization})")
        from app.engine.loader import load_hf_config
        from app.engine.checkpoint_check import check_checkpoint

        # Config sizes and weight files checked before transformers allocates anything (clear
        # errors for a broken config.json or a truncated download). Memory is not estimated here:
        # bitsandbytes' footprint is its own.
        check_checkpoint(self.model_path, load_hf_config(self.model_path, trust_remote_code))
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(self.model_path, **kwargs)
        if self.quantization == "none":
            model = model.to(self.device)
        self.model = model.eval()

        eos: set[int] = set()
        for source in (self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if source is not None:
                eos.update([source] if isinstance(source, int) else source)
        self.eos_token_ids = sorted(eos)
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else (self.eos_token_ids[0] if self.eos_token_ids else 0)
        model_max = getattr(self.model.config, "max_position_embeddings", None)
        if isinstance(model_max, int) and 0 < model_max < self.max_seq_length:
            self.notes.append(
                f"max_seq_length lowered from {self.max_seq_length} to the model's max_position_embeddings ({model_max})"
            )
            self.max_seq_length = model_max

    def _generation_config(self, max_new_tokens: int):
        from transformers import GenerationConfig

        sample = self.temperature > 0
        # Every field that changes the output is set explicitly: transformers fills unset ones
        # from the checkpoint's generation_config.json (e.g. Qwen's repetition_penalty 1.05,
        # do_sample=True), which would make "greedy" not greedy.
        return GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=sample,
            temperature=self.temperature if sample else 1.0,
            top_p=self.top_p if sample else 1.0,
            top_k=self.top_k if sample else 50,  # 50 is transformers' default: no "ignored flag" warning
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            min_new_tokens=0,
            num_beams=1,
            # An empty list (not None, which would be filled in from the checkpoint) = never stop early.
            eos_token_id=[] if self.ignore_eos else list(self.eos_token_ids),
            pad_token_id=self.pad_token_id,
            use_cache=True,
        )

    # ---- generation ----------------------------------------------------------------------

    def _generate_one(self, chunk: CodeChunk, submitted_at: float, cancel: threading.Event | None = None) -> DocResult:
        with self._lock:
            self._check_open()
            started = time.perf_counter()
            result = DocResult(chunk_id=chunk.id, queue_time=started - submitted_at)
            try:
                self._run(chunk, result, submitted_at, cancel)
            except Exception as exc:  # one bad chunk must not sink the batch; the error is reported
                result.error = f"{type(exc).__name__}: {exc}"
                result.finish_reason = "error"
            result.total_time = time.perf_counter() - submitted_at
            return result

    def _run(self, chunk: CodeChunk, result: DocResult, submitted_at: float, cancel: threading.Event | None) -> None:
        from transformers import StoppingCriteriaList

        if not chunk.code.strip():
            raise ValueError("the chunk has no code (empty or whitespace only)")
        # Ids, not text: code containing `<|im_end|>` & co. must not become control tokens.
        ids = torch.tensor([prompt_ids(self.tokenizer, chunk)], dtype=torch.long)
        n_prompt = ids.shape[1]
        result.prompt_tokens = n_prompt
        if n_prompt >= self.max_seq_length:
            raise ValueError(
                f"the prompt is {n_prompt} tokens but max_seq_length is {self.max_seq_length}: "
                "split the chunk or raise max_seq_length"
            )
        # Prompt + output stay within max_seq_length; a chunk may ask for its own limit (docgen's retries).
        budget = min(chunk.max_new_tokens or self.max_new_tokens, self.max_seq_length - n_prompt)
        progress = _Progress()
        stops = StoppingCriteriaList([_cancel_criterion(cancel)]) if cancel is not None else None
        if self.seed is not None and self.temperature > 0:
            torch.manual_seed(self.seed)  # each chunk reproducible on its own, whatever the order
        ids = ids.to(self.model.device)
        with torch.inference_mode():
            out = self.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                generation_config=self._generation_config(budget),
                streamer=progress,
                stopping_criteria=stops,
            )
        new = out[0, n_prompt:].tolist()
        if cancel is not None and cancel.is_set():
            result.finish_reason = "cancelled"
        elif new and not self.ignore_eos and new[-1] in self.eos_token_ids:
            result.finish_reason = "stop"
        else:
            result.finish_reason = "length"
        result.completion_tokens = len(new)  # includes the EOS token when there is one
        result.text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        result.extra["token_ids"] = new
        if progress.first_token_at is not None:
            result.time_to_first_token = progress.first_token_at - submitted_at

    def generate(self, chunk: ChunkLike) -> DocResult:
        """Document one chunk (synchronous)."""
        self._check_open()
        return self._generate_one(as_chunk(chunk), time.perf_counter())

    def generate_batch(self, chunks: Sequence[ChunkLike]) -> list[DocResult]:
        """Document chunks one after another; results in input order."""
        self._check_open()
        items = [as_chunk(c) for c in chunks]  # a non-chunk is a programming error: fail before any work
        submitted = time.perf_counter()
        return [self._generate_one(c, submitted) for c in items]

    async def generate_async(self, chunk: ChunkLike) -> DocResult:
        """Document one chunk in a worker thread (concurrent calls still run one at a time)."""
        self._check_open()
        return await self._in_thread(as_chunk(chunk), time.perf_counter())

    async def generate_batch_async(self, chunks: Sequence[ChunkLike]) -> list[DocResult]:
        """Document chunks sequentially without blocking the event loop; results in input order."""
        self._check_open()
        items = [as_chunk(c) for c in chunks]
        submitted = time.perf_counter()
        return [await self._in_thread(c, submitted) for c in items]

    async def _in_thread(self, chunk: CodeChunk, submitted: float) -> DocResult:
        cancel = threading.Event()
        try:
            return await asyncio.to_thread(self._generate_one, chunk, submitted, cancel)
        except asyncio.CancelledError:
            cancel.set()  # the worker's generate stops at its next step
            raise

    # ---- reporting and lifetime --------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        import transformers

        return {
            "generator": "LocalDocGenerator",
            "engine": "transformers generate, one chunk at a time",
            "model": self.model_id,
            "model_path": str(self.model_path),
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "quantization": self.quantization,
            "quantization_requested": self.quantization_requested,
            "max_new_tokens": self.max_new_tokens,
            "max_seq_length": self.max_seq_length,
            "temperature": self.temperature,
            "ignore_eos": self.ignore_eos,
            "prompt_version": PROMPT_VERSION,
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
            "closed": self._closed,
            "notes": list(self.notes),
        }

    def _release(self) -> None:
        with self._lock:  # a generation in progress finishes first; later ones see _closed
            self.model = None
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()


def create_local_generator(*args: Any, **kwargs: Any) -> LocalDocGenerator:
    """The guide's original generator: `LocalDocGenerator(...)`, same parameters (top_p, top_k,
    seed, ignore_eos and local_files_only among them)."""
    unknown = sorted(set(kwargs) - set(inspect.signature(LocalDocGenerator).parameters))
    if unknown:  # often an optimized generator's argument passed to the baseline: say which is which
        raise ValueError(f"unknown arguments {unknown} for create_local_generator (the parameters of "
                         "LocalDocGenerator); batching, speculation and the other optimizations are "
                         "create_optimized_local_generator's (app.llm.local_client_optimized)")
    return LocalDocGenerator(*args, **kwargs)


# help() and IDEs show the constructor's parameters (one signature, written once, in __init__).
create_local_generator.__signature__ = inspect.signature(LocalDocGenerator).replace(
    return_annotation=LocalDocGenerator)
