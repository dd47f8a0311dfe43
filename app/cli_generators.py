"""The generators `docgen run` can use, built from its flags: the in-process optimized engine,
OpenAI-compatible HTTP servers (--backend openai) and Ray replicas (--ray). Each factory is called
only when a chunk needs generating; the heavy imports happen inside it."""
from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = "Qwen/Qwen2.5-Coder-7B-Instruct"  # the example in messages; the default follows the hardware


def openai_factory(args, log):
    import os

    if not args.base_url:
        raise ValueError("--backend openai needs --base-url URL (e.g. http://127.0.0.1:8000/v1)")
    key = None
    if args.api_key_env:
        key = os.environ.get(args.api_key_env)
        if not key:
            raise ValueError(f"--api-key-env {args.api_key_env}: that environment variable is not set")
    from app.llm.backends.openai_client import OpenAIBackendConfig, OpenAIDocGenerator

    cfg = OpenAIBackendConfig(args.base_url, model=args.model, api_key=key, max_concurrency=args.max_concurrency,
                              timeout=args.request_timeout, max_retries=args.max_retries,
                              max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                              max_seq_length=args.max_seq_length)

    def make():
        log(f"connecting to {', '.join(cfg.base_urls)}")
        return OpenAIDocGenerator(cfg)

    return make


def ray_factory(args, log):
    model, kwargs = generator_kwargs(args)
    if Path(model).is_dir():
        model = str(Path(model).resolve())  # the replicas' processes may start elsewhere

    def make():
        from app.llm.backends.ray_replicas import RayConfig, RayDocGenerator

        log(f"starting {args.replicas} Ray replicas of {model} ({'local cluster' if args.ray == 'local' else args.ray})")
        return RayDocGenerator(RayConfig(model, replicas=args.replicas, generator_kwargs=kwargs,
                                         address=None if args.ray == "local" else args.ray))

    return make


def generator_kwargs(args) -> tuple[str, dict]:
    """(the model's id, which stored results are keyed by; the generator's keyword arguments)."""
    from app.engine.names import is_local_model, model_key  # torch-free

    model = args.model or DEFAULT_MODEL
    if is_local_model(model) and not Path(model).expanduser().is_dir():
        raise ValueError(f"--model {model} is not a folder; pass a local model folder or a hub id such as {DEFAULT_MODEL}")
    kwargs = {"max_seq_length": args.window, "max_new_tokens": args.max_new_tokens, "temperature": args.temperature}
    for flag, name in [("quantization", "quantization"), ("max_batch_size", "max_batch_size"),
                       ("speculative", "enable_speculative_decoding"), ("draft_model", "draft_model_id"),
                       ("static_cache", "enable_static_cache"), ("kv_cache_quantization", "enable_kv_cache_quantization"),
                       ("compile", "enable_compilation"), ("flash_attention", "use_flash_attention"),
                       ("quant_lm_head", "quant_lm_head"), ("cpu_threads", "cpu_threads")]:
        if getattr(args, flag) is not None:
            kwargs[name] = getattr(args, flag)
    if args.flash_attention is None and getattr(args, "hardware", None) is not None and args.hardware.device == "cpu":
        kwargs["use_flash_attention"] = False  # it needs CUDA: asking for it on a CPU only earns a warning per run
    return model_key(model), kwargs


def optimized_factory(args, log):
    model, kwargs = generator_kwargs(args)
    looks_local = Path(model).is_dir()

    def make():
        log(f"loading {model}: importing torch and reading weights (compiling, if enabled, happens on the first batch)")
        try:
            from app.llm.local_client_optimized import create_optimized_local_generator  # heavy: torch
        except ImportError as exc:
            raise ValueError(f"the optimized generator could not be imported ({exc}); check the installation "
                             "(bash scripts/setup.sh) or the torch/transformers versions") from exc
        from app.engine.model_check import ModelLoadError

        try:
            return create_optimized_local_generator(model, **kwargs)
        except ModelLoadError:
            raise  # already says what is wrong with the checkpoint and what to do
        except Exception as exc:  # any other load failure: one clear message (the traceback with --debug)
            if looks_local or not isinstance(exc, (OSError, ValueError, RuntimeError)):
                raise ModelLoadError(f"could not load model {model}: {type(exc).__name__}: {exc}") from exc
            raise ValueError(
                f"could not load model {model!r}: {exc}\n"
                f"This machine may be offline with the model not in the Hugging Face cache. On a machine with "
                f"network run `huggingface-cli download {model}` (then copy the cache, or set HF_HOME to it), "
                f"or pass a local folder: docgen run PATH --model /path/to/model") from exc

    from app.llm.types import GeneratorFactory

    # The model id is declared up front: a rerun finds its stored results without loading the model.
    return GeneratorFactory(model, make)
