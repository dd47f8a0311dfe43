"""llama.cpp as a benchmark-only tool: find it, convert and quantize checkpoints, run llama-server.

llama.cpp is never a dependency of the project. The benchmark finds it through environment
variables (how to build it: BENCHMARKS.md, "CPU: side by side with llama.cpp"):
- LLAMA_CPP_DIR: llama.cpp's source folder (holds convert_hf_to_gguf.py and gguf-py/);
- LLAMA_CPP_BIN (optional): the folder with llama-server and llama-quantize; default
  $LLAMA_CPP_DIR/build/bin;
- LLAMA_CPP_PYTHON (optional): the Python that runs the converter (it needs torch, transformers,
  numpy, safetensors and sentencepiece); default the running interpreter.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

HERE = Path(__file__).resolve().parent


class LlamaCppMissing(RuntimeError):
    """llama.cpp (sources or binaries) is not where the environment says."""


@dataclass(frozen=True)
class LlamaCpp:
    src: Path  # source folder: convert_hf_to_gguf.py, gguf-py/
    server: Path  # llama-server binary
    quantize: Path  # llama-quantize binary
    python: str  # runs convert_hf_to_gguf.py


_HOW = "build it as BENCHMARKS.md says (section 'CPU: side by side with llama.cpp')"


def find_llama_cpp(env: Mapping[str, str] | None = None) -> LlamaCpp:
    env = os.environ if env is None else env
    src = env.get("LLAMA_CPP_DIR")
    if not src:
        raise LlamaCppMissing(f"LLAMA_CPP_DIR is not set: point it at llama.cpp's source folder; {_HOW}")
    src_path = Path(src)
    if not (src_path / "convert_hf_to_gguf.py").is_file() or not (src_path / "gguf-py").is_dir():
        raise LlamaCppMissing(f"LLAMA_CPP_DIR={src} has no convert_hf_to_gguf.py and gguf-py/: "
                              f"it must be llama.cpp's source folder; {_HOW}")
    bin_dir = Path(env.get("LLAMA_CPP_BIN") or src_path / "build" / "bin")
    found = {}
    for name in ("llama-server", "llama-quantize"):
        path = bin_dir / name
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise LlamaCppMissing(f"{path} not found or not executable: set LLAMA_CPP_BIN to the folder "
                                  f"holding llama-server and llama-quantize; {_HOW}")
        found[name] = path
    python = env.get("LLAMA_CPP_PYTHON") or sys.executable
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        raise LlamaCppMissing(f"LLAMA_CPP_PYTHON={python} is not an executable Python; {_HOW}")
    return LlamaCpp(src_path, found["llama-server"], found["llama-quantize"], python)


def llama_cpp_version(llama: LlamaCpp) -> str:
    out = subprocess.run([str(llama.server), "--version"], capture_output=True, text=True, check=False)
    return (out.stdout + out.stderr).strip().splitlines()[0] if (out.stdout + out.stderr).strip() else "?"


def convert_to_gguf(llama: LlamaCpp, checkpoint: Path, out: Path, outtype: str) -> Path:
    """checkpoint -> GGUF with llama.cpp's converter (outtype f32 | f16 | bf16 | q8_0)."""
    if out.exists():  # written whole by an earlier run (renamed into place only on success)
        return out
    tmp = out.with_name(out.name + ".part")
    cmd = [llama.python, str(HERE / "llamacpp_convert.py"), str(llama.src), "--", str(checkpoint),
           "--outtype", outtype, "--outfile", str(tmp)]
    _run(cmd, f"convert_hf_to_gguf.py --outtype {outtype}")
    return tmp.replace(out)


def quantize_gguf(llama: LlamaCpp, src: Path, out: Path, qtype: str, threads: int) -> Path:
    """A GGUF requantized by llama-quantize (its defaults: e.g. q4_0 keeps the output head q6_K)."""
    if out.exists():
        return out
    tmp = out.with_name(out.name + ".part")
    _run([str(llama.quantize), str(src), str(tmp), qtype, str(threads)], f"llama-quantize {qtype}")
    return tmp.replace(out)


def _run(cmd: list[str], what: str) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {res.returncode}):\n{(res.stdout + res.stderr)[-4000:]}")


def proc_memory(pid: int) -> dict:
    """Peak (VmHWM) and current (VmRSS) resident memory of a live process, in bytes."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                fields[key] = int(val.split()[0]) * 1024  # "kB"
    return {"peak_rss": fields["VmHWM"], "rss": fields["VmRSS"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """llama-server on loopback: continuous batching, `slots` parallel slots of `slot_ctx` tokens
    each, per-slot prompt cache (cache_prompt) on; the host-memory prompt cache (--cache-ram) off so
    its resident memory is the model and the KV it needs, as ours is."""

    def __init__(self, llama: LlamaCpp, gguf: Path, slots: int, slot_ctx: int, threads: int, log: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [str(llama.server), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(self.port),
                    "-t", str(threads), "-tb", str(threads), "-np", str(slots), "-c", str(slots * slot_ctx),
                    "-cb", "--cache-ram", "0", "--no-webui"]
        self._log = open(log, "w")
        t = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready(log)
        self.load_seconds = time.perf_counter() - t

    def _wait_ready(self, log: Path, timeout: float = 600.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited ({self.proc.returncode}):\n{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.5)
        self.close()
        raise RuntimeError(f"llama-server did not become ready in {timeout:.0f} s; log: {log}")

    def completion(self, prompt: list[int], n_predict: int) -> dict:
        """One greedy request of exactly n_predict tokens (EOS ignored), prompt given as token ids."""
        body = {"prompt": prompt, "n_predict": n_predict, "temperature": 0.0, "top_k": 1,
                "ignore_eos": True, "cache_prompt": True, "stream": False, "return_tokens": True}
        req = urllib.request.Request(self.url + "/completion", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=3600) as r:
            res = json.loads(r.read())
        got = res.get("tokens_predicted", res.get("timings", {}).get("predicted_n"))
        if got != n_predict:
            raise RuntimeError(f"llama-server generated {got} tokens, asked for {n_predict}: {str(res)[:500]}")
        return res

    def workload(self, prompts: list[list[int]], n_predict: int) -> dict:
        """All prompts at once (one client thread each), wall time until the last one is done."""
        t = time.perf_counter()
        with ThreadPoolExecutor(len(prompts)) as pool:
            results = list(pool.map(lambda p: self.completion(p, n_predict), prompts))
        seconds = time.perf_counter() - t
        return {"seconds": seconds, "generated": sum(r["tokens_predicted"] for r in results)}

    def batch1(self, prompt: list[int], n_predict: int) -> dict:
        """Prompt processing and decode times as llama-server reports them: decode time covers
        n_predict - 1 steps (the first token comes with the prompt), as ours does."""
        res = self.completion(prompt, n_predict)
        tm = res["timings"]
        return {"prompt_tokens": tm["prompt_n"], "prompt_s": tm["prompt_ms"] / 1e3,
                "decode_tokens": tm["predicted_n"] - 1, "decode_s": tm["predicted_ms"] / 1e3,
                "token_ids": res.get("tokens")}

    def memory(self) -> dict:
        return proc_memory(self.proc.pid)

    def close(self) -> None:
        stop_process(self.proc, self.proc.terminate, 30)
        self._log.close()


def stop_process(proc: subprocess.Popen, ask, grace: float) -> None:
    """Stop a benchmark child: `ask()` it to end (terminate, or close its stdin), wait up to `grace`
    seconds, then kill it."""
    if proc.poll() is not None:
        return
    ask()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
