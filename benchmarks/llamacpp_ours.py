"""Our engine in a child process, driven like llama-server, for benchmarks/cpu_vs_llamacpp.py.

A separate process so that its peak RSS (/proc/<pid>/status VmHWM) is the engine's alone, measured
the same way as llama-server's, and so that the parent's allocations never count. The child reads
one JSON command per line on stdin and answers one JSON line on stdout ("RESULT {...}").
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class OursConfig:
    model: str
    quantization: str | None  # None | "8bit" | "4bit"
    dtype: str  # "float32" | "bfloat16" (the engine's compute dtype)
    max_num_seqs: int
    max_model_len: int
    threads: int


class OursEngine:
    """The parent's handle: same methods as LlamaServer (workload, batch1, memory, close)."""

    def __init__(self, cfg: OursConfig, log: Path):
        self._log = open(log, "w")
        t = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), json.dumps(asdict(cfg))],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     text=True, cwd=str(ROOT))
        self.load_report = self._read(log)
        self.load_seconds = time.perf_counter() - t

    def _read(self, log: Path) -> dict:
        for line in self.proc.stdout:
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT "):])
        self._log.flush()
        raise RuntimeError(f"our engine's process ended ({self.proc.wait()}):\n{log.read_text()[-4000:]}")

    def _call(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read(Path(self._log.name))

    def workload(self, prompts: list[list[int]], n_predict: int) -> dict:
        return self._call(op="workload", prompts=prompts, n_predict=n_predict)

    def batch1(self, prompt: list[int], n_predict: int) -> dict:
        return self._call(op="batch1", prompt=prompt, n_predict=n_predict)

    def memory(self) -> dict:
        from benchmarks.llamacpp_server import proc_memory

        return proc_memory(self.proc.pid)

    def close(self) -> None:
        from benchmarks.llamacpp_server import stop_process

        stop_process(self.proc, self.proc.stdin.close, 60)  # stdin closed: the child's loop ends
        self._log.close()


def _serve(cfg: OursConfig) -> None:
    """The child: load the engine, warm it up, then answer commands until stdin closes."""
    import torch

    torch.set_num_threads(cfg.threads)
    sys.path.insert(0, str(ROOT))
    from app.engine import LLM, SamplingParams

    llm = LLM(cfg.model, quantization=cfg.quantization, dtype=cfg.dtype, max_num_seqs=cfg.max_num_seqs,
              max_model_len=cfg.max_model_len, quant_cache_dir="", device="cpu")
    llm.generate([[5, 6, 7, 8]], SamplingParams(max_tokens=4, ignore_eos=True))  # warm-up
    rep = llm.load_report
    out = {"load": rep.get("load"), "kv_tokens": rep.get("kv_tokens"), "kv_cache_dtype": rep.get("kv_cache_dtype"),
           "dtype": str(llm.dtype), "threads": torch.get_num_threads()}
    print("RESULT " + json.dumps(out, default=str), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        llm.block_manager.reset_prefix_cache()  # each measurement starts cold, as llama-server's slots do
        if cmd["op"] == "workload":
            sp = SamplingParams(max_tokens=cmd["n_predict"], ignore_eos=True, temperature=0.0)
            t = time.perf_counter()
            outs = llm.generate(cmd["prompts"], sp)
            res = {"seconds": time.perf_counter() - t, "generated": sum(len(o.token_ids) for o in outs)}
        elif cmd["op"] == "batch1":
            sp = SamplingParams(max_tokens=cmd["n_predict"], ignore_eos=True, temperature=0.0)
            o = llm.generate([cmd["prompt"]], sp)[0]
            m = o.metrics
            res = {"prompt_tokens": len(cmd["prompt"]), "prompt_s": m["time_to_first_token"],
                   "decode_tokens": len(o.token_ids) - 1, "decode_s": m["total_time"] - m["time_to_first_token"],
                   "token_ids": list(o.token_ids)}
        else:
            raise SystemExit(f"unknown command {cmd['op']!r}")
        print("RESULT " + json.dumps(res), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _serve(OursConfig(**json.loads(sys.argv[1])))
