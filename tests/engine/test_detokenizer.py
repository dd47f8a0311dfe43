"""Incremental detokenization == full decode after every token; the engine's incremental stop check
== the full-decode reference (stop_strings.find_stop, vLLM's rules), on byte-level BPE,
SentencePiece-style and WordPiece (cleanup) tokenizers, with multi-byte characters and random ids."""
import random

import pytest

from app.engine.detokenizer import IncrementalDetokenizer
from app.engine.request_texts import RequestTexts
from app.engine.sampling_params import SamplingParams
from app.engine.sequence import Sequence
from app.engine.stop_strings import find_stop, find_stop_in_new_text

TEXTS = [
    "def f(x):\n    return x + 1  # plus one\n",
    "Größe der Maße: 3 µm — naïve café ½ ¾",
    "日本語のテキストと中文字符 및 한국어",
    "emoji 🙂👍🏽 family 👨‍👩‍👧 flags 🇫🇷🇯🇵 end",
    "mixed\tTabs  and   spaces\n\n\nnew paragraphs. Ünïcödé!",
    "    indented\n        more\n",
]
CORPUS = TEXTS * 20 + [open(__file__, encoding="utf-8").read()]


def _byte_level():
    from benchmarks.random_checkpoint import build_tokenizer

    return build_tokenizer(None, vocab_size=512)


def _sentencepiece_style():
    """Llama's decoder chain: Metaspace pieces, byte fallback, Fuse, Strip one leading space."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    bytes_ = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"] + bytes_,
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def _wordpiece_cleanup():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(cleanup=True)
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=400, special_tokens=["[UNK]", "[SEP]"],
                                                              show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]")


@pytest.fixture(scope="module", params=["byte_level", "sentencepiece", "wordpiece"])
def tok(request):
    return {"byte_level": _byte_level, "sentencepiece": _sentencepiece_style, "wordpiece": _wordpiece_cleanup}[
        request.param]()


def _sequences(tok, rng):
    """Encoded texts (multi-byte characters split across tokens), random slices of them, random ids
    (invalid UTF-8, special tokens in the middle)."""
    seqs = [tok.encode(t, add_special_tokens=False) for t in TEXTS]
    joined = tok.encode("".join(TEXTS), add_special_tokens=False)
    seqs += [joined[a:a + rng.randint(1, 60)] for a in rng.sample(range(len(joined)), 15)]
    seqs += [[rng.randrange(len(tok)) for _ in range(rng.randint(1, 80))] for _ in range(15)]
    return seqs


@pytest.mark.parametrize("skip", [True, False])
def test_text_equals_full_decode_after_every_token(tok, skip):
    rng = random.Random(0)
    decode = lambda ids: tok.decode(ids, skip_special_tokens=skip)  # noqa: E731
    fallbacks = steps = 0
    for ids in _sequences(tok, rng):
        d = IncrementalDetokenizer(decode)
        for k, t in enumerate(ids, 1):
            d.step(t)
            assert d.full_text == decode(ids[:k]), (ids[:k], d.text, d.pending)
        fallbacks, steps = fallbacks + d.full_decodes, steps + len(ids)
    assert fallbacks < steps / 10  # the window rule holds almost always: few full decodes


class _EngineTok:
    """The engine tokenizer's interface (decode(ids, skip_special_tokens), eos_token_ids) over a
    transformers tokenizer."""

    def __init__(self, tok):
        self.tok, self.eos_token_ids = tok, ()

    def decode(self, ids, skip):
        return self.tok.decode(ids, skip_special_tokens=skip)


def _engine_stop_check(tok, prompt, out_ids, stops, rng, min_tokens=0, include=False):
    """Feed `out_ids` to the engine's stop check (RequestTexts) the way steps do (1 to 4 tokens at a
    time, as speculation may); returns (tokens kept, text) or None when no stop string ended it."""
    texts = RequestTexts(_EngineTok(tok))
    seq = Sequence(list(prompt), SamplingParams(max_tokens=1000, stop=stops, min_tokens=min_tokens,
                                                include_stop_str_in_output=include))
    i = 0
    while i < len(out_ids):
        n = rng.randint(1, 4)
        seq.token_ids.extend(out_ids[i:i + n])
        i += n
        if texts.apply_stop_strings(seq, len(out_ids[i - n:i])):
            return seq.num_output_tokens, texts.output(seq).text
    return None


def test_stop_cut_matches_the_full_decode_reference(tok):
    rng = random.Random(1)
    decode = lambda ids: tok.decode(ids, skip_special_tokens=True)  # noqa: E731
    checked = 0
    for ids in _sequences(tok, rng):
        text = decode(ids)
        if len(text) < 4:
            continue
        a = rng.randrange(len(text) - 2)
        stops = [text[a:a + rng.randint(1, 3)], "never-appears-here", text[a + 1:a + 2]]
        min_tokens, include = rng.choice([0, 0, 2, 5]), rng.random() < 0.5
        got = _engine_stop_check(tok, [5, 6], ids, stops, random.Random(checked), min_tokens, include)
        # the reference, step by step with the same token groups
        r2, ref, fed = random.Random(checked), None, 0
        while fed < len(ids):
            n = r2.randint(1, 4)
            fed = min(fed + n, len(ids))
            cut = find_stop(decode, ids[:fed], min(n, fed), stops, min_tokens, include)
            if cut is not None:
                keep, idx = cut
                ref = keep, decode(ids[:keep])[:idx]
                break
        assert got == ref, (stops, ids, min_tokens, include)
        checked += 1
    assert checked >= 20


def test_find_stop_in_new_text_searches_only_past_the_boundary():
    assert find_stop_in_new_text("abc", "", 2, ["bc"]) == 1
    assert find_stop_in_new_text("abc", "", 1, ["ab"]) == 0
    assert find_stop_in_new_text("abc", "", 2, ["ab"]) is None  # "ab" ended before: an earlier step saw it
    assert find_stop_in_new_text("abc", "", 2, ["c", "bc"]) == 2  # list order wins, not position
    assert find_stop_in_new_text("abc", "", 2, ["bc"], include=True) == 3
    assert find_stop_in_new_text("ab", "\ufffd", 2, ["\ufffd"]) is None  # half a character never matches
    assert find_stop_in_new_text("ab", "c\ufffd", 2, ["bc"]) == 1  # the complete part of pending counts


def test_a_decoder_that_rewrites_earlier_text_falls_back_to_full_decodes():
    """"ab" decodes as "X": the token after "a" changes text already emitted; still exact."""
    decode = lambda ids: "".join(chr(97 + i) for i in ids).replace("ab", "X")  # noqa: E731
    rng = random.Random(2)
    fallbacks = 0
    for _ in range(50):
        ids = [rng.randrange(4) for _ in range(rng.randint(1, 30))]
        d = IncrementalDetokenizer(decode)
        for k, t in enumerate(ids, 1):
            changed = d.step(t)
            assert d.full_text == decode(ids[:k])
            assert d.full_text.startswith(decode(ids[:k - 1])[:changed])  # nothing before `changed` moved
        fallbacks += d.full_decodes
    assert fallbacks > 0
